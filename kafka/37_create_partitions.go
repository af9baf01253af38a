package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CreatePartitions v0-3 (v2 flexible). Explicit assignments are not
// supported; the broker spreads new replicas itself.
func init() { register(37, 0, 3, handleCreatePartitions) }

func handleCreatePartitions(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.CreatePartitionsRequest)
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	resp.Version = req.Version
	denied := make([]int16, len(req.Topics))
	for i, t := range req.Topics {
		denied[i] = topicErr(s, cc, kmsg.ACLOperationAlter, t.Topic)
	}
	return func() kmsg.Response {
		timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(cc.ctx, timeout)
		defer cancel()
		refused := s.checkNewPartitions(partitionsAdded(s, req))
		for i, t := range req.Topics {
			code, msg := kerr.PolicyViolation.Code, refused
			if denied[i] != 0 {
				code, msg = denied[i], ""
			} else if refused == "" {
				code, msg = s.backend.CreatePartitions(ctx, t.Topic, t.Count, req.ValidateOnly)
			}
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

// partitionsAdded is how many partitions req would add: each topic's new
// count less what it has now (topics that do not exist add none; the
// backend answers them).
func partitionsAdded(s *Server, req *kmsg.CreatePartitionsRequest) int64 {
	names := make([]string, 0, len(req.Topics))
	for _, t := range req.Topics {
		names = append(names, t.Topic)
	}
	have := map[string]int64{}
	for _, t := range s.backend.Topics(names, true) {
		if t.Err == 0 {
			have[t.Name] = int64(len(t.Partitions))
		}
	}
	var n int64
	for _, t := range req.Topics {
		if cur, ok := have[t.Topic]; ok && int64(t.Count) > cur {
			n += int64(t.Count) - cur
		}
	}
	return n
}
