package compat

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kcatSecure runs kcat against the SASL_SSL listener with the given
// password and CA file; it returns stdout, stderr and the error.
func (sc *secureCluster) kcatSecure(timeout time.Duration, pass, ca string, stdin []byte, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	base := []string{"-b", strings.Join(sc.secure, ","), "-X", "security.protocol=SASL_SSL",
		"-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=" + saslUser, "-X", "sasl.password=" + pass,
		"-X", "ssl.ca.location=" + ca}
	cmd := exec.CommandContext(ctx, kcatBin, append(base, args...)...)
	cmd.WaitDelay = 2 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return so.String(), se.String(), err
}

// TestSASLKcat: kcat (librdkafka) over SASL_SSL with SCRAM-SHA-512 lists
// metadata (the SASL_SSL addresses), produces and consumes in a group; a
// wrong password and an untrusted CA fail.
func TestSASLKcat(t *testing.T) {
	needKcat(t)
	sc := startSecureCluster(t, 3)
	ca := filepath.Join(sc.certs, "ca.pem")
	createTopic(t, sc.cluster, "sasl-kcat", 3, 3, nil)
	out, se, err := sc.kcatSecure(30*time.Second, saslPass, ca, nil, "-L", "-J")
	if err != nil {
		t.Fatalf("kcat -L: %v\n%s", err, se)
	}
	for _, a := range sc.secure {
		if !strings.Contains(out, fmt.Sprintf("%q", a)) {
			t.Fatalf("metadata does not list the SASL_SSL address %s:\n%s", a, out)
		}
	}
	const n = 200
	var in bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&in, "%s\n", testValue("kc", i))
	}
	if _, se, err := sc.kcatSecure(30*time.Second, saslPass, ca, in.Bytes(), "-P", "-t", "sasl-kcat", "-X", "acks=all"); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, se)
	}
	out, se, err = sc.kcatSecure(60*time.Second, saslPass, ca, nil, "-G", "sasl-kcat-g", "-c", fmt.Sprint(n),
		"-X", "auto.offset.reset=earliest", "-f", "%s\n", "sasl-kcat")
	if err != nil {
		t.Fatalf("kcat -G: %v\n%s", err, se)
	}
	if got := strings.Count(out, "\n"); got != n {
		t.Fatalf("group consumed %d of %d", got, n)
	}
	_, se, _ = sc.kcatSecure(6*time.Second, "nope", ca, nil, "-L", "-m", "3")
	if !strings.Contains(se, "Authentication failed") && !strings.Contains(se, "SASL authentication error") {
		t.Fatalf("wrong password: kcat said\n%s", se)
	}
	other, err := newCA(t)
	if err != nil {
		t.Fatal(err)
	}
	_, se, _ = sc.kcatSecure(6*time.Second, saslPass, other, nil, "-L", "-m", "3")
	if !strings.Contains(se, "certificate verify failed") {
		t.Fatalf("untrusted CA: kcat said\n%s", se)
	}
}
