package kafka

import (
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// plainLogin runs a v1 handshake and a SaslAuthenticate v1 PLAIN login
// and returns the answer's error code and session lifetime.
func plainLogin(t *testing.T, c net.Conn, mech, user, pass string) (int16, int64) {
	t.Helper()
	h := kmsg.NewPtrSASLHandshakeRequest()
	h.SetVersion(1)
	h.Mechanism = mech
	writeReq(t, c, 10, h)
	b, err := readSized(c)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	hr := kmsg.NewPtrSASLHandshakeResponse()
	hr.SetVersion(1)
	if err := hr.ReadFrom(b[4:]); err != nil {
		t.Fatal(err)
	}
	if hr.ErrorCode != 0 {
		return hr.ErrorCode, 0
	}
	a := kmsg.NewPtrSASLAuthenticateRequest()
	a.SetVersion(1)
	a.SASLAuthBytes = []byte("\x00" + user + "\x00" + pass)
	writeReq(t, c, 11, a)
	if b, err = readSized(c); err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	ar := kmsg.NewPtrSASLAuthenticateResponse()
	ar.SetVersion(1)
	if err := ar.ReadFrom(b[4:]); err != nil {
		t.Fatal(err)
	}
	return ar.ErrorCode, ar.SessionLifetimeMillis
}

func apiVersions(t *testing.T, c net.Conn) error {
	t.Helper()
	writeReq(t, c, 20, kmsg.NewPtrApiVersionsRequest())
	_, err := readSized(c)
	return err
}

// TestSASLReauthentication (KIP-368): a login's answer carries the
// session lifetime; a connection that does not log in again before it
// ends is closed at its next request; one that does keeps being served;
// logging in again as another user or with another mechanism closes it.
func TestSASLReauthentication(t *testing.T) {
	const lifetime = 300 * time.Millisecond
	addr := saslServerReauth(t, lifetime)

	lapsed := dialSASL(t, addr)
	if code, ms := plainLogin(t, lapsed, "PLAIN", "alice", "pw"); code != 0 || ms != lifetime.Milliseconds() {
		t.Fatalf("login: error %d, session lifetime %d ms, want 0 and %d", code, ms, lifetime.Milliseconds())
	}
	if err := apiVersions(t, lapsed); err != nil {
		t.Fatalf("a request within the session: %v", err)
	}
	time.Sleep(lifetime + 100*time.Millisecond) // the session must end: nothing to wait on
	writeReq(t, lapsed, 21, kmsg.NewPtrApiVersionsRequest())
	expectClosed(t, lapsed, "a request after the session ended")

	renewed := dialSASL(t, addr)
	if code, _ := plainLogin(t, renewed, "PLAIN", "alice", "pw"); code != 0 {
		t.Fatalf("login: error %d", code)
	}
	for i := 0; i < 3; i++ {
		time.Sleep(lifetime + 100*time.Millisecond)
		if code, ms := plainLogin(t, renewed, "PLAIN", "alice", "pw"); code != 0 || ms != lifetime.Milliseconds() {
			t.Fatalf("re-authentication %d: error %d, lifetime %d ms", i+1, code, ms)
		}
		if err := apiVersions(t, renewed); err != nil {
			t.Fatalf("a request after re-authentication %d: %v", i+1, err)
		}
	}

	other := dialSASL(t, addr)
	if code, _ := plainLogin(t, other, "PLAIN", "alice", "pw"); code != 0 {
		t.Fatalf("login: error %d", code)
	}
	if code, _ := plainLogin(t, other, "PLAIN", "bob", "pw"); code == 0 {
		t.Fatal("re-authentication as another user succeeded")
	}
	expectClosed(t, other, "re-authentication as another user")

	mech := dialSASL(t, addr)
	if code, _ := plainLogin(t, mech, "PLAIN", "alice", "pw"); code != 0 {
		t.Fatalf("login: error %d", code)
	}
	if code, _ := plainLogin(t, mech, "SCRAM-SHA-512", "alice", "pw"); code == 0 {
		t.Fatal("re-authentication with another mechanism succeeded")
	}
	expectClosed(t, mech, "re-authentication with another mechanism")
}

// Without a lifetime, sessions last: the answer says 0 and the connection
// stays after any wait.
func TestSASLNoReauthLifetime(t *testing.T) {
	addr := saslServerReauth(t, 0)
	c := dialSASL(t, addr)
	if code, ms := plainLogin(t, c, "PLAIN", "alice", "pw"); code != 0 || ms != 0 {
		t.Fatalf("login: error %d, lifetime %d ms, want 0 and 0", code, ms)
	}
	time.Sleep(200 * time.Millisecond)
	if err := apiVersions(t, c); err != nil {
		t.Fatalf("a request later: %v", err)
	}
}
