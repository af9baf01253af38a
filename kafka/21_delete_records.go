package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// DeleteRecords v0-2. v1 is v0 again (throttling); v2 flexible. Sent to each
// partition's leader, which moves the log start offset through the
// partition's Raft log and answers with the new low watermark.
func init() { register(21, 0, 2, handleDeleteRecords) }

func handleDeleteRecords(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DeleteRecordsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	resp.Version = req.Version
	// Decided here, on the reader goroutine, which owns the principal.
	denied := make([]int16, len(req.Topics))
	for i, t := range req.Topics {
		denied[i] = topicErr(s, cc, kmsg.ACLOperationDelete, t.Topic)
	}
	return func() kmsg.Response {
		timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(cc.ctx, timeout)
		defer cancel()
		for i, t := range req.Topics {
			rt := kmsg.DeleteRecordsResponseTopic{Topic: t.Topic}
			for _, p := range t.Partitions {
				low, code := int64(-1), denied[i]
				if code == 0 {
					low, code = s.backend.DeleteRecords(ctx, t.Topic, p.Partition, p.Offset)
				}
				s.metrics.countErr(21, code)
				rt.Partitions = append(rt.Partitions, kmsg.DeleteRecordsResponseTopicPartition{Partition: p.Partition, LowWatermark: low, ErrorCode: code})
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
}
