package raft

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	etcdraft "go.etcd.io/raft/v3"

	clog "github.com/chronik-dev/chronik/log"
)

// listSM records applied commands.
type listSM struct {
	mu   sync.Mutex
	cmds []string
}

func (s *listSM) Apply(ents []Committed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range ents {
		if e.Kind == clog.KindCommand {
			s.cmds = append(s.cmds, string(e.Payload))
		}
	}
	return nil
}

func (s *listSM) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []byte
	for _, c := range s.cmds {
		b = append(b, c...)
		b = append(b, '\n')
	}
	return b, nil
}

func (s *listSM) Restore(_ uint64, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmds = nil
	start := 0
	for i, c := range data {
		if c == '\n' {
			s.cmds = append(s.cmds, string(data[start:i]))
			start = i + 1
		}
	}
	return nil
}

func (s *listSM) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

type testNode struct {
	host *Host
	sm   *listSM
	rep  *Replica
	dir  string
}

type testCluster struct {
	t     *testing.T
	net   *MemNetwork
	nodes map[uint64]*testNode
	ids   []uint64
	root  string
	// recoverDelay is Config.RecoverDelay of every node.
	recoverDelay time.Duration
}

func newTestCluster(t *testing.T, n int, compact bool) *testCluster {
	return newTestClusterRecover(t, n, compact, 0)
}

// newTestClusterRecover is newTestCluster with a recovery delay for
// failed replicas (0 for the default).
func newTestClusterRecover(t *testing.T, n int, compact bool, recoverDelay time.Duration) *testCluster {
	c := &testCluster{t: t, net: NewMemNetwork(), nodes: map[uint64]*testNode{}, root: t.TempDir(), recoverDelay: recoverDelay}
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, uint64(i))
	}
	for _, id := range c.ids {
		c.start(id, compact)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			nd.host.Close()
		}
	})
	return c
}

func (c *testCluster) start(id uint64, compact bool) {
	h, err := NewHost(Config{ID: id, Transport: c.net.Transport(id), TickInterval: 10 * time.Millisecond,
		ElectionTicks: 10, HeartbeatTicks: 1, Fsync: FsyncAlways, LagTime: time.Second, RecoverDelay: c.recoverDelay,
		StateDir: filepath.Join(c.root, fmt.Sprint("node", id))})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		c.t.Fatal(err)
	}
	for _, other := range c.ids {
		h.PeerUp(other)
	}
	sm := &listSM{}
	dir := filepath.Join(c.root, fmt.Sprint(id))
	r, err := h.AddReplica(ReplicaConfig{Group: 7, Name: "g7", Dir: dir, Peers: c.ids, SM: sm,
		CompactToSnapshot: compact, SnapshotEntries: 50, Log: clog.Options{SegmentBytes: 4096}})
	if err != nil {
		c.t.Fatal(err)
	}
	c.nodes[id] = &testNode{host: h, sm: sm, rep: r, dir: dir}
}

func (c *testCluster) stop(id uint64) {
	c.nodes[id].host.Close()
	delete(c.nodes, id)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (c *testCluster) leader() *testNode {
	c.t.Helper()
	var l *testNode
	waitFor(c.t, 5*time.Second, "a ready leader", func() bool {
		for _, nd := range c.nodes {
			if s := nd.rep.Status(); s.State == etcdraft.StateLeader && s.LeaderReady {
				l = nd
				return true
			}
		}
		return false
	})
	return l
}

func TestReplicateAndFailover(t *testing.T) {
	c := newTestCluster(t, 3, false)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte(fmt.Sprint("a", i)), true); err != nil {
			t.Fatal(err)
		}
	}
	// A follower refuses proposals and names the leader.
	for id, nd := range c.nodes {
		if nd != l {
			_, err := nd.rep.Propose(ctx, clog.KindCommand, []byte("x"), true)
			var nl *NotLeaderError
			if !errors.As(err, &nl) || nl.Leader != l.host.ID() {
				t.Fatalf("follower %d: %v", id, err)
			}
			break
		}
	}
	oldID := l.host.ID()
	c.stop(oldID)
	start := time.Now()
	l2 := c.leader()
	t.Logf("failover after leader stop took %v", time.Since(start))
	if l2.host.ID() == oldID {
		t.Fatal("old leader still leads")
	}
	for i := 0; i < 5; i++ {
		if _, err := l2.rep.Propose(ctx, clog.KindCommand, []byte(fmt.Sprint("b", i)), true); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "followers to apply", func() bool {
		for _, nd := range c.nodes {
			if len(nd.sm.list()) != 25 {
				return false
			}
		}
		return true
	})
	// The old node comes back and catches up.
	c.start(oldID, false)
	waitFor(t, 5*time.Second, "restarted node to catch up", func() bool { return len(c.nodes[oldID].sm.list()) == 25 })
}

func TestPartitionedLeaderCommitsNothing(t *testing.T) {
	c := newTestCluster(t, 3, false)
	l := c.leader()
	c.net.Isolate(l.host.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := l.rep.Propose(ctx, clog.KindCommand, []byte("lost"), true)
	cancel()
	if err == nil {
		t.Fatal("isolated leader committed a proposal")
	}
	var l2 *testNode
	waitFor(t, 5*time.Second, "majority leader", func() bool {
		for _, nd := range c.nodes {
			if nd != l && nd.rep.Status().State == etcdraft.StateLeader && nd.rep.Status().LeaderReady {
				l2 = nd
				return true
			}
		}
		return false
	})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := l2.rep.Propose(ctx2, clog.KindCommand, []byte("kept"), true); err != nil {
		t.Fatal(err)
	}
	c.net.Heal()
	waitFor(t, 5*time.Second, "old leader to converge", func() bool {
		got := l.sm.list()
		return len(got) == 1 && got[0] == "kept"
	})
}

func TestTransferLeadership(t *testing.T) {
	c := newTestCluster(t, 3, false)
	l := c.leader()
	var to uint64
	for id := range c.nodes {
		if id != l.host.ID() {
			to = id
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := l.rep.TransferLeadership(ctx, to); err != nil {
		t.Fatal(err)
	}
	t.Logf("transfer took %v", time.Since(start))
	if s := c.nodes[to].rep.Status(); s.Leader != to {
		t.Fatalf("leader is %d", s.Leader)
	}
}

func TestSnapshotCatchUp(t *testing.T) {
	c := newTestCluster(t, 3, true)
	l := c.leader()
	var down uint64
	for id := range c.nodes {
		if id != l.host.ID() {
			down = id
			break
		}
	}
	c.stop(down)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 300; i++ {
		if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte(fmt.Sprintf("c%03d-%s", i, "padding-padding-padding")), true); err != nil {
			t.Fatal(err)
		}
	}
	if first := l.rep.Log().FirstIndex(); first < 10 {
		t.Fatalf("log not compacted: first index %d", first)
	}
	c.start(down, true)
	waitFor(t, 10*time.Second, "snapshot catch-up", func() bool { return len(c.nodes[down].sm.list()) == 300 })
}
