package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// UnregisterBroker v0 (KIP-631): the broker leaves the cluster's broker
// registry for good (Metadata and DescribeCluster stop listing it, peers
// refuse its connections). ALTER on the cluster.
func init() { register(64, 0, 0, handleUnregisterBroker) }

// BrokerUnregisterer is implemented by a Backend that keeps a broker
// registry; without it the request fails with UNSUPPORTED_VERSION.
type BrokerUnregisterer interface {
	// UnregisterBroker marks broker id removed, or says why not.
	UnregisterBroker(ctx context.Context, id int32) (errCode int16, msg string)
}

func handleUnregisterBroker(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.UnregisterBrokerRequest)
	resp := req.ResponseKind().(*kmsg.UnregisterBrokerResponse)
	resp.Version = req.Version
	denied := clusterErr(s, cc, kmsg.ACLOperationAlter)
	return func() kmsg.Response {
		code, msg := denied, ""
		if code == 0 {
			if ub, ok := s.backend.(BrokerUnregisterer); ok {
				ctx, cancel := context.WithTimeout(cc.ctx, 30*time.Second)
				code, msg = ub.UnregisterBroker(ctx, req.BrokerID)
				cancel()
			} else {
				code = kerr.UnsupportedVersion.Code
			}
		}
		resp.ErrorCode = code
		if msg != "" {
			resp.ErrorMessage = &msg
		}
		s.metrics.countErr(64, code)
		return resp
	}
}
