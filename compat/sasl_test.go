package compat

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/chronik-dev/chronik/internal/certgen"
)

// Test users of the secure cluster (the users file).
const (
	saslUser = "alice"
	saslPass = "alice-secret"
)

// secureCluster is a cluster whose nodes also serve a SASL_SSL listener
// ("SECURE") and a SASL_PLAINTEXT one ("SASL"), with certificates from a
// fresh CA and the users of a users file.
type secureCluster struct {
	*cluster
	certs     string // ca.pem, node.pem/key
	secure    []string
	saslPlain []string
	ca        *x509.CertPool
	caSigner  *certgen.CA
}

func startSecureCluster(t *testing.T, n int, args ...string) *secureCluster {
	t.Helper()
	sc := &secureCluster{certs: t.TempDir()}
	ca, err := certgen.NewCA("chronik-test-ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(sc.certs, "ca"); err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Sign(certgen.Options{CommonName: "chronik-node", Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Write(sc.certs, "node"); err != nil {
		t.Fatal(err)
	}
	sc.ca = x509.NewCertPool()
	sc.ca.AddCert(ca.Cert)
	sc.caSigner = ca
	users := filepath.Join(sc.certs, "users.toml")
	if err := os.WriteFile(users, []byte(fmt.Sprintf("[[users]]\nname = %q\npassword = %q\n", saslUser, saslPass)), 0o600); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 2*n)
	for i := 0; i < n; i++ {
		sc.secure = append(sc.secure, ports[2*i])
		sc.saslPlain = append(sc.saslPlain, ports[2*i+1])
	}
	nodeTOML := func(id int) string {
		return fmt.Sprintf("[[nodes.listeners]]\nname = \"SECURE\"\nprotocol = \"SASL_SSL\"\nadvertised = %q\n"+
			"[[nodes.listeners]]\nname = \"SASL\"\nprotocol = \"SASL_PLAINTEXT\"\nadvertised = %q\n",
			sc.secure[id-1], sc.saslPlain[id-1])
	}
	base := []string{"--tls-cert", filepath.Join(sc.certs, "node.pem"), "--tls-key", filepath.Join(sc.certs, "node.key"),
		"--tls-ca", filepath.Join(sc.certs, "ca.pem"), "--tls-client-auth", "request", "--sasl-users-file", users}
	sc.cluster = startCluster(t, n, withNodeTOML(nodeTOML), withArgs(append(base, args...)...))
	return sc
}

func (sc *secureCluster) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: sc.ca, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

func scram512(user, pass string) sasl.Mechanism {
	return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
}

// secureClient is a franz-go client of the SASL_SSL listener.
func (sc *secureCluster) secureClient(t *testing.T, m sasl.Mechanism, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(sc.tlsConfig()), kgo.SASL(m),
		kgo.RequiredAcks(kgo.AllISRAcks())}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestSASLFranzSCRAM512: over SASL_SSL with SCRAM-SHA-512, franz-go
// creates a topic, produces, consumes in a group and commits; Metadata
// tells it the SASL_SSL addresses, not the plaintext ones.
func TestSASLFranzSCRAM512(t *testing.T) {
	sc := startSecureCluster(t, 3)
	cl := sc.secureClient(t, scram512(saslUser, saslPass))
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	meta, err := adm.BrokerMetadata(ctx)
	if err != nil {
		t.Fatalf("metadata over SASL_SSL: %v", err)
	}
	for _, b := range meta.Brokers {
		addr := net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		if addr != sc.secure[b.NodeID-1] {
			t.Fatalf("broker %d advertised as %s on the SASL_SSL listener, want %s", b.NodeID, addr, sc.secure[b.NodeID-1])
		}
	}
	resp, err := adm.CreateTopic(ctx, 3, 3, nil, "secure")
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	const n = 2000
	acked := produceAll(t, cl, "secure", n, "sec")
	if len(acked) != n {
		t.Fatalf("acked %d of %d", len(acked), n)
	}
	member := sc.secureClient(t, scram512(saslUser, saslPass), kgo.ConsumeTopics("secure"), kgo.ConsumerGroup("secure-g"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	seen := map[string]bool{}
	for len(seen) < n && ctx.Err() == nil {
		fs := member.PollFetches(ctx)
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		for _, r := range fs.Records() {
			if _, ok := acked[string(r.Value)]; !ok {
				t.Fatalf("consumed a record never produced: %q", r.Value)
			}
			seen[string(r.Value)] = true
		}
	}
	if len(seen) != n {
		t.Fatalf("consumed %d of %d", len(seen), n)
	}
	if err := member.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	offs, err := adm.FetchOffsets(ctx, "secure-g")
	if err != nil || offs.Error() != nil {
		t.Fatalf("fetch offsets: %v %v", err, offs.Error())
	}
	var committed int64
	offs.Each(func(o kadm.OffsetResponse) { committed += o.At })
	if committed != n {
		t.Fatalf("group committed %d records in all, want %d", committed, n)
	}
}

// TestSASLFranzMechanisms: PLAIN and SCRAM-SHA-256 log in too, over
// SASL_PLAINTEXT as well as SASL_SSL.
func TestSASLFranzMechanisms(t *testing.T) {
	sc := startSecureCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mechs := map[string]sasl.Mechanism{
		"PLAIN":         plain.Auth{User: saslUser, Pass: saslPass}.AsMechanism(),
		"SCRAM-SHA-256": scram.Auth{User: saslUser, Pass: saslPass}.AsSha256Mechanism(),
		"SCRAM-SHA-512": scram512(saslUser, saslPass),
	}
	for name, m := range mechs {
		for _, tlsOn := range []bool{true, false} {
			opts := []kgo.Opt{kgo.SeedBrokers(sc.saslPlain...), kgo.SASL(m)}
			if tlsOn {
				opts = []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.SASL(m), kgo.DialTLSConfig(sc.tlsConfig())}
			}
			cl, err := kgo.NewClient(opts...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kadm.NewClient(cl).ListTopics(ctx); err != nil {
				t.Errorf("%s (tls %v): %v", name, tlsOn, err)
			}
			cl.Close()
		}
	}
}

// loginErr is the error of a first request of a fresh client.
func loginErr(t *testing.T, opts ...kgo.Opt) error {
	t.Helper()
	cl, err := kgo.NewClient(append(opts, kgo.RequestRetries(0), kgo.RetryTimeout(time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = kadm.NewClient(cl).ListTopics(ctx)
	return err
}

// TestSASLFranzRefused: a wrong password, a mechanism not enabled, a
// client without TLS, a client that does not trust the CA and one that
// skips SASL all fail, each with its own error.
func TestSASLFranzRefused(t *testing.T) {
	sc := startSecureCluster(t, 1, "--sasl-mechanisms", "SCRAM-SHA-512,PLAIN")
	tc := sc.tlsConfig()
	old, err := sc.caSigner.Sign(certgen.Options{CommonName: "expired", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	expired := sc.tlsConfig()
	expired.Certificates = []tls.Certificate{{Certificate: [][]byte{old.Cert.Raw}, PrivateKey: old.Key}}
	cases := []struct {
		name  string
		opts  []kgo.Opt
		check func(error) bool
	}{
		{"wrong password", []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(tc), kgo.SASL(scram512(saslUser, "nope"))},
			func(err error) bool { return errors.Is(err, kerr.SaslAuthenticationFailed) }},
		{"unknown user", []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(tc), kgo.SASL(scram512("mallory", saslPass))},
			func(err error) bool { return errors.Is(err, kerr.SaslAuthenticationFailed) }},
		{"wrong password, PLAIN", []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(tc), kgo.SASL(plain.Auth{User: saslUser, Pass: "nope"}.AsMechanism())},
			func(err error) bool { return errors.Is(err, kerr.SaslAuthenticationFailed) }},
		{"mechanism not enabled", []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(tc), kgo.SASL(scram.Auth{User: saslUser, Pass: saslPass}.AsSha256Mechanism())},
			func(err error) bool { return errors.Is(err, kerr.UnsupportedSaslMechanism) }},
		{"no TLS", []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.SASL(scram512(saslUser, saslPass))},
			func(err error) bool { return err != nil }},
		{"untrusted CA", []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(&tls.Config{ServerName: "127.0.0.1"}), kgo.SASL(scram512(saslUser, saslPass))},
			func(err error) bool { var ua x509.UnknownAuthorityError; return errors.As(err, &ua) }},
		{"expired client certificate", []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(expired), kgo.SASL(scram512(saslUser, saslPass))},
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "certificate") }},
		{"no SASL", []kgo.Opt{kgo.SeedBrokers(sc.saslPlain...)},
			func(err error) bool { return err != nil }},
	}
	for _, tc := range cases {
		err := loginErr(t, tc.opts...)
		if !tc.check(err) {
			t.Errorf("%s: got error %v", tc.name, err)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	log := sc.node(1).log.String()
	if strings.Contains(log, saslPass) || strings.Contains(log, "nope") {
		t.Fatalf("a password appears in the node's log")
	}
	if !strings.Contains(log, "certificate has expired") {
		t.Fatalf("the expired client certificate was not logged as such")
	}
	if !strings.Contains(log, "sasl authentication failed") {
		t.Fatalf("failed logins were not logged")
	}
	_, metrics, err := sc.get(1, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"sasl_failed", "tls_handshake", "unauthenticated"} {
		if !strings.Contains(metrics, `chronik_bad_requests_total{reason="`+r+`"}`) {
			t.Errorf("no chronik_bad_requests_total{reason=%q} in /metrics", r)
		}
	}
}

// TestSASLFranzUserAdmin: SCRAM users made with kadm's
// AlterUserSCRAMs on one node log in on every node (the credentials are
// replicated metadata), Describe lists them without secrets, and a
// deletion, of a bootstrap user too, takes effect everywhere.
func TestSASLFranzUserAdmin(t *testing.T) {
	sc := startSecureCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := sc.secureClient(t, scram512(saslUser, saslPass), kgo.SeedBrokers(sc.secure[0]))
	adm := kadm.NewClient(cl)
	alt, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{
		{User: "bob", Mechanism: kadm.ScramSha512, Iterations: 4096, Password: "bob-secret"},
	})
	if err != nil || alt["bob"].Err != nil {
		t.Fatalf("upsert bob: %v %+v", err, alt)
	}
	login := func(node int, user, pass string) error {
		return loginErr(t, kgo.SeedBrokers(sc.secure[node]), kgo.DialTLSConfig(sc.tlsConfig()), kgo.SASL(scram512(user, pass)))
	}
	for node := range sc.secure {
		waitFor(t, 10*time.Second, fmt.Sprintf("bob logs in on node %d", node+1), func() bool { return login(node, "bob", "bob-secret") == nil })
		if err := login(node, "bob", "wrong"); !errors.Is(err, kerr.SaslAuthenticationFailed) {
			t.Fatalf("bob with a wrong password on node %d: %v", node+1, err)
		}
	}
	desc, err := adm.DescribeUserSCRAMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(desc) != 2 || len(desc["bob"].CredInfos) != 1 || desc["bob"].CredInfos[0].Iterations != 4096 ||
		len(desc[saslUser].CredInfos) != 2 {
		t.Fatalf("describe all: %+v", desc)
	}
	desc, err = adm.DescribeUserSCRAMs(ctx, "nobody")
	if err != nil || !errors.Is(desc["nobody"].Err, kerr.ResourceNotFound) {
		t.Fatalf("describe an unknown user: %v %+v", err, desc)
	}
	alt, err = adm.AlterUserSCRAMs(ctx, []kadm.DeleteSCRAM{{User: saslUser, Mechanism: kadm.ScramSha512}, {User: "nobody", Mechanism: kadm.ScramSha256}}, nil)
	if err != nil || alt[saslUser].Err != nil || !errors.Is(alt["nobody"].Err, kerr.ResourceNotFound) {
		t.Fatalf("deletions: %v %+v", err, alt)
	}
	for node := range sc.secure {
		waitFor(t, 10*time.Second, fmt.Sprintf("alice's SCRAM-SHA-512 refused on node %d", node+1), func() bool {
			return errors.Is(login(node, saslUser, saslPass), kerr.SaslAuthenticationFailed)
		})
	}
	// Her SCRAM-SHA-256 credential is untouched.
	if err := loginErr(t, kgo.SeedBrokers(sc.secure[2]), kgo.DialTLSConfig(sc.tlsConfig()),
		kgo.SASL(scram.Auth{User: saslUser, Pass: saslPass}.AsSha256Mechanism())); err != nil {
		t.Fatalf("alice with SCRAM-SHA-256 after her SHA-512 credential went: %v", err)
	}
	// A restarted node still knows bob from its metadata log.
	sc.stop(2, 20*time.Second)
	sc.start(2)
	waitFor(t, 30*time.Second, "bob logs in on restarted node 2", func() bool { return login(1, "bob", "bob-secret") == nil })
}

// TestSASLUsersCLI: `chronik-server users` sets, lists and deletes a user
// over the SASL_SSL listener; the password goes in on stdin.
func TestSASLUsersCLI(t *testing.T) {
	sc := startSecureCluster(t, 1)
	run := func(stdin string, args ...string) string {
		t.Helper()
		base := []string{"--bootstrap", sc.secure[0], "--tls-ca", filepath.Join(sc.certs, "ca.pem"),
			"--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", saslUser}
		cmd := exec.Command(serverBin, append([]string{"users", args[0]}, append(base, args[1:]...)...)...)
		cmd.Env = append(os.Environ(), "CHRONIK_SASL_PASSWORD="+saslPass)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("users %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("carol-secret\n", "set", "--mechanism", "SCRAM-SHA-256,SCRAM-SHA-512", "carol")
	if out := run("", "list"); !strings.Contains(out, "carol\tSCRAM-SHA-256(8192),SCRAM-SHA-512(8192)") {
		t.Fatalf("list after set:\n%s", out)
	}
	if err := loginErr(t, kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(sc.tlsConfig()), kgo.SASL(scram512("carol", "carol-secret"))); err != nil {
		t.Fatalf("carol's login: %v", err)
	}
	run("", "delete", "carol")
	if out := run("", "list"); strings.Contains(out, "carol") {
		t.Fatalf("list after delete:\n%s", out)
	}
}

// newCA writes a CA certificate nothing was signed with and returns its path.
func newCA(t *testing.T) (string, error) {
	ca, err := certgen.NewCA("some-other-ca", time.Hour)
	if err != nil {
		return "", err
	}
	dir := t.TempDir()
	return filepath.Join(dir, "other.pem"), ca.Write(dir, "other")
}

// TestSASLThroughputRough compares franz-go produce throughput over the
// plaintext listener and the SASL_SSL one of the same single node,
// alternating rounds. It is a rough figure on a shared machine, logged
// only; run it with CHRONIK_TLS_BENCH=1.
func TestSASLThroughputRough(t *testing.T) {
	if os.Getenv("CHRONIK_TLS_BENCH") != "1" {
		t.Skip("set CHRONIK_TLS_BENCH=1 to measure")
	}
	sc := startSecureCluster(t, 1)
	createTopic(t, sc.cluster, "tput", 3, 1, nil)
	opts := []kgo.Opt{kgo.DefaultProduceTopic("tput"), kgo.ProducerLinger(2 * time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression())} // the bytes cross the socket as they are
	plainCl := newFranz(t, sc.cluster, opts...)
	tlsCl := sc.secureClient(t, scram512(saslUser, saslPass), opts...)
	const n, size = 50000, 1000
	val := make([]byte, size)
	rand.Read(val)
	round := func(cl *kgo.Client) float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		done := make(chan error, n)
		for i := 0; i < n; i++ {
			cl.Produce(ctx, &kgo.Record{Value: val}, func(_ *kgo.Record, err error) { done <- err })
		}
		for i := 0; i < n; i++ {
			if err := <-done; err != nil {
				t.Fatalf("produce: %v", err)
			}
		}
		return float64(n*size) / time.Since(start).Seconds() / (1 << 20)
	}
	round(plainCl)
	round(tlsCl) // warm up both
	var sumP, sumT float64
	for r := 1; r <= 3; r++ {
		p, s := round(plainCl), round(tlsCl)
		sumP, sumT = sumP+p, sumT+s
		t.Logf("round %d: plaintext %.1f MiB/s, SASL_SSL %.1f MiB/s (%.2fx)", r, p, s, s/p)
	}
	t.Logf("mean: plaintext %.1f MiB/s, SASL_SSL %.1f MiB/s, ratio %.2f (rough: 2 shared cores, client and node on one machine)", sumP/3, sumT/3, sumT/sumP)
}

// TestSASLRollingRestartUnderLoad rolls a three-node cluster whose clients
// all use SASL_SSL with SCRAM-SHA-512: continuous idempotent acks=all
// produce and a group consumer over SASL_SSL; nothing may be lost or
// duplicated and no produce may fail. It logs the rolling-restart figures.
func TestSASLRollingRestartUnderLoad(t *testing.T) {
	sc := startSecureCluster(t, 3)
	createTopic(t, sc.cluster, "sroll", 12, 3, nil)
	sc.waitAllHealthy(30 * time.Second)
	secure := []kgo.Opt{kgo.SeedBrokers(sc.secure...), kgo.DialTLSConfig(sc.tlsConfig()), kgo.SASL(scram512(saslUser, saslPass))}
	l := startLoader(t, sc.cluster, "sroll", 2000, secure...)
	member := sc.secureClient(t, scram512(saslUser, saslPass), kgo.ConsumeTopics("sroll"), kgo.ConsumerGroup("sroll-g"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var mu sync.Mutex
	seen := map[string]bool{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			fs := member.PollFetches(ctx)
			cancel()
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
			mu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()
	l.waitAcks(2000, 30*time.Second)
	rollStart := time.Now()
	for _, nd := range sc.nodes {
		stopStart := time.Now()
		sc.stop(nd.id, 30*time.Second)
		stopped := time.Since(stopStart)
		restart := time.Now()
		sc.start(nd.id)
		sc.waitReady(30 * time.Second)
		sc.waitAllHealthy(30 * time.Second)
		t.Logf("node %d: SIGTERM to exit %v, every node healthy %v after start", nd.id,
			stopped.Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
	}
	t.Logf("rolled 3 nodes in %v", time.Since(rollStart).Round(time.Millisecond))
	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	stalls := l.stallsBetween(rollStart, time.Now())
	t.Logf("longest gap between acks per partition during the roll: %s", stallSummary(stalls))
	// As in TestRollingRestartUnderLoad: a leader hint is followed in
	// milliseconds, but only if it names the SASL_SSL address; a plaintext
	// one costs the client a metadata refresh (it measured 4 s).
	checkStalls(t, stalls, time.Second*raceSlack, " during the roll")
	l.checkDelivered(t, sc.cluster, "the roll")
	acked := l.ackedCount()
	waitFor(t, 60*time.Second, "the SASL_SSL group to read everything", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= acked
	})
}
