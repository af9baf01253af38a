package kafka

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DescribeLogDirs v0-4. v1 is v0 again (throttling); v2 flexible; v3
// top-level error code; v4 total and usable bytes of each directory. A node
// has one data directory; null topics asks for every partition in it.
func init() { register(35, 0, 4, handleDescribeLogDirs) }

func handleDescribeLogDirs(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DescribeLogDirsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeLogDirsResponse)
	resp.Version = req.Version
	if resp.ErrorCode = clusterErr(s, cc, kmsg.ACLOperationDescribe); resp.ErrorCode != 0 {
		// Before v3 there is no error code: Kafka answers with no dirs.
		return func() kmsg.Response { return resp }
	}
	var topics map[string][]int32
	if req.Topics != nil {
		topics = map[string][]int32{}
		for _, t := range req.Topics {
			topics[t.Topic] = append(topics[t.Topic], t.Partitions...)
		}
	}
	ld := s.backend.LogDirs(topics)
	dir := kmsg.DescribeLogDirsResponseDir{Dir: ld.Dir, TotalBytes: ld.TotalBytes, UsableBytes: ld.UsableBytes}
	for _, p := range ld.Partitions {
		if n := len(dir.Topics); n == 0 || dir.Topics[n-1].Topic != p.Topic {
			dir.Topics = append(dir.Topics, kmsg.DescribeLogDirsResponseDirTopic{Topic: p.Topic})
		}
		t := &dir.Topics[len(dir.Topics)-1]
		t.Partitions = append(t.Partitions, kmsg.DescribeLogDirsResponseDirTopicPartition{Partition: p.Partition, Size: p.Size, OffsetLag: p.Lag})
	}
	resp.Dirs = append(resp.Dirs, dir)
	return func() kmsg.Response { return resp }
}
