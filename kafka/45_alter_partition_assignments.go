package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// AlterPartitionAssignments v0-1 (KIP-455; v1 AllowReplicationFactorChange,
// KIP-860). Needs ALTER on the cluster. Any node answers: the change is
// proposed to the metadata group, and the leader of each partition's group
// carries it out. A partition named twice in one request is refused.
func init() { register(45, 0, 1, handleAlterPartitionAssignments) }

func handleAlterPartitionAssignments(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.AlterPartitionAssignmentsRequest)
	resp := req.ResponseKind().(*kmsg.AlterPartitionAssignmentsResponse)
	resp.Version = req.Version
	resp.AllowReplicationFactorChange = req.AllowReplicationFactorChange
	allowRF := req.Version < 1 || req.AllowReplicationFactorChange
	denied := clusterErr(s, cc, kmsg.ACLOperationAlter)
	return func() kmsg.Response {
		if denied != 0 {
			resp.ErrorCode = denied
			s.metrics.countErr(45, denied)
			return resp
		}
		timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(cc.ctx, timeout)
		defer cancel()
		seen := map[string]map[int32]bool{}
		for _, t := range req.Topics {
			rt := kmsg.AlterPartitionAssignmentsResponseTopic{Topic: t.Topic}
			var parts []ReassignPartition
			var at []int // index in rt.Partitions of each part
			for _, p := range t.Partitions {
				rp := kmsg.AlterPartitionAssignmentsResponseTopicPartition{Partition: p.Partition}
				if seen[t.Topic] == nil {
					seen[t.Topic] = map[int32]bool{}
				}
				if seen[t.Topic][p.Partition] {
					msg := "partition named twice in one request"
					rp.ErrorCode, rp.ErrorMessage = kerr.InvalidRequest.Code, &msg
				} else {
					parts = append(parts, ReassignPartition{Partition: p.Partition, Replicas: p.Replicas})
					at = append(at, len(rt.Partitions))
				}
				seen[t.Topic][p.Partition] = true
				rt.Partitions = append(rt.Partitions, rp)
			}
			if len(parts) > 0 {
				for i, r := range s.backend.AlterReassignments(ctx, t.Topic, parts, allowRF) {
					rp := &rt.Partitions[at[i]]
					rp.ErrorCode = r.Err
					if r.Message != "" {
						msg := r.Message
						rp.ErrorMessage = &msg
					}
				}
			}
			for _, rp := range rt.Partitions {
				s.metrics.countErr(45, rp.ErrorCode)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
}
