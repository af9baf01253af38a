package admin

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronik-dev/chronik/internal/testpki"
)

// startAuthServer serves cfg over real TLS on loopback and returns a
// client that trusts it and the base URL.
func startAuthServer(t *testing.T, cfg Config, ca *testpki.CA, clientCert *tls.Certificate) (*http.Client, string) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	tc := &tls.Config{RootCAs: ca.Pool()}
	if clientCert != nil {
		tc.Certificates = []tls.Certificate{*clientCert}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}, "https://" + s.Addr()
}

func tlsFiles(t *testing.T, ca *testpki.CA) (cert, key, caFile string) {
	t.Helper()
	dir := t.TempDir()
	leaf, err := ca.Issue("admin", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err = leaf.WriteFiles(dir, "admin")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err = ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, caFile
}

func status(t *testing.T, c *http.Client, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestTokenOverTLS(t *testing.T) {
	ca, err := testpki.NewCA("admin-ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, _ := tlsFiles(t, ca)
	tc, err := LoadTLS(cert, key, "")
	if err != nil {
		t.Fatal(err)
	}
	c, base := startAuthServer(t, Config{Listen: "127.0.0.1:0", Source: healthyCluster(), Gatherer: prometheus.NewRegistry(),
		TLS: tc, Token: "s3cret"}, ca, nil)
	for _, p := range []string{"/health", "/ready"} {
		if got := status(t, c, base+p, ""); got != http.StatusOK {
			t.Errorf("%s without a token: %d, want 200", p, got)
		}
	}
	for _, p := range []string{"/", "/partitions", "/nodes", "/restart-safe", "/metrics"} {
		if got := status(t, c, base+p, ""); got != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", p, got)
		}
		if got := status(t, c, base+p, "wrong"); got != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d, want 401", p, got)
		}
		if got := status(t, c, base+p, "s3cret"); got != http.StatusOK {
			t.Errorf("%s with the token: %d, want 200", p, got)
		}
	}
	// pprof is off unless asked for, token or not.
	if got := status(t, c, base+"/debug/pprof/", "s3cret"); got != http.StatusNotFound {
		t.Errorf("pprof without Pprof: %d, want 404", got)
	}
	// A plaintext request to the TLS port gets no admin answer.
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http" + base[len("https"):] + "/partitions")
	if err == nil {
		if resp.StatusCode == http.StatusOK {
			t.Error("plaintext request served by a TLS admin server")
		}
		resp.Body.Close()
	}
}

func TestClientCertificateAuthorizes(t *testing.T) {
	ca, err := testpki.NewCA("admin-ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, caFile := tlsFiles(t, ca)
	tc, err := LoadTLS(cert, key, caFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("operator")
	if err != nil {
		t.Fatal(err)
	}
	client, err := leaf.TLS()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Listen: "127.0.0.1:0", Source: healthyCluster(), Gatherer: prometheus.NewRegistry(), TLS: tc, Pprof: true}
	withCert, base := startAuthServer(t, cfg, ca, &client)
	if got := status(t, withCert, base+"/partitions", ""); got != http.StatusOK {
		t.Errorf("/partitions with a client certificate: %d, want 200", got)
	}
	if got := status(t, withCert, base+"/debug/pprof/", ""); got != http.StatusOK {
		t.Errorf("pprof enabled: %d, want 200", got)
	}
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	if got := status(t, noCert, base+"/partitions", ""); got != http.StatusUnauthorized {
		t.Errorf("/partitions without a client certificate: %d, want 401", got)
	}
	if got := status(t, noCert, base+"/ready", ""); got != http.StatusOK {
		t.Errorf("/ready without a client certificate: %d, want 200", got)
	}
}

func TestLoadTLSRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTLS(bad, bad, ""); err == nil {
		t.Error("LoadTLS took a file that is not PEM")
	}
	if _, err := LoadTLS("", "", ""); err == nil {
		t.Error("LoadTLS took no files")
	}
}
