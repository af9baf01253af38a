package kafka

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/auth"
)

// SASL mechanisms served.
const (
	MechPlain       = "PLAIN"
	MechScramSHA256 = auth.ScramSHA256
	MechScramSHA512 = auth.ScramSHA512
)

// DefaultSASLMechanisms are enabled when Config.SASLMechanisms is empty.
var DefaultSASLMechanisms = []string{MechScramSHA512, MechScramSHA256, MechPlain}

// maxSASLToken bounds a token of the v0 raw framing (Kafka's
// sasl.server.max.receive.size is 512 KiB; real tokens are under 1 KiB).
const maxSASLToken = 64 << 10

// errLoginFailed ends a connection whose login failed or was out of order,
// once the answer saying so is written.
var errLoginFailed = errors.New("sasl authentication failed")

// saslState is a connection's login on a SASL listener. Only the reader
// goroutine touches it.
type saslState struct {
	creds     Credentials
	mechs     []string
	mechanism string // chosen by SaslHandshake
	raw       bool   // SaslHandshake v0: tokens come without a request header
	conv      *auth.ScramConversation
	done      bool
	user      string

	// Re-authentication (KIP-368). lifetime is Config.MaxReauth: each
	// login's session ends that long after it (0: never); a request other
	// than SaslHandshake after expires closes the connection. A client
	// that logged in with SaslAuthenticate v1+ may log in again on the
	// same connection (canReauth), with the same mechanism and as the same
	// user (reauthAs, set while it does).
	lifetime  time.Duration
	expires   time.Time
	canReauth bool
	reauthAs  string
}

// errSessionExpired ends a connection whose SASL session expired without
// a re-authentication.
var errSessionExpired = errors.New("sasl session expired")

// expired reports whether a request with key must close the connection
// because the session ended: any request but the SaslHandshake that
// starts a re-authentication.
func (st *saslState) expired(key int16, now time.Time) bool {
	return st != nil && st.done && !st.expires.IsZero() && now.After(st.expires) && key != 17
}

// beginReauth starts a new login on a logged-in connection.
func (st *saslState) beginReauth() {
	st.reauthAs, st.done, st.conv = st.user, false, nil
}

// loginDone records a completed login (or re-login): an error when a
// re-login named another user. Its session runs from now.
func (st *saslState) loginDone(now time.Time) error {
	if st.reauthAs != "" && st.user != st.reauthAs {
		return fmt.Errorf("re-authentication as %q on a connection of %q", st.user, st.reauthAs)
	}
	st.reauthAs = ""
	if st.lifetime > 0 {
		st.expires = now.Add(st.lifetime)
	}
	return nil
}

// admits reports whether a request with key may be served now: before
// the login completes only ApiVersions, SaslHandshake and, after a
// handshake, SaslAuthenticate are (as Kafka allows). Anything else closes
// the connection.
func (st *saslState) admits(key int16) error {
	if st == nil || st.done {
		return nil
	}
	switch key {
	case 17, 18:
		return nil
	case 36:
		if st.mechanism != "" && !st.raw {
			return nil
		}
	}
	return fmt.Errorf("%s before SASL authentication", kmsg.NameForKey(key))
}

func (st *saslState) enabled(mech string) bool {
	for _, m := range st.mechs {
		if m == mech {
			return true
		}
	}
	return false
}

// step consumes one client token and returns the server's reply. An
// error is a failed login; the message names no secret.
func (st *saslState) step(tok []byte) ([]byte, error) {
	if st.creds == nil {
		return nil, errors.New("no credentials configured")
	}
	switch st.mechanism {
	case MechPlain:
		return nil, st.plain(tok)
	case MechScramSHA256, MechScramSHA512:
		if st.conv == nil {
			conv, err := auth.NewScramConversation(st.mechanism, func(user string) (auth.Credential, bool) {
				return st.creds.Lookup(st.mechanism, user)
			})
			if err != nil {
				return nil, err
			}
			st.conv = conv
		}
		out, err := st.conv.Step(tok)
		if err != nil {
			return nil, err
		}
		if st.conv.Done() {
			st.done, st.user = true, st.conv.User()
		}
		return out, nil
	}
	return nil, fmt.Errorf("mechanism %q", st.mechanism)
}

// plain checks an RFC 4616 token (authzid NUL user NUL password) against
// the user's SCRAM credential: no plaintext password is stored anywhere.
func (st *saslState) plain(tok []byte) error {
	parts := bytes.SplitN(tok, []byte{0}, 3)
	if len(parts) != 3 || len(parts[1]) == 0 {
		return errors.New("plain: malformed token")
	}
	user, pass := string(parts[1]), string(parts[2])
	if len(parts[0]) > 0 && string(parts[0]) != user {
		return errors.New("plain: authorization id differs from the user")
	}
	for _, m := range []string{MechScramSHA512, MechScramSHA256} {
		if c, ok := st.creds.Lookup(m, user); ok {
			if c.VerifyPassword(pass) {
				st.done, st.user = true, user
				return nil
			}
			break
		}
	}
	return errors.New("plain: invalid credentials")
}

// handshake runs the TLS handshake of a TLS listener within the frame
// timeout; a verified client certificate names the principal.
func (c *conn) handshake() error {
	if c.tls == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.s.ctx, c.s.cfg.Limits.FrameTimeout)
	defer cancel()
	if err := c.tls.HandshakeContext(ctx); err != nil {
		c.s.metrics.badRequests.WithLabelValues("tls_handshake").Inc()
		c.s.logger.Info("closing connection: tls handshake failed", "remote", c.cc.remote, "listener", c.cc.listener, "err", err)
		return err
	}
	if certs := c.tls.ConnectionState().PeerCertificates; len(certs) > 0 {
		c.cc.principal = principalFromCert(certs[0])
		c.s.logger.Debug("tls client authenticated", "remote", c.cc.remote, "principal", c.cc.principal.String())
	}
	return nil
}

// handleRawToken reads and answers one token of the v0 framing. A failed
// login just closes the connection: v0 has no way to say why.
func (c *conn) handleRawToken(r *bufio.Reader) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size > maxSASLToken {
		c.s.metrics.badRequests.WithLabelValues("size").Inc()
		return &badRequest{"size", fmt.Sprintf("SASL token of %d bytes", size)}
	}
	mem := hold{n: int64(size)}
	if err := c.takeMemory(mem.n, false, time.Now().Add(c.s.cfg.Limits.FrameTimeout)); err != nil {
		return err
	}
	tok := make([]byte, size)
	if _, err := io.ReadFull(r, tok); err != nil {
		c.s.releaseMemory(mem)
		return err
	}
	st := c.cc.sasl
	out, err := st.step(tok)
	if err != nil {
		c.s.releaseMemory(mem)
		c.loginFailed(err)
		return errLoginFailed
	}
	if st.done {
		st.raw = false
		st.loginDone(time.Now()) // v0 tokens cannot re-authenticate: no other user to compare
		c.loggedIn()
	}
	gen := c.s.requestStarted()
	return c.enqueue(pendingResp{gen: gen, key: 36, start: time.Now(), mem: mem, rawToken: &out})
}

func (c *conn) loginFailed(err error) {
	c.s.metrics.badRequests.WithLabelValues("sasl_failed").Inc()
	c.s.logger.Info("sasl authentication failed", "remote", c.cc.remote, "client_id", c.cc.clientID,
		"listener", c.cc.listener, "mechanism", c.cc.sasl.mechanism, "err", err)
}

func (c *conn) loggedIn() {
	c.cc.principal = Principal{Type: "User", Name: c.cc.sasl.user}
	c.s.logger.Debug("sasl authenticated", "remote", c.cc.remote, "principal", c.cc.principal.String(),
		"mechanism", c.cc.sasl.mechanism)
}
