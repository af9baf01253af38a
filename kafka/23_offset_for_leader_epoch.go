package kafka

import "github.com/twmb/franz-go/pkg/kmsg"

// OffsetForLeaderEpoch v2-4. v2 CurrentLeaderEpoch fencing (KIP-320); v3
// replica id; v4 flexible. Answers come from the partition's epoch history,
// where an epoch is a Raft term.
func init() { register(23, 2, 4, handleOffsetForLeaderEpoch) }

func handleOffsetForLeaderEpoch(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.OffsetForLeaderEpochRequest)
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	resp.Version = req.Version
	for _, t := range req.Topics {
		rt := kmsg.OffsetForLeaderEpochResponseTopic{Topic: t.Topic}
		denied := topicErr(s, cc, kmsg.ACLOperationDescribe, t.Topic)
		for _, p := range t.Partitions {
			r := EpochEndResult{Err: denied, LeaderEpoch: -1, EndOffset: -1}
			if denied == 0 {
				r = s.backend.EpochEndOffset(t.Topic, p.Partition, p.CurrentLeaderEpoch, p.LeaderEpoch)
			}
			rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			rp.Partition, rp.ErrorCode, rp.LeaderEpoch, rp.EndOffset = p.Partition, r.Err, r.LeaderEpoch, r.EndOffset
			s.metrics.countErr(23, r.Err)
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return func() kmsg.Response { return resp }
}
