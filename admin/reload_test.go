package admin

import (
	"crypto/tls"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronik-dev/chronik/internal/testpki"
)

// TestTLSReload: the admin server's certificate and client CA are
// rotated on disk; after reload new connections get the new certificate
// and client certificates of the new CA stand in for the token, while a
// connection opened before keeps being served.
func TestTLSReload(t *testing.T) {
	serverCA, err := testpki.NewCA("admin-ca")
	if err != nil {
		t.Fatal(err)
	}
	oldClients, err := testpki.NewCA("old-clients")
	if err != nil {
		t.Fatal(err)
	}
	newClients, err := testpki.NewCA("new-clients")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	issue := func() *big.Int {
		t.Helper()
		leaf, err := serverCA.Issue("admin", "localhost")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := leaf.WriteFiles(dir, "admin"); err != nil {
			t.Fatal(err)
		}
		c, err := leaf.TLS()
		if err != nil {
			t.Fatal(err)
		}
		return new(big.Int).SetBytes(c.Leaf.SerialNumber.Bytes())
	}
	first := issue()
	caFile, err := oldClients.WriteFile(dir, "clients")
	if err != nil {
		t.Fatal(err)
	}
	tc, reload, err := LoadReloadingTLS(filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"), caFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	kept, base := startAuthServer(t, Config{Listen: "127.0.0.1:0", Source: healthyCluster(), Gatherer: prometheus.NewRegistry(),
		TLS: tc, Token: "s3cret"}, serverCA, nil)
	if got := status(t, kept, base+"/partitions", "s3cret"); got != http.StatusOK {
		t.Fatalf("/partitions with the token: %d", got)
	}

	leaf, err := newClients.Issue("operator")
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := leaf.TLS()
	if err != nil {
		t.Fatal(err)
	}
	var served *big.Int
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: serverCA.Pool(), Certificates: []tls.Certificate{clientCert},
			VerifyConnection: func(cs tls.ConnectionState) error {
				served = cs.PeerCertificates[0].SerialNumber
				return nil
			}}}}
	if got := status(t, fresh, base+"/partitions", ""); got != http.StatusUnauthorized {
		t.Fatalf("a certificate of a CA not configured: %d, want 401", got)
	}
	if served.Cmp(first) != 0 {
		t.Fatalf("served serial %v, want %v", served, first)
	}

	second := issue()
	if err := os.WriteFile(caFile, newClients.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reload(); err != nil {
		t.Fatal(err)
	}
	if got := status(t, fresh, base+"/partitions", ""); got != http.StatusOK {
		t.Errorf("a certificate of the new client CA after reload: %d, want 200", got)
	}
	if served.Cmp(second) != 0 {
		t.Errorf("after reload served serial %v, want %v", served, second)
	}
	if got := status(t, kept, base+"/partitions", "s3cret"); got != http.StatusOK {
		t.Errorf("the connection from before the reload: %d, want 200", got)
	}

	// A broken file keeps what works.
	if err := os.WriteFile(filepath.Join(dir, "admin.crt"), []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := reload(); err == nil {
		t.Fatal("a broken certificate reloaded")
	}
	if got := status(t, fresh, base+"/health", ""); got != http.StatusOK || served.Cmp(second) != 0 {
		t.Errorf("after a failed reload: %d, serial %v, want 200 and %v", got, served, second)
	}
}
