package compat

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chronik-dev/chronik/internal/testpki"
)

func adminStatus(t *testing.T, client *http.Client, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// cli runs chronik-server with args and env and returns its exit error.
func cli(t *testing.T, timeout time.Duration, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, serverBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func TestAdminToken(t *testing.T) {
	const token = "compat-admin-token"
	c := startCluster(t, 3, withArgs("--admin-token", token))
	client := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + c.node(1).admin
	for _, p := range []string{"/health", "/ready"} {
		if got := adminStatus(t, client, base+p, ""); got != http.StatusOK {
			t.Errorf("%s without a token: %d, want 200", p, got)
		}
	}
	for _, p := range []string{"/partitions", "/nodes", "/restart-safe", "/metrics"} {
		if got := adminStatus(t, client, base+p, ""); got != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", p, got)
		}
		if got := adminStatus(t, client, base+p, token+"x"); got != http.StatusUnauthorized {
			t.Errorf("%s with a wrong token: %d, want 401", p, got)
		}
		if got := adminStatus(t, client, base+p, token); got != http.StatusOK {
			t.Errorf("%s with the token: %d, want 200", p, got)
		}
	}
	if got := adminStatus(t, client, base+"/debug/pprof/", token); got != http.StatusNotFound {
		t.Errorf("pprof not enabled: %d, want 404", got)
	}

	// The CLI: a protected endpoint needs the token, by flag or env var.
	admin := c.node(1).admin
	if out, err := cli(t, 10*time.Second, nil, "health", "--admin", admin, "--endpoint", "/partitions", "-q"); err == nil {
		t.Errorf("health on /partitions without a token succeeded: %s", out)
	}
	if out, err := cli(t, 10*time.Second, nil, "health", "--admin", admin, "--endpoint", "/partitions", "--token", token, "-q"); err != nil {
		t.Errorf("health --token: %v %s", err, out)
	}
	if out, err := cli(t, 10*time.Second, []string{"CHRONIK_ADMIN_TOKEN=" + token}, "health", "--admin", admin, "--endpoint", "/restart-safe", "-q"); err != nil {
		t.Errorf("health with CHRONIK_ADMIN_TOKEN: %v %s", err, out)
	}

	// rolling-restart of node 1 with the token: it SIGTERMs the node, the
	// test plays the supervisor and starts it again.
	c.waitAllHealthy(30 * time.Second)
	done := make(chan error, 1)
	var out string
	go func() {
		var err error
		out, err = cli(t, 90*time.Second, []string{"CHRONIK_ADMIN_TOKEN=" + token}, "rolling-restart",
			"--cluster-config", c.cfg, "--nodes", "1", "--safe-timeout", "30s", "--shutdown-timeout", "30s", "--rejoin-timeout", "40s")
		done <- err
	}()
	select {
	case <-c.node(1).exited:
	case err := <-done:
		t.Fatalf("rolling-restart ended before node 1 stopped: %v\n%s", err, out)
	case <-time.After(60 * time.Second):
		t.Fatal("rolling-restart did not stop node 1")
	}
	c.start(1)
	if err := <-done; err != nil {
		t.Fatalf("rolling-restart with the token: %v\n%s", err, out)
	}
	t.Logf("rolling-restart:\n%s", out)
}

func TestAdminTLSAndPprof(t *testing.T) {
	ca, err := testpki.NewCA("admin-ca")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leaf, err := ca.Issue("chronik-admin", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := leaf.WriteFiles(dir, "admin")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	cfg := filepath.Join(dir, "cluster.toml")
	toml := fmt.Sprintf("cluster_id = \"compat\"\n[[nodes]]\nid = 1\nkafka = %q\nraft = %q\nadmin = %q\n", ports[0], ports[1], ports[2])
	if err := os.WriteFile(cfg, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &lockedBuffer{}
	cmd := exec.Command(serverBin, "--node-id", "1", "--cluster-config", cfg, "--data-dir", filepath.Join(dir, "data"),
		"--admin-tls-cert", certFile, "--admin-tls-key", keyFile, "--admin-token-file", writeToken(t, dir, "file-token\n"), "--admin-pprof")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("node log:\n%s", log.tail(4000))
		}
	})
	// Wait for readiness through the CLI over HTTPS.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := cli(t, 10*time.Second, nil, "health", "--admin", ports[2], "--admin-ca", caFile, "--endpoint", "/ready", "-q")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not ready over HTTPS: %v %s", err, out)
		}
		select {
		case <-exited:
			t.Fatal("node exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	base := "https://" + ports[2]
	if got := adminStatus(t, client, base+"/partitions", ""); got != http.StatusUnauthorized {
		t.Errorf("/partitions without a token: %d, want 401", got)
	}
	if got := adminStatus(t, client, base+"/partitions", "file-token"); got != http.StatusOK {
		t.Errorf("/partitions with the token from the file: %d, want 200", got)
	}
	if got := adminStatus(t, client, base+"/debug/pprof/", "file-token"); got != http.StatusOK {
		t.Errorf("pprof enabled: %d, want 200", got)
	}
	if got := adminStatus(t, client, base+"/debug/pprof/", ""); got != http.StatusUnauthorized {
		t.Errorf("pprof without a token: %d, want 401", got)
	}
	// Plain HTTP gets no admin answer from the HTTPS port.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + ports[2] + "/ready"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP served by the HTTPS admin port")
		}
	}
	if out, err := cli(t, 10*time.Second, nil, "health", "--admin", ports[2], "--admin-ca", caFile, "--endpoint", "/partitions", "--token-file", writeToken(t, dir, "file-token")); err != nil {
		t.Errorf("health --admin-ca --token-file: %v %s", err, out)
	}
}

func writeToken(t *testing.T, dir, tok string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "token")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(tok); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}
