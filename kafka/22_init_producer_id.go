package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
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
	if resp.ErrorCode = initProducerIDDenied(s, cc, req.TransactionalID); resp.ErrorCode != 0 {
		resp.ProducerID, resp.ProducerEpoch = -1, -1
		s.metrics.countErr(22, resp.ErrorCode)
		return func() kmsg.Response { return resp }
	}
	return func() kmsg.Response {
		ctx, cancel := context.WithTimeout(cc.ctx, 10*time.Second)
		defer cancel()
		resp.ProducerID, resp.ProducerEpoch, resp.ErrorCode = s.backend.InitProducerID(ctx, req.TransactionalID, req.ProducerID, req.ProducerEpoch)
		s.metrics.countErr(22, resp.ErrorCode)
		return resp
	}
}

// initProducerIDDenied is Kafka 3's rule: a transactional id needs WRITE on
// it; an idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE
// on some topic (KIP-679).
func initProducerIDDenied(s *Server, cc *connCtx, txnID *string) int16 {
	a := authorizer(s)
	switch {
	case a == nil:
		return 0
	case txnID != nil:
		if !may(s, cc, kmsg.ACLOperationWrite, kmsg.ACLResourceTypeTransactionalId, *txnID) {
			return kerr.TransactionalIDAuthorizationFailed.Code
		}
		return 0
	case mayCluster(s, cc, kmsg.ACLOperationIdempotentWrite),
		a.AuthorizeAny(cc.principal, hostOf(cc.remote), kmsg.ACLOperationWrite, kmsg.ACLResourceTypeTopic):
		return 0
	}
	return kerr.ClusterAuthorizationFailed.Code
}
