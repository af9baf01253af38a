package kafka

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ListOffsets v1-8. v1 single offsets; v2 isolation level; v4 leader
// epochs (KIP-320); v6 flexible; v7 max timestamp (-3, KIP-734); v8 earliest
// local offset (-4, KIP-405), which is the earliest offset here.
func init() { register(2, 1, 8, handleListOffsets) }

func handleListOffsets(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.ListOffsetsRequest)
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	resp.Version = req.Version
	for _, t := range req.Topics {
		rt := kmsg.ListOffsetsResponseTopic{Topic: t.Topic}
		denied := topicErr(s, cc, kmsg.ACLOperationDescribe, t.Topic)
		for _, p := range t.Partitions {
			epoch := int32(-1)
			if req.Version >= 4 {
				epoch = p.CurrentLeaderEpoch
			}
			ts := p.Timestamp
			if ts == -4 {
				ts = -2
			}
			r := ListOffsetResult{Err: denied}
			if denied == 0 {
				r = s.backend.ListOffset(t.Topic, p.Partition, ts, epoch, req.IsolationLevel == 1)
			}
			rp := kmsg.NewListOffsetsResponseTopicPartition()
			rp.Partition, rp.ErrorCode, rp.Offset, rp.Timestamp, rp.LeaderEpoch = p.Partition, r.Err, r.Offset, r.Timestamp, r.LeaderEpoch
			if r.Err != 0 {
				rp.Offset, rp.Timestamp, rp.LeaderEpoch = -1, -1, -1
			}
			s.metrics.countErr(2, r.Err)
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return func() kmsg.Response { return resp }
}
