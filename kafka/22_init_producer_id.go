package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// InitProducerID v0-4. v2 flexible; v3 lets a producer bump its own epoch
// (KIP-360); v4 error handling for UNKNOWN_PRODUCER_ID. Transactions are not
// supported: a transactional id is refused.
func init() { register(22, 0, 4, handleInitProducerID) }

func handleInitProducerID(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.InitProducerIDRequest)
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.Version = req.Version
	return func() kmsg.Response {
		ctx, cancel := context.WithTimeout(cc.ctx, 10*time.Second)
		defer cancel()
		resp.ProducerID, resp.ProducerEpoch, resp.ErrorCode = s.backend.InitProducerID(ctx, req.TransactionalID, req.ProducerID, req.ProducerEpoch)
		s.metrics.countErr(22, resp.ErrorCode)
		return resp
	}
}
