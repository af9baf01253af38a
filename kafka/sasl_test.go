package kafka

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/auth"
)

func saslServer(t *testing.T) string { return saslServerReauth(t, 0) }

// saslServerReauth serves a SASL_PLAINTEXT listener where alice and bob
// log in with the password "pw", each login lasting maxReauth.
func saslServerReauth(t *testing.T, maxReauth time.Duration) string {
	t.Helper()
	st := auth.NewStore()
	for _, user := range []string{"alice", "bob"} {
		c, err := auth.NewCredential(auth.ScramSHA512, "pw", auth.MinIterations)
		if err != nil {
			t.Fatal(err)
		}
		st.Set(user, c)
	}
	s, err := NewServer(Config{Listeners: []Listener{{Name: "SASL", Protocol: SASLPlaintext, Listen: "127.0.0.1:0"}},
		Backend: stubBackend{}, Credentials: st, MaxReauth: maxReauth})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr().String()
}

func writeReq(t *testing.T, c net.Conn, corr int32, r kmsg.Request) {
	t.Helper()
	body := binary.BigEndian.AppendUint16(nil, uint16(r.Key()))
	body = binary.BigEndian.AppendUint16(body, uint16(r.GetVersion()))
	body = binary.BigEndian.AppendUint32(body, uint32(corr))
	body = append(body, 0, 1, 'x')
	if r.IsFlexible() {
		body = append(body, 0)
	}
	body = r.AppendTo(body)
	if _, err := c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)); err != nil {
		t.Fatal(err)
	}
}

// readFrame reads one size-prefixed frame.
func readSized(c net.Conn) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(c, b)
	return b, err
}

func dialSASL(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	for i := 0; i < 4; i++ { // at most the answers already queued
		if _, err := readSized(c); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || !isTimeout(err) {
				return
			}
			t.Fatalf("%s: connection still open: %v", what, err)
		}
	}
	t.Fatalf("%s: connection still answering", what)
}

// Before a login only ApiVersions and the SASL requests are served.
func TestSASLRequestsBeforeLoginRefused(t *testing.T) {
	addr := saslServer(t)
	c := dialSASL(t, addr)
	writeReq(t, c, 1, kmsg.NewPtrApiVersionsRequest())
	if _, err := readSized(c); err != nil {
		t.Fatalf("ApiVersions before login: %v", err)
	}
	m := kmsg.NewPtrMetadataRequest()
	m.SetVersion(4)
	writeReq(t, c, 2, m)
	expectClosed(t, c, "Metadata before login")
}

// The v0 handshake's bare tokens: a PLAIN login answered with an empty
// token, after which requests are served; a wrong password or an
// oversized token closes the connection.
func TestSASLHandshakeV0RawTokens(t *testing.T) {
	addr := saslServer(t)
	handshake := func(c net.Conn) {
		h := kmsg.NewPtrSASLHandshakeRequest()
		h.SetVersion(0)
		h.Mechanism = "PLAIN"
		writeReq(t, c, 1, h)
		b, err := readSized(c)
		if err != nil {
			t.Fatal(err)
		}
		resp := kmsg.NewPtrSASLHandshakeResponse()
		if err := resp.ReadFrom(b[4:]); err != nil || resp.ErrorCode != 0 {
			t.Fatalf("handshake: %v %d", err, resp.ErrorCode)
		}
	}
	raw := func(c net.Conn, tok []byte) {
		c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(tok))), tok...))
	}

	c := dialSASL(t, addr)
	handshake(c)
	raw(c, []byte("\x00alice\x00pw"))
	if b, err := readSized(c); err != nil || len(b) != 0 {
		t.Fatalf("PLAIN v0 login answer: %q %v", b, err)
	}
	m := kmsg.NewPtrMetadataRequest()
	m.SetVersion(4)
	m.Topics = []kmsg.MetadataRequestTopic{}
	writeReq(t, c, 3, m)
	if _, err := readSized(c); err != nil {
		t.Fatalf("Metadata after login: %v", err)
	}

	bad := dialSASL(t, addr)
	handshake(bad)
	raw(bad, []byte("\x00alice\x00wrong"))
	expectClosed(t, bad, "wrong password")

	huge := dialSASL(t, addr)
	handshake(huge)
	huge.Write(binary.BigEndian.AppendUint32(nil, 1<<30))
	expectClosed(t, huge, "a 1 GiB token")
}
