// Package compat holds black-box tests: they build the real chronik-server
// binary, start it as separate processes on loopback ports, and drive it
// with real Kafka clients (franz-go, sarama, kafka-go, kcat, and Python's
// confluent-kafka).
package compat

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var serverBin string

// raceBuild: with CHRONIK_RACE=1 the tests build and run chronik-server
// with the race detector (go build -race, which needs cgo). Every node's
// output is scanned for race reports either way (see raceReports), so a
// CHRONIK_BIN built with -race is checked too.
var raceBuild = os.Getenv("CHRONIK_RACE") == "1"

// raceSlack scales the latency bounds of the tests that run against a race
// build, which runs several times slower (and, in make test, on a machine
// busy with other tests); the ordinary run keeps the bounds as written.
var raceSlack = func() time.Duration {
	if raceBuild {
		return 3
	}
	return 1
}()

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	serverBin = os.Getenv("CHRONIK_BIN")
	if serverBin == "" {
		dir, err := os.MkdirTemp("", "chronik-compat-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		serverBin = filepath.Join(dir, "chronik-server")
		args := []string{"build", "-o", serverBin}
		if raceBuild {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "../cmd/chronik-server")...)
		if raceBuild {
			cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		}
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building chronik-server:", err)
			return 1
		}
	}
	return m.Run()
}

// raceMark opens every report of Go's race detector.
const raceMark = "WARNING: DATA RACE"

// raceReports returns the race detector reports in a node's output, each
// from its mark to the detector's closing line of equals signs.
func raceReports(out string) []string {
	var reps []string
	for {
		i := strings.Index(out, raceMark)
		if i < 0 {
			return reps
		}
		out = out[i:]
		end := strings.Index(out, "\n==================")
		if end < 0 {
			end = len(out)
		}
		reps = append(reps, out[:end])
		out = out[end:]
		if len(out) > 0 {
			out = out[1:]
		}
	}
}

// checkRaces fails the test with every race report a node printed since
// the last check (a restarted node keeps its output buffer, so each
// report is printed once).
func (c *cluster) checkRaces(nd *node) {
	c.t.Helper()
	out := nd.log.String()
	reps := raceReports(out[min(nd.raceChecked, len(out)):])
	nd.raceChecked = len(out)
	for i, r := range reps {
		c.t.Errorf("node %d: race detector report %d of %d:\n%s", nd.id, i+1, len(reps), r)
	}
}

// node is one chronik-server process.
type node struct {
	id                  int
	kafka, raft, admin  string
	dataDir             string
	cmd                 *exec.Cmd
	log                 *lockedBuffer
	exited              chan struct{}
	exitErr             error
	extraArgs, extraEnv []string
	cfg                 string // this node's own cluster config, when proxies are used
	raceChecked         int    // how much of log checkRaces has read
	bin                 string // the server binary, when not serverBin (upgrades)
}

// cluster is a set of nodes sharing one cluster.toml.
type cluster struct {
	t       testing.TB
	dir     string
	cfg     string
	nodes   []*node
	proxies map[[2]int]*netProxy // (from, to) -> proxy
}

type clusterOpt func(*clusterOptions)

type clusterOptions struct {
	args     []string
	nodeArgs func(id int) []string
	toml     string
	proxies  bool
	nodeTOML func(id int) string
	bin      string
}

// withRaftProxies routes every node-to-node Raft connection through a
// proxy the test controls, so it can cut nodes off from each other (see
// isolate) while clients still reach every node.
func withRaftProxies() clusterOpt {
	return func(o *clusterOptions) { o.proxies = true }
}

// withArgs passes extra flags to every node.
func withArgs(args ...string) clusterOpt {
	return func(o *clusterOptions) { o.args = append(o.args, args...) }
}

// withNodeArgs passes extra flags that differ per node (certificates).
func withNodeArgs(f func(id int) []string) clusterOpt {
	return func(o *clusterOptions) { o.nodeArgs = f }
}

// withBinary starts every node from bin instead of the binary under test
// (a previous release, for upgrades); a node's bin can be changed later.
func withBinary(bin string) clusterOpt {
	return func(o *clusterOptions) { o.bin = bin }
}

// withTOML adds top-level keys to cluster.toml.
func withTOML(s string) clusterOpt {
	return func(o *clusterOptions) { o.toml += s + "\n" }
}

// withNodeTOML adds f(id) to each [[nodes]] entry (listeners, say).
func withNodeTOML(f func(id int) string) clusterOpt {
	return func(o *clusterOptions) { o.nodeTOML = f }
}

// freePorts reserves n loopback ports below the kernel's ephemeral range
// (32768 and up on Linux), so that no client socket of a test can be given
// a node's port while that node restarts; a port bound by anything else
// right now is skipped. The listeners close before the nodes bind.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	const lo, hi = 20000, 32768
	var out []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for tries := 0; len(out) < n; tries++ {
		if tries > 10*n+100 {
			t.Fatalf("no free loopback port in [%d, %d) after %d tries", lo, hi, tries)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
		if err != nil {
			continue
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out
}

// startCluster starts n nodes and waits until they serve.
func startCluster(t testing.TB, n int, opts ...clusterOpt) *cluster {
	t.Helper()
	var o clusterOptions
	for _, f := range opts {
		f(&o)
	}
	c := &cluster{t: t, dir: t.TempDir()}
	ports := freePorts(t, 3*n)
	var sb strings.Builder
	sb.WriteString("cluster_id = \"compat\"\n")
	sb.WriteString(o.toml)
	for i := 0; i < n; i++ {
		nd := &node{id: i + 1, kafka: ports[3*i], raft: ports[3*i+1], admin: ports[3*i+2],
			dataDir: filepath.Join(c.dir, fmt.Sprintf("node-%d", i+1)), extraArgs: o.args, bin: o.bin}
		if o.nodeArgs != nil {
			nd.extraArgs = append(append([]string(nil), o.args...), o.nodeArgs(nd.id)...)
		}
		c.nodes = append(c.nodes, nd)
		fmt.Fprintf(&sb, "\n[[nodes]]\nid = %d\nkafka = %q\nraft = %q\nadmin = %q\n", nd.id, nd.kafka, nd.raft, nd.admin)
		if o.nodeTOML != nil {
			sb.WriteString(o.nodeTOML(nd.id))
		}
	}
	c.cfg = filepath.Join(c.dir, "cluster.toml")
	if err := os.WriteFile(c.cfg, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if o.proxies {
		c.setupProxies(o.toml)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			c.kill(nd.id)
			c.checkRaces(nd)
		}
		if dir := os.Getenv("CHRONIK_TEST_LOG_DIR"); dir != "" {
			for _, nd := range c.nodes {
				os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-node-%d.log", strings.ReplaceAll(t.Name(), "/", "_"), nd.id)), []byte(nd.log.String()), 0o644)
			}
		}
		if t.Failed() {
			for _, nd := range c.nodes {
				t.Logf("---- node %d log (tail) ----\n%s", nd.id, nd.log.tail(6000))
			}
		}
	})
	for _, nd := range c.nodes {
		c.start(nd.id)
	}
	c.waitReady(30 * time.Second)
	return c
}

func (c *cluster) node(id int) *node { return c.nodes[id-1] }

// bootstrap lists the Kafka addresses of the running nodes.
func (c *cluster) bootstrap() []string {
	var out []string
	for _, nd := range c.nodes {
		if nd.running() {
			out = append(out, nd.kafka)
		}
	}
	return out
}

func (nd *node) running() bool {
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

// start launches node id (again).
func (c *cluster) start(id int) {
	c.t.Helper()
	nd := c.node(id)
	if nd.log == nil {
		nd.log = &lockedBuffer{}
	}
	cfg := c.cfg
	if nd.cfg != "" {
		cfg = nd.cfg
	}
	level := "info"
	if l := os.Getenv("CHRONIK_TEST_NODE_LOG_LEVEL"); l != "" {
		level = l // e.g. debug, with CHRONIK_TEST_LOG_DIR to keep the logs
	}
	args := append([]string{"--node-id", fmt.Sprint(id), "--cluster-config", cfg, "--data-dir", nd.dataDir,
		"--log-level", level}, nd.extraArgs...)
	bin := serverBin
	if nd.bin != "" {
		bin = nd.bin
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), nd.extraEnv...)
	cmd.Stdout = nd.log
	cmd.Stderr = nd.log
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	nd.cmd = cmd
	nd.exited = make(chan struct{})
	go func() {
		nd.exitErr = cmd.Wait()
		close(nd.exited)
	}()
}

// kill stops node id with SIGKILL (a crash).
func (c *cluster) kill(id int) {
	nd := c.node(id)
	if !nd.running() {
		return
	}
	nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (c *cluster) stop(id int, timeout time.Duration) {
	c.t.Helper()
	nd := c.node(id)
	if !nd.running() {
		return
	}
	nd.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-nd.exited:
		// A race-enabled binary exits with status 66 after a report: show
		// the reports rather than only the status.
		c.checkRaces(nd)
		if nd.exitErr != nil {
			c.t.Fatalf("node %d exited with %v after SIGTERM\n%s", id, nd.exitErr, nd.log.tail(4000))
		}
	case <-time.After(timeout):
		c.t.Fatalf("node %d did not stop within %v after SIGTERM\n%s", id, timeout, nd.log.tail(4000))
	}
}

// get fetches an admin endpoint of node id.
func (c *cluster) get(id int, path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.node(id).admin+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// waitReady waits until every running node answers /ready.
func (c *cluster) waitReady(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for _, nd := range c.nodes {
		if !nd.running() {
			continue
		}
		for {
			code, _, err := c.get(nd.id, "/ready")
			if err == nil && code == 200 {
				break
			}
			if !nd.running() {
				c.t.Fatalf("node %d exited: %v\n%s", nd.id, nd.exitErr, nd.log.tail(4000))
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("node %d not ready after %v (code %d, err %v)\n%s", nd.id, d, code, err, nd.log.tail(4000))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// waitHealthy waits until node id's /health answers 200 (every partition
// led, full ISR).
func (c *cluster) waitHealthy(id int, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	start := time.Now()
	logged := false
	for {
		code, body, err := c.get(id, "/health")
		if err == nil && code == 200 {
			return
		}
		if os.Getenv("CHRONIK_TEST_DEBUG") != "" && !logged && time.Since(start) > time.Second {
			logged = true
			c.t.Logf("node %d still unhealthy after 1s: %s", id, body[strings.Index(body, `"reasons"`):])
			for _, nd := range c.nodes {
				if ps, err := c.partitions(nd.id); err == nil {
					for _, p := range ps {
						if len(p.InSyncReplicas) < len(p.Replicas) {
							c.t.Logf("  node %d sees %s-%d leader %d epoch %d isr %v", nd.id, p.Topic, p.Partition, p.Leader, p.LeaderEpoch, p.InSyncReplicas)
						}
					}
				}
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node %d not healthy after %v: %d %s %v", id, d, code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

func (l *lockedBuffer) tail(n int) string {
	s := l.String()
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return s
}

// lines returns the output lines containing sub.
func (l *lockedBuffer) lines(sub string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
