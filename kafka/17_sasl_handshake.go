package kafka

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// SaslHandshake v0-1 picks the mechanism. After v0 the client sends bare
// size-prefixed tokens (conn.handleRawToken); after v1, SaslAuthenticate
// requests. A mechanism not enabled or a second handshake during a login
// is answered with its error and the connection is closed, as Kafka does;
// a handshake where no login is due (no SASL on the listener, or after
// one) gets ILLEGAL_SASL_STATE and the connection stays. A v1 handshake
// after a SaslAuthenticate v1+ login starts a re-authentication
// (KIP-368), which must use the same mechanism.
func init() { register(17, 0, 1, handleSaslHandshake) }

func handleSaslHandshake(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.SASLHandshakeRequest)
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.Version = req.Version
	st := cc.sasl
	switch {
	case st != nil && st.done && st.canReauth && req.Version >= 1:
		if req.Mechanism != st.mechanism {
			resp.ErrorCode = kerr.IllegalSaslState.Code
			cc.closeAfter = true
			s.logger.Info("sasl re-authentication refused: another mechanism", "remote", cc.remote,
				"principal", cc.principal.String(), "mechanism", req.Mechanism, "login_mechanism", st.mechanism)
			break
		}
		st.beginReauth()
	case st == nil || st.done:
		// Not a login (a listener without SASL, or one already done):
		// an error but, as in Kafka, the connection stays.
		resp.ErrorCode = kerr.IllegalSaslState.Code
	case st.mechanism != "":
		resp.ErrorCode = kerr.IllegalSaslState.Code
		cc.closeAfter = true
	case !st.enabled(req.Mechanism):
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		cc.closeAfter = true
		s.logger.Info("sasl mechanism refused", "remote", cc.remote, "client_id", cc.clientID, "mechanism", req.Mechanism)
	default:
		st.mechanism = req.Mechanism
		st.raw = req.Version == 0
	}
	if st != nil {
		resp.SupportedMechanisms = append([]string(nil), st.mechs...)
	}
	return func() kmsg.Response { return resp }
}
