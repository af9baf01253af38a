package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DeleteTopics v0-6. v4 flexible; v5 error messages; v6 delete by topic id.
func init() { register(20, 0, 6, handleDeleteTopics) }

func handleDeleteTopics(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DeleteTopicsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	resp.Version = req.Version
	type target struct {
		name   *string
		id     [16]byte
		denied int16
	}
	var targets []target
	if req.Version >= 6 {
		for _, t := range req.Topics {
			targets = append(targets, target{name: t.Topic, id: t.TopicID})
		}
	} else {
		for _, n := range req.TopicNames {
			targets = append(targets, target{name: &n})
		}
	}
	for i, t := range targets {
		name, ok := "", t.name != nil && *t.name != ""
		if ok {
			name = *t.name
		} else {
			name, ok = s.backend.TopicName(t.id)
		}
		if ok {
			targets[i].denied = topicErr(s, cc, kmsg.ACLOperationDelete, name)
		}
	}
	return func() kmsg.Response {
		timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(cc.ctx, timeout)
		defer cancel()
		for _, t := range targets {
			rt := kmsg.DeleteTopicsResponseTopic{TopicID: t.id}
			name := ""
			if t.name != nil {
				name = *t.name
			}
			if name == "" {
				if n, ok := s.backend.TopicName(t.id); ok {
					name = n
				} else {
					rt.ErrorCode = kerr.UnknownTopicID.Code
				}
			}
			if rt.ErrorCode == 0 {
				nm := name
				rt.Topic = &nm
				if infos := s.backend.Topics([]string{name}, true); len(infos) == 1 && infos[0].Err == 0 {
					rt.TopicID = infos[0].ID
				}
				rt.ErrorCode = t.denied
				if rt.ErrorCode == 0 {
					rt.ErrorCode = s.backend.DeleteTopic(ctx, name)
				}
			}
			s.metrics.countErr(20, rt.ErrorCode)
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
}
