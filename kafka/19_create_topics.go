package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CreateTopics v0-7. v1 ValidateOnly and error messages; v4 defaults via -1
// (KIP-464); v5 flexible, returns partitions, replication and configs; v7
// topic ids. Any broker accepts it and forwards to the metadata leader.
func init() { register(19, 0, 7, handleCreateTopics) }

func handleCreateTopics(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.CreateTopicsRequest)
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	resp.Version = req.Version
	var reqs []CreateTopic
	seen := map[string]int{}
	denied := map[string]bool{}
	for _, t := range req.Topics {
		seen[t.Topic]++
		denied[t.Topic] = !mayCreateTopic(s, cc, t.Topic)
		ct := CreateTopic{Name: t.Topic, Partitions: t.NumPartitions, ReplicationFactor: t.ReplicationFactor, Configs: map[string]*string{}}
		if len(t.ReplicaAssignment) > 0 {
			ct.Assignment = map[int32][]int32{}
			for _, a := range t.ReplicaAssignment {
				ct.Assignment[a.Partition] = a.Replicas
			}
		}
		for _, c := range t.Configs {
			ct.Configs[c.Name] = c.Value
		}
		reqs = append(reqs, ct)
	}
	return func() kmsg.Response {
		timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(cc.ctx, timeout)
		defer cancel()
		var valid []CreateTopic
		var adds int64
		results := map[string]CreateTopicResult{}
		for _, ct := range reqs {
			if seen[ct.Name] > 1 {
				continue
			}
			if denied[ct.Name] {
				results[ct.Name] = CreateTopicResult{Name: ct.Name, Err: kerr.TopicAuthorizationFailed.Code}
				continue
			}
			valid = append(valid, ct)
			adds += newPartitions(s, ct)
		}
		if refused := s.checkNewPartitions(adds); refused != "" {
			for _, ct := range valid {
				results[ct.Name] = CreateTopicResult{Name: ct.Name, Err: kerr.PolicyViolation.Code, Message: refused}
			}
			valid = nil
		}
		if len(valid) > 0 {
			for _, r := range s.backend.CreateTopics(ctx, valid, req.ValidateOnly) {
				results[r.Name] = r
			}
		}
		for _, ct := range reqs {
			rt := kmsg.CreateTopicsResponseTopic{Topic: ct.Name, NumPartitions: -1, ReplicationFactor: -1}
			if seen[ct.Name] > 1 {
				rt.ErrorCode = kerr.InvalidRequest.Code
				msg := "topic named more than once in the request"
				rt.ErrorMessage = &msg
			} else {
				r := results[ct.Name]
				rt.ErrorCode, rt.TopicID = r.Err, r.ID
				if r.Message != "" {
					msg := r.Message
					rt.ErrorMessage = &msg
				}
				if r.Err == 0 {
					rt.NumPartitions, rt.ReplicationFactor = r.Partitions, r.ReplicationFactor
					for _, c := range r.Configs {
						rt.Configs = append(rt.Configs, kmsg.CreateTopicsResponseTopicConfig{Name: c.Name, Value: c.Value,
							ReadOnly: c.ReadOnly, Source: c.Source, IsSensitive: c.Sensitive})
					}
				}
			}
			s.metrics.countErr(19, rt.ErrorCode)
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
}

// newPartitions is how many partitions creating ct adds: its assignment's,
// its count's, or at least one when it asks for the broker's default.
func newPartitions(s *Server, ct CreateTopic) int64 {
	switch {
	case len(ct.Assignment) > 0:
		return int64(len(ct.Assignment))
	case ct.Partitions > 0:
		return int64(ct.Partitions)
	case ct.Partitions == -1:
		return int64(max(1, s.backend.DefaultPartitions()))
	}
	return 1
}
