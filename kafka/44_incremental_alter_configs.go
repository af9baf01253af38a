package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// IncrementalAlterConfigs v0-1 (KIP-339). v1 flexible. Each config is SET,
// DELETEd (back to its default), or for list configs APPENDed to or
// SUBTRACTed from; the others keep their values.
func init() { register(44, 0, 1, handleIncrementalAlterConfigs) }

func handleIncrementalAlterConfigs(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.IncrementalAlterConfigsRequest)
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	resp.Version = req.Version
	denied := make([]int16, len(req.Resources))
	for i, r := range req.Resources {
		denied[i] = configErr(s, cc, kmsg.ACLOperationAlterConfigs, r.ResourceType, r.ResourceName)
	}
	return func() kmsg.Response {
		ctx, cancel := context.WithTimeout(cc.ctx, 30*time.Second)
		defer cancel()
		for i, r := range req.Resources {
			res := AlterConfigsResource{Type: int8(r.ResourceType), Name: r.ResourceName, Incremental: true}
			for _, c := range r.Configs {
				res.Ops = append(res.Ops, ConfigOp{Name: c.Name, Op: int8(c.Op), Value: c.Value})
			}
			code, msg := denied[i], ""
			if code == 0 {
				code, msg = s.backend.AlterConfigs(ctx, res, req.ValidateOnly)
			}
			rr := kmsg.IncrementalAlterConfigsResponseResource{ResourceType: r.ResourceType, ResourceName: r.ResourceName, ErrorCode: code}
			if msg != "" {
				rr.ErrorMessage = &msg
			}
			s.metrics.countErr(44, code)
			resp.Resources = append(resp.Resources, rr)
		}
		return resp
	}
}
