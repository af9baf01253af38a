package compat

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSASLPython: confluent-kafka (Debian's, librdkafka 2.0) over SASL_SSL
// with SCRAM-SHA-512 creates a topic, produces, consumes in a group and
// commits; a wrong password and an untrusted CA are reported as such.
func TestSASLPython(t *testing.T) {
	needPython(t)
	sc := startSecureCluster(t, 3)
	brokers := strings.Join(sc.secure, ",")
	ca := filepath.Join(sc.certs, "ca.pem")
	if out := runPython(t, 120*time.Second, "python_sasl.py", "ok", brokers, ca, saslUser, saslPass, "sasl-py", "300", "sasl-py-g"); !strings.Contains(out, "ok") {
		t.Fatalf("python: %s", out)
	}
	out := runPython(t, 30*time.Second, "python_sasl.py", "refused", brokers, ca, saslUser, "nope")
	if !strings.Contains(out, "Authentication failed") {
		t.Fatalf("wrong password reported as:\n%s", out)
	}
	other, err := newCA(t)
	if err != nil {
		t.Fatal(err)
	}
	out = runPython(t, 30*time.Second, "python_sasl.py", "refused", brokers, other, saslUser, saslPass)
	if !strings.Contains(out, "certificate verify failed") {
		t.Fatalf("untrusted CA reported as:\n%s", out)
	}
}
