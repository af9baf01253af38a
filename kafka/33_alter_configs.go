package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// AlterConfigs v0-2. v1 is v0 again (throttling); v2 flexible. The configs
// named replace every dynamic config of the resource; topics and brokers
// (one node by id, or "" for the cluster-wide defaults) can be altered.
func init() { register(33, 0, 2, handleAlterConfigs) }

func handleAlterConfigs(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.AlterConfigsRequest)
	resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
	resp.Version = req.Version
	denied := make([]int16, len(req.Resources))
	for i, r := range req.Resources {
		denied[i] = configErr(s, cc, kmsg.ACLOperationAlterConfigs, r.ResourceType, r.ResourceName)
	}
	return func() kmsg.Response {
		ctx, cancel := context.WithTimeout(cc.ctx, 30*time.Second)
		defer cancel()
		for i, r := range req.Resources {
			res := AlterConfigsResource{Type: int8(r.ResourceType), Name: r.ResourceName}
			for _, c := range r.Configs {
				res.Ops = append(res.Ops, ConfigOp{Name: c.Name, Op: ConfigSet, Value: c.Value})
			}
			code, msg := denied[i], ""
			if code == 0 {
				code, msg = s.backend.AlterConfigs(ctx, res, req.ValidateOnly)
			}
			rr := kmsg.AlterConfigsResponseResource{ResourceType: r.ResourceType, ResourceName: r.ResourceName, ErrorCode: code}
			if msg != "" {
				rr.ErrorMessage = &msg
			}
			s.metrics.countErr(33, code)
			resp.Resources = append(resp.Resources, rr)
		}
		return resp
	}
}
