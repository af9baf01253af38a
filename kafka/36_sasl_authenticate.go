package kafka

import (
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// SaslAuthenticate v0-2 carries the tokens after a v1 handshake. A failed
// login is answered SASL_AUTHENTICATION_FAILED and the connection closes.
// v1 added the session lifetime (KIP-368): Config.MaxReauth, 0 when
// sessions do not expire. A re-authentication that names another user
// fails like a wrong password.
func init() { register(36, 0, 2, handleSaslAuthenticate) }

func handleSaslAuthenticate(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.SASLAuthenticateRequest)
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	resp.Version = req.Version
	st := cc.sasl
	if st == nil || st.done {
		resp.ErrorCode = kerr.IllegalSaslState.Code // not a login: the connection stays
		return func() kmsg.Response { return resp }
	}
	if st.mechanism == "" || st.raw {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		cc.closeAfter = true
		return func() kmsg.Response { return resp }
	}
	reauth := st.reauthAs != ""
	out, err := st.step(req.SASLAuthBytes)
	if err == nil && st.done {
		err = st.loginDone(time.Now())
	}
	if err != nil {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: invalid credentials with SASL mechanism " + st.mechanism
		resp.ErrorMessage = &msg
		cc.closeAfter = true
		s.metrics.badRequests.WithLabelValues("sasl_failed").Inc()
		s.logger.Info("sasl authentication failed", "remote", cc.remote, "client_id", cc.clientID,
			"listener", cc.listener, "mechanism", st.mechanism, "err", err)
		return func() kmsg.Response { return resp }
	}
	resp.SASLAuthBytes = out
	if st.done {
		if !reauth {
			st.canReauth = req.Version >= 1
		}
		if st.lifetime > 0 {
			resp.SessionLifetimeMillis = st.lifetime.Milliseconds()
		}
		cc.principal = Principal{Type: "User", Name: st.user}
		if reauth {
			s.metrics.reauths.Inc()
		}
		s.logger.Debug("sasl authenticated", "remote", cc.remote, "principal", cc.principal.String(), "mechanism", st.mechanism,
			"reauthentication", reauth)
	}
	return func() kmsg.Response { return resp }
}
