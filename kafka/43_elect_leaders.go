package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ElectLeaders v0-2. v1 added the election type (0 preferred, 1 unclean)
// and the top-level error; v2 flexible. Any node answers: the broker hands
// each transfer to the partition's current leader. Kafka's rule for the
// whole request: ALTER on the cluster. When every partition is asked for
// (topics null), those that need no election are left out of the answer,
// as Kafka does.
func init() { register(43, 0, 2, handleElectLeaders) }

// maxElectTimeout bounds how long one ElectLeaders request may hold its
// connection's reply slot.
const maxElectTimeout = 5 * time.Minute

func handleElectLeaders(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.ElectLeadersRequest)
	resp := req.ResponseKind().(*kmsg.ElectLeadersResponse)
	resp.Version = req.Version
	unclean := req.Version >= 1 && req.ElectionType == 1
	if req.Version >= 1 && req.ElectionType != 0 && req.ElectionType != 1 {
		resp.ErrorCode = kerr.InvalidRequest.Code
		s.metrics.countErr(43, resp.ErrorCode)
		return func() kmsg.Response { return resp }
	}
	var parts []ElectPartition
	if req.Topics != nil {
		seen := map[ElectPartition]bool{}
		for _, t := range req.Topics {
			for _, p := range t.Partitions {
				ep := ElectPartition{Topic: t.Topic, Partition: p}
				if !seen[ep] {
					seen[ep] = true
					parts = append(parts, ep)
				}
			}
		}
		if parts == nil {
			parts = []ElectPartition{}
		}
	}
	if code := clusterErr(s, cc, kmsg.ACLOperationAlter); code != 0 {
		// Kafka answers every partition named with the error too.
		resp.ErrorCode = code
		s.metrics.countErr(43, code)
		res := make([]ElectResult, len(parts))
		for i, p := range parts {
			res[i] = ElectResult{Topic: p.Topic, Partition: p.Partition, Err: code}
		}
		fillElect(resp, res)
		return func() kmsg.Response { return resp }
	}
	return func() kmsg.Response {
		timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
		if timeout <= 0 {
			timeout = 60 * time.Second
		}
		timeout = min(timeout, maxElectTimeout)
		ctx, cancel := context.WithTimeout(cc.ctx, timeout)
		defer cancel()
		res := s.backend.ElectLeaders(ctx, unclean, parts)
		if parts == nil {
			kept := res[:0]
			for _, r := range res {
				if r.Err != kerr.ElectionNotNeeded.Code {
					kept = append(kept, r)
				}
			}
			res = kept
		}
		for _, r := range res {
			s.metrics.countErr(43, r.Err)
		}
		fillElect(resp, res)
		return resp
	}
}

// fillElect puts results into the response, one entry per topic in the
// order the topics first appear.
func fillElect(resp *kmsg.ElectLeadersResponse, res []ElectResult) {
	index := map[string]int{}
	for _, r := range res {
		i, ok := index[r.Topic]
		if !ok {
			i = len(resp.Topics)
			index[r.Topic] = i
			resp.Topics = append(resp.Topics, kmsg.ElectLeadersResponseTopic{Topic: r.Topic})
		}
		p := kmsg.ElectLeadersResponseTopicPartition{Partition: r.Partition, ErrorCode: r.Err}
		if r.Message != "" {
			msg := r.Message
			p.ErrorMessage = &msg
		}
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, p)
	}
}
