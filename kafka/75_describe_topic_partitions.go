package kafka

import (
	"math"
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DescribeTopicPartitions v0 (KIP-966), flexible. Metadata's topic half,
// paged: topics in name order (every topic when none are named), at most
// ResponsePartitionLimit partitions an answer (and never more than
// maxDescribePartitions), starting at the request's cursor; NextCursor
// names the first partition left out. Chronik has no eligible leader
// replicas (KIP-966's ELR): a leader is always elected from the in-sync
// replicas, so those fields stay null. DESCRIBE on each topic, as
// Metadata.
func init() { register(75, 0, 0, handleDescribeTopicPartitions) }

// maxDescribePartitions is Kafka's max.request.partition.size.limit.
const maxDescribePartitions = 2000

func handleDescribeTopicPartitions(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DescribeTopicPartitionsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeTopicPartitionsResponse)
	resp.Version = req.Version
	all := len(req.Topics) == 0
	var names []string
	if !all {
		seen := map[string]bool{}
		for _, t := range req.Topics {
			if !seen[t.Topic] {
				seen[t.Topic] = true
				names = append(names, t.Topic)
			}
		}
	}
	var infos []TopicInfo
	if all {
		infos = s.backend.Topics(nil, true)
	} else {
		infos = s.backend.Topics(names, true)
	}
	infos = describable(s, cc, infos, all, nil)
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })

	limit := int(req.ResponsePartitionLimit)
	if limit <= 0 || limit > maxDescribePartitions {
		limit = maxDescribePartitions
	}
	first := 0
	var fromPartition int32
	if c := req.Cursor; c != nil {
		first = sort.Search(len(infos), func(i int) bool { return infos[i].Name >= c.Topic })
		if !all && (first == len(infos) || infos[first].Name != c.Topic) {
			// Kafka's rule: the cursor must name a topic asked for.
			return func() kmsg.Response {
				s.metrics.countErr(75, kerr.InvalidRequest.Code)
				return invalidCursor(req)
			}
		}
		fromPartition = max(c.Partition, 0)
	}
	for i := first; i < len(infos); i++ {
		ti := infos[i]
		rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
		name := ti.Name
		rt.Topic, rt.TopicID, rt.IsInternal, rt.ErrorCode = &name, ti.ID, ti.Internal, ti.Err
		rt.AuthorizedOperations = math.MinInt32 // not computed (as when a client does not ask)
		s.metrics.countErr(75, ti.Err)
		start := 0
		if i == first && req.Cursor != nil && ti.Name == req.Cursor.Topic {
			start = int(min(fromPartition, int32(len(ti.Partitions))))
		}
		for j := start; j < len(ti.Partitions); j++ {
			if limit == 0 {
				resp.NextCursor = &kmsg.DescribeTopicPartitionsResponseNextCursor{Topic: ti.Name, Partition: ti.Partitions[j].Partition}
				break
			}
			limit--
			p := ti.Partitions[j]
			rp := kmsg.NewDescribeTopicPartitionsResponseTopicPartition()
			rp.ErrorCode, rp.Partition, rp.LeaderID, rp.LeaderEpoch = p.Err, p.Partition, p.Leader, p.LeaderEpoch
			rp.Replicas, rp.ISR, rp.OfflineReplicas = p.Replicas, p.ISR, p.Offline
			if rp.OfflineReplicas == nil {
				rp.OfflineReplicas = []int32{}
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		if resp.NextCursor != nil {
			if len(rt.Partitions) > 0 {
				resp.Topics = append(resp.Topics, rt)
			}
			break
		}
		resp.Topics = append(resp.Topics, rt)
		if limit == 0 && i+1 < len(infos) && len(infos[i+1].Partitions) > 0 {
			resp.NextCursor = &kmsg.DescribeTopicPartitionsResponseNextCursor{Topic: infos[i+1].Name, Partition: 0}
			break
		}
	}
	return func() kmsg.Response { return resp }
}

// invalidCursor answers a request whose cursor names a topic it did not
// ask for: every topic named gets INVALID_REQUEST, as Kafka's handler does.
func invalidCursor(req *kmsg.DescribeTopicPartitionsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeTopicPartitionsResponse)
	resp.Version = req.Version
	for _, t := range req.Topics {
		rt := kmsg.NewDescribeTopicPartitionsResponseTopic()
		name := t.Topic
		rt.Topic, rt.ErrorCode, rt.AuthorizedOperations = &name, kerr.InvalidRequest.Code, math.MinInt32
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}
