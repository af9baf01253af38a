package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// CreatePartitions v0-3 (v2 flexible). Explicit assignments are not
// supported; the broker spreads new replicas itself.
func init() { register(37, 0, 3, handleCreatePartitions) }

func handleCreatePartitions(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.CreatePartitionsRequest)
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	resp.Version = req.Version
	return func() kmsg.Response {
		timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(cc.ctx, timeout)
		defer cancel()
		for _, t := range req.Topics {
			code, msg := s.backend.CreatePartitions(ctx, t.Topic, t.Count, req.ValidateOnly)
			rt := kmsg.CreatePartitionsResponseTopic{Topic: t.Topic, ErrorCode: code}
			if msg != "" {
				rt.ErrorMessage = &msg
			}
			s.metrics.countErr(37, code)
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
}
