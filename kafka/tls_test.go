package kafka

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/internal/certgen"
)

// stubBackend serves what ApiVersions and a Metadata for no topics need;
// nothing else is called.
type stubBackend struct{ Backend }

func (stubBackend) GroupAPIs() []APIRange                                 { return nil }
func (stubBackend) Brokers() []BrokerInfo                                 { return nil }
func (stubBackend) ClusterID() string                                     { return "test" }
func (stubBackend) ControllerID() int32                                   { return -1 }
func (stubBackend) Topics([]string, bool) []TopicInfo                     { return nil }
func (stubBackend) AutoCreateTopics() bool                                { return false }
func (stubBackend) Throttle(QuotaKind, string, string, int) time.Duration { return 0 }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// servedSerial connects with TLS, sends ApiVersions, and returns the
// serial of the certificate the server presented.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := kmsg.NewPtrApiVersionsRequest()
	body := append([]byte{0, 18, 0, 0, 0, 0, 0, 7, 0, 1, 'x'}, req.AppendTo(nil)...)
	if _, err := c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)); err != nil {
		t.Fatal(err)
	}
	var hdr [8]byte
	if _, err := c.Read(hdr[:]); err != nil {
		t.Fatalf("no answer over TLS: %v", err)
	}
	if corr := binary.BigEndian.Uint32(hdr[4:]); corr != 7 {
		t.Fatalf("correlation id %d", corr)
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// A TLS listener takes new certificates on Reload (SIGHUP) and when the
// files change, without a restart; a verified client certificate names
// the principal by its subject.
func TestTLSReloadAndClientPrincipal(t *testing.T) {
	dir := t.TempDir()
	ca, err := certgen.NewCA("test-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca.Write(dir, "ca")
	issue := func() *big.Int {
		p, err := ca.Sign(certgen.Options{CommonName: "node", Hosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Write(dir, "node"); err != nil {
			t.Fatal(err)
		}
		return p.Cert.SerialNumber
	}
	first := issue()
	logs := &syncBuf{}
	files := &TLSFiles{CertFile: filepath.Join(dir, "node.pem"), KeyFile: filepath.Join(dir, "node.key"),
		CAFile: filepath.Join(dir, "ca.pem"), ClientAuth: ClientAuthRequest}
	if err := files.Load(); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := NewServer(Config{Listeners: []Listener{{Name: "TLS", Protocol: SSL, Listen: "127.0.0.1:0", TLS: files.ServerConfig()}},
		Backend: stubBackend{}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := s.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client, err := ca.Sign(certgen.Options{CommonName: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{{
		Certificate: [][]byte{client.Cert.Raw}, PrivateKey: client.Key}}}

	if got := servedSerial(t, addr, cfg); got.Cmp(first) != 0 {
		t.Fatalf("served serial %v, want %v", got, first)
	}
	if !bytes.Contains([]byte(logs.String()), []byte(`principal="User:CN=alice,O=Chronik"`)) {
		t.Fatalf("client certificate did not name the principal:\n%s", logs.String())
	}

	second := issue()
	if err := files.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, addr, cfg); got.Cmp(second) != 0 {
		t.Fatalf("after Reload served serial %v, want %v", got, second)
	}

	third := issue()
	future := time.Now().Add(time.Minute)
	for _, f := range []string{files.CertFile, files.KeyFile} {
		os.Chtimes(f, future, future)
	}
	files.files.LookNext() // as if the once-a-second look were due
	if got := servedSerial(t, addr, cfg); got.Cmp(third) != 0 {
		t.Fatalf("after the files changed served serial %v, want %v", got, third)
	}

	// A broken file keeps the certificates that work.
	os.WriteFile(files.CertFile, []byte("not a certificate"), 0o644)
	if err := files.Reload(); err == nil {
		t.Fatal("a broken certificate file reloaded")
	}
	if got := servedSerial(t, addr, cfg); got.Cmp(third) != 0 {
		t.Fatalf("after a failed reload served serial %v, want %v", got, third)
	}
}
