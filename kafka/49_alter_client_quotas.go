package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// AlterClientQuotas v0-1 (KIP-546). v1 flexible. Each entry sets or
// removes quota keys of one entity; entries succeed or fail on their own.
func init() { register(49, 0, 1, handleAlterClientQuotas) }

func handleAlterClientQuotas(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.AlterClientQuotasRequest)
	resp := req.ResponseKind().(*kmsg.AlterClientQuotasResponse)
	resp.Version = req.Version
	// Kafka's rule: ALTER_CONFIGS on the cluster, decided here on the
	// reader goroutine, which owns the connection's principal.
	denied := clusterErr(s, cc, kmsg.ACLOperationAlterConfigs)
	return func() kmsg.Response {
		ctx, cancel := context.WithTimeout(cc.ctx, 30*time.Second)
		defer cancel()
		for _, e := range req.Entries {
			var entity []QuotaEntityPart
			re := kmsg.AlterClientQuotasResponseEntry{}
			for _, p := range e.Entity {
				entity = append(entity, QuotaEntityPart{Type: p.Type, Name: p.Name})
				re.Entity = append(re.Entity, kmsg.AlterClientQuotasResponseEntryEntity{Type: p.Type, Name: p.Name})
			}
			ops := make([]QuotaOp, 0, len(e.Ops))
			for _, o := range e.Ops {
				ops = append(ops, QuotaOp{Key: o.Key, Value: o.Value, Remove: o.Remove})
			}
			code, msg := denied, ""
			if denied == 0 {
				code, msg = s.backend.AlterClientQuotas(ctx, entity, ops, req.ValidateOnly)
			}
			re.ErrorCode = code
			if msg != "" {
				re.ErrorMessage = &msg
			}
			s.metrics.countErr(49, code)
			resp.Entries = append(resp.Entries, re)
		}
		return resp
	}
}
