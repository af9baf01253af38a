package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Bounds for the waits around process and topic lifecycles.
const (
	readyTimeout = 60 * time.Second
	topicTimeout = 60 * time.Second
	stopTimeout  = 60 * time.Second // the server forces its own exit after ~50s
)

// registry remembers everything that must be torn down, so that a second
// Ctrl-C can kill it all at once without waiting for deferred cleanups.
type registry struct {
	mu    sync.Mutex
	next  int
	funcs map[int]func()
}

var live = &registry{funcs: map[int]func(){}}

func (r *registry) add(f func()) (remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.next
	r.next++
	r.funcs[id] = f
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.funcs, id)
	}
}

func (r *registry) runAll() {
	r.mu.Lock()
	fs := r.funcs
	r.funcs = map[int]func(){}
	r.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// target is a running broker (or cluster) to benchmark.
type target struct {
	name  string
	seeds []string
	// ctx ends when a server process dies unexpectedly, so that a run fails
	// at once instead of at its timeout.
	ctx   context.Context
	close func()
	opts  []kgo.Opt // client options every client of this target needs (TLS, SASL)
}

// targetSpec describes how to start a target.
type targetSpec struct {
	name  string
	kfake bool
	nodes int
	args  []string
	// secure gives every node a SASL_SSL listener (SCRAM-SHA-512, a fresh
	// CA in the temp dir), and the clients use it instead of the plaintext one.
	secure bool
	key    string // its name for -targets
}

func startTarget(ctx context.Context, spec targetSpec, bin string, partitions int32, topics ...string) (*target, error) {
	if spec.kfake {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topics...))
		if err != nil {
			return nil, err
		}
		remove := live.add(c.Close)
		return &target{name: spec.name, seeds: c.ListenAddrs(), ctx: context.Background(),
			close: func() { remove(); c.Close() }}, nil
	}
	c, err := startCluster(ctx, bin, spec.nodes, spec.args, spec.secure)
	if err != nil {
		return nil, err
	}
	t := &target{name: spec.name, seeds: c.seeds(), ctx: c.ctx, close: c.close, opts: c.clientOpts()}
	for _, tp := range topics {
		if err := createTopic(ctx, t.seeds, tp, partitions, int16(spec.nodes), t.opts...); err != nil {
			c.close()
			return nil, err
		}
	}
	return t, nil
}

// createTopic creates a topic and waits until every partition has a leader
// and a full ISR, so that runs do not start while replicas still catch up.
func createTopic(ctx context.Context, seeds []string, topic string, partitions int32, rf int16, opts ...kgo.Opt) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, topicTimeout)
	defer cancel()
	var last error
	for created := false; ; {
		if !created {
			resp, err := adm.CreateTopic(ctx, partitions, rf, nil, topic)
			switch {
			case err != nil:
				last = err
			case resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists):
				last = resp.Err
			default:
				created = true
			}
		}
		if created {
			last = topicSettled(ctx, adm, topic, partitions, int(rf))
			if last == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create topic %s: %w (last: %v)", topic, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func topicSettled(ctx context.Context, adm *kadm.Client, topic string, partitions int32, rf int) error {
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return err
	}
	td, ok := md.Topics[topic]
	if !ok || td.Err != nil {
		return fmt.Errorf("topic %s not in metadata: %v", topic, td.Err)
	}
	if int32(len(td.Partitions)) != partitions {
		return fmt.Errorf("topic %s has %d partitions", topic, len(td.Partitions))
	}
	for _, p := range td.Partitions {
		if p.Err != nil || p.Leader < 0 || len(p.ISR) < rf {
			return fmt.Errorf("partition %d: leader %d isr %v err %v", p.Partition, p.Leader, p.ISR, p.Err)
		}
	}
	return nil
}

// node is one chronik-server process of a cluster.
type node struct {
	id                 int
	kafka, raft, admin string
	saslSSL            string // the SASL_SSL listener; empty unless the cluster is secure
	dataDir, logPath   string
	cfgPath            string // its cluster.toml when not the cluster's (a node added later)
	cmd                *exec.Cmd
	done               chan struct{}
	waitErr            error
	expectExit         atomic.Bool
}

func (nd *node) running() bool {
	if nd.cmd == nil {
		return false
	}
	select {
	case <-nd.done:
		return false
	default:
		return true
	}
}

// cluster is a set of chronik-server processes on loopback sharing a
// cluster.toml in a temp dir.
type cluster struct {
	bin, dir, cfgPath string
	args              []string
	secure            *secureSetup // nil: plaintext only
	nodes             []*node
	ctx               context.Context
	cancel            context.CancelCauseFunc
	closeOnce         sync.Once
	unregister        func()
}

func startCluster(ctx context.Context, bin string, n int, args []string, secure bool) (*cluster, error) {
	return startClusterTOML(ctx, bin, n, args, secure, "")
}

// startClusterTOML is startCluster with extra top-level cluster.toml keys.
func startClusterTOML(ctx context.Context, bin string, n int, args []string, secure bool, toml string) (*cluster, error) {
	dir, err := os.MkdirTemp("", "chronik-bench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin, dir: dir, cfgPath: filepath.Join(dir, "cluster.toml"), args: args}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.unregister = live.add(c.kill)
	if secure {
		if c.secure, err = writeSecure(dir); err != nil {
			c.close()
			return nil, err
		}
		c.args = append(append([]string(nil), args...), c.secure.args...)
	}
	ports, err := freePorts(4 * n)
	if err != nil {
		c.close()
		return nil, err
	}
	var sb strings.Builder
	sb.WriteString("cluster_id = \"chronik-bench\"\n")
	sb.WriteString(toml + "\n")
	for i := range n {
		nd := &node{id: i + 1, kafka: ports[4*i], raft: ports[4*i+1], admin: ports[4*i+2],
			dataDir: filepath.Join(dir, fmt.Sprintf("node-%d", i+1)),
			logPath: filepath.Join(dir, fmt.Sprintf("node-%d.log", i+1))}
		c.nodes = append(c.nodes, nd)
		fmt.Fprintf(&sb, "\n[[nodes]]\nid = %d\nkafka = %q\nraft = %q\nadmin = %q\n", nd.id, nd.kafka, nd.raft, nd.admin)
		if secure {
			nd.saslSSL = ports[4*i+3]
			fmt.Fprintf(&sb, "  [[nodes.listeners]]\n  name = \"SECURE\"\n  protocol = \"SASL_SSL\"\n  advertised = %q\n", nd.saslSSL)
		}
	}
	if err := os.WriteFile(c.cfgPath, []byte(sb.String()), 0o644); err != nil {
		c.close()
		return nil, err
	}
	for _, nd := range c.nodes {
		if err := c.start(nd); err != nil {
			c.close()
			return nil, err
		}
	}
	for _, nd := range c.nodes {
		if err := c.waitReady(ctx, nd); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

// freePorts reserves n loopback ports. They are released before the
// servers bind, so another process could in rare cases take one first;
// the server then fails to start and says so in its log.
func freePorts(n int) ([]string, error) {
	var out []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// seeds are the nodes' SASL_SSL listeners in a secure cluster, else their
// plaintext ones.
func (c *cluster) seeds() []string {
	var out []string
	for _, nd := range c.nodes {
		if c.secure != nil {
			out = append(out, nd.saslSSL)
		} else {
			out = append(out, nd.kafka)
		}
	}
	return out
}

func (c *cluster) clientOpts() []kgo.Opt {
	if c.secure == nil {
		return nil
	}
	return c.secure.opts
}

// start launches a node's process; its output is appended to its log file.
func (c *cluster) start(nd *node) error {
	logf, err := os.OpenFile(nd.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cfg := c.cfgPath
	if nd.cfgPath != "" {
		cfg = nd.cfgPath
	}
	args := append([]string{"--node-id", fmt.Sprint(nd.id), "--cluster-config", cfg,
		"--data-dir", nd.dataDir}, c.args...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	nd.expectExit.Store(false)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start node %d: %w", nd.id, err)
	}
	nd.cmd = cmd
	nd.done = make(chan struct{})
	go func() {
		nd.waitErr = cmd.Wait()
		logf.Close()
		if !nd.expectExit.Load() {
			c.cancel(fmt.Errorf("node %d exited unexpectedly (%v); log tail:\n%s", nd.id, nd.waitErr, c.logTail(nd)))
		}
		close(nd.done)
	}()
	return nil
}

// waitReady polls GET /ready until it answers 200.
func (c *cluster) waitReady(ctx context.Context, nd *node) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	url := "http://" + nd.admin + "/ready"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := hc.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %d not ready: %w; log tail:\n%s", nd.id, ctx.Err(), c.logTail(nd))
		case <-nd.done:
			return fmt.Errorf("node %d exited while starting (%v); log tail:\n%s", nd.id, nd.waitErr, c.logTail(nd))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop signals a node and waits for it to exit, killing it if it outlasts
// stopTimeout. It returns how long the exit took and the exit error.
func (c *cluster) stop(nd *node, sig syscall.Signal) (time.Duration, error) {
	if !nd.running() {
		return 0, nil
	}
	nd.expectExit.Store(true)
	start := time.Now()
	if err := nd.cmd.Process.Signal(sig); err != nil {
		return 0, err
	}
	select {
	case <-nd.done:
		return time.Since(start), nd.waitErr
	case <-time.After(stopTimeout):
		syscall.Kill(-nd.cmd.Process.Pid, syscall.SIGKILL)
		<-nd.done
		return time.Since(start), fmt.Errorf("node %d did not exit within %v of %v; killed", nd.id, stopTimeout, sig)
	}
}

// kill SIGKILLs every node and removes the temp dir; it is what a second
// Ctrl-C runs.
func (c *cluster) kill() {
	for _, nd := range c.nodes {
		if nd.running() {
			nd.expectExit.Store(true)
			syscall.Kill(-nd.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-nd.done:
			case <-time.After(5 * time.Second):
				slog.Warn("node did not die after SIGKILL", "node", nd.id, "pid", nd.cmd.Process.Pid)
			}
		}
	}
	os.RemoveAll(c.dir)
}

// close tears the cluster down. SIGKILL is enough: the data is discarded.
func (c *cluster) close() {
	c.closeOnce.Do(func() {
		c.unregister()
		c.kill()
		c.cancel(errors.New("cluster closed"))
	})
}

// logTail returns the last lines of a node's log, for error messages.
func (c *cluster) logTail(nd *node) string {
	b, err := os.ReadFile(nd.logPath)
	if err != nil {
		return err.Error()
	}
	const max = 3000
	if len(b) > max {
		b = b[len(b)-max:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
