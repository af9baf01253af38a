package raft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	etcdraft "go.etcd.io/raft/v3"

	clog "github.com/chronik-dev/chronik/log"
)

// memberCluster runs nodes of one group (7) on a MemNetwork whose
// membership changes: nodes start as members of the original voters or
// join, each with a data directory incarnation.
type memberCluster struct {
	t     *testing.T
	net   *MemNetwork
	root  string
	orig  []uint64 // the group's original voters
	mu    sync.Mutex
	nodes map[uint64]*testNode
	incs  map[uint64]uint64 // each node's current incarnation
	known []uint64          // every node ever started
	// removed records OnRemoved notices by node.
	removed map[uint64]int
	// replica tweaks the replica config of every node (nil: none).
	replica func(*ReplicaConfig)
	// host tweaks the host config of every node (nil: none).
	host func(*Config)
}

func newMemberCluster(t *testing.T, voters ...uint64) *memberCluster {
	c := &memberCluster{t: t, net: NewMemNetwork(), root: t.TempDir(), orig: voters,
		nodes: map[uint64]*testNode{}, incs: map[uint64]uint64{}, removed: map[uint64]int{}}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, nd := range c.nodes {
			nd.host.Close()
		}
	})
	return c
}

func (c *memberCluster) replicaDir(id uint64) string {
	return filepath.Join(c.root, fmt.Sprint(id), "g7")
}
func (c *memberCluster) stateDir(id uint64) string {
	return filepath.Join(c.root, fmt.Sprint(id), "state")
}

// start starts node id (again), joining or not; a node's incarnation is
// chosen at its first start and after wipe.
func (c *memberCluster) start(id uint64, joining bool) *testNode {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.incs[id] == 0 {
		c.incs[id] = 1000*id + uint64(len(c.known)) + 1
	}
	if !slices.Contains(c.known, id) {
		c.known = append(c.known, id)
	}
	h := c.newHost(id)
	sm := &listSM{}
	rc := ReplicaConfig{Group: 7, Name: fmt.Sprint("g7@", id), Dir: c.replicaDir(id), Peers: c.orig, SM: sm,
		SnapshotEntries: 50, Log: clog.Options{SegmentBytes: 4096}, Joining: joining}
	if c.replica != nil {
		c.replica(&rc)
	}
	r, err := h.AddReplica(rc)
	if err != nil {
		c.t.Fatal(err)
	}
	nd := &testNode{host: h, sm: sm, rep: r, dir: rc.Dir}
	c.nodes[id] = nd
	for _, other := range c.known {
		if other == id {
			continue
		}
		h.PeerUp(other)
		if o := c.nodes[other]; o != nil {
			o.host.PeerUp(id)
		}
	}
	return nd
}

// newHost makes and starts node id's host at its current incarnation,
// with no replica yet. Called with c.mu held.
func (c *memberCluster) newHost(id uint64) *Host {
	c.t.Helper()
	cfg := Config{ID: id, Transport: c.net.Transport(id), TickInterval: 10 * time.Millisecond,
		ElectionTicks: 10, HeartbeatTicks: 1, Fsync: FsyncAlways, LagTime: time.Second,
		StateDir: c.stateDir(id), Incarnation: c.incs[id],
		OnRemoved: func(uint64) {
			c.mu.Lock()
			c.removed[id]++
			c.mu.Unlock()
		}}
	if c.host != nil {
		c.host(&cfg)
	}
	h, err := NewHost(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		c.t.Fatal(err)
	}
	return h
}

// stop closes node id's host (no graceful hand-over: as a kill).
func (c *memberCluster) stop(id uint64) {
	c.mu.Lock()
	nd := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	nd.host.Close()
}

// wipe deletes node id's data (it must be stopped) and gives it a new
// incarnation for its next start.
func (c *memberCluster) wipe(id uint64) {
	if err := os.RemoveAll(filepath.Join(c.root, fmt.Sprint(id))); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.incs[id] += 100
	c.mu.Unlock()
}

func (c *memberCluster) node(id uint64) *testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *memberCluster) running() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*testNode, 0, len(c.nodes))
	for _, nd := range c.nodes {
		out = append(out, nd)
	}
	return out
}

// leader waits for a ready leader among the running nodes.
func (c *memberCluster) leader(d time.Duration) *testNode {
	c.t.Helper()
	var l *testNode
	waitFor(c.t, d, "a ready leader", func() bool {
		for _, nd := range c.running() {
			if s := nd.rep.Status(); s.State == etcdraft.StateLeader && s.LeaderReady {
				l = nd
				return true
			}
		}
		return false
	})
	return l
}

// reconfigure drives Reconfigure to want, following the leadership; it
// returns the steps taken.
func (c *memberCluster) reconfigure(want Membership, d time.Duration) []string {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var steps []string
	for {
		if time.Now().After(deadline) {
			c.t.Fatalf("reconfigure to %+v: timed out after steps %v", want, steps)
		}
		l := c.leader(time.Until(deadline))
		ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline))
		changed := l.rep.Changed()
		p, err := l.rep.Reconfigure(ctx, want)
		cancel()
		if len(steps) == 0 || steps[len(steps)-1] != p.Step {
			steps = append(steps, p.Step)
		}
		var nl *NotLeaderError
		switch {
		case errors.As(err, &nl):
			continue
		case err != nil:
			c.t.Fatalf("reconfigure to %+v after steps %v: %v", want, steps, err)
		case p.Done:
			return steps
		}
		select {
		case <-changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// propose proposes v (acks=all) at whichever node leads, retrying as
// the leadership moves.
func (c *memberCluster) propose(v []byte, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		l := c.leader(time.Until(deadline))
		ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline))
		_, err := l.rep.Propose(ctx, clog.KindCommand, v, true)
		cancel()
		var nl *NotLeaderError
		switch {
		case err == nil:
			return
		case errors.As(err, &nl) && time.Now().Before(deadline):
		default:
			c.t.Fatal(err)
		}
	}
}

// load proposes values at the leader until stop is closed, and returns
// the acknowledged ones (acks=all).
type load struct {
	c     *memberCluster
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acked []string
	n     int
}

func startLoad(c *memberCluster, prefix string) *load {
	ld := &load{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(ld.done)
		for i := 0; ; i++ {
			select {
			case <-ld.stop:
				return
			default:
			}
			var l *testNode
			for _, nd := range c.running() {
				if s := nd.rep.Status(); s.State == etcdraft.StateLeader && s.LeaderReady {
					l = nd
				}
			}
			if l == nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			v := fmt.Sprintf("%s-%05d", prefix, i)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := l.rep.Propose(ctx, clog.KindCommand, []byte(v), true)
			cancel()
			ld.mu.Lock()
			ld.n++
			if err == nil {
				ld.acked = append(ld.acked, v)
			}
			ld.mu.Unlock()
		}
	}()
	return ld
}

func (ld *load) count() int {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return len(ld.acked)
}

// waitAcked waits until n proposals were acknowledged.
func (ld *load) waitAcked(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, "acknowledged proposals", func() bool {
		ld.mu.Lock()
		defer ld.mu.Unlock()
		return len(ld.acked) >= n
	})
}

func (ld *load) finish() []string {
	close(ld.stop)
	<-ld.done
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return ld.acked
}

// holdsAll waits until the state machines of the nodes ids hold every
// value of vals.
func (c *memberCluster) holdsAll(ids []uint64, vals []string, d time.Duration) {
	c.t.Helper()
	for _, id := range ids {
		nd := c.node(id)
		waitFor(c.t, d, fmt.Sprintf("node %d to hold %d acknowledged values", id, len(vals)), func() bool {
			have := map[string]bool{}
			for _, v := range nd.sm.list() {
				have[v] = true
			}
			for _, v := range vals {
				if !have[v] {
					return false
				}
			}
			return true
		})
	}
}

// configIs waits until every running node in ids sees the configuration.
func (c *memberCluster) configIs(ids []uint64, voters, learners []uint64, d time.Duration) {
	c.t.Helper()
	for _, id := range ids {
		nd := c.node(id)
		waitFor(c.t, d, fmt.Sprintf("node %d to see voters %v learners %v", id, voters, learners), func() bool {
			s := nd.rep.Status()
			return slices.Equal(sortedIDs(s.Voters), sortedIDs(voters)) && slices.Equal(sortedIDs(s.Learners), sortedIDs(learners)) && len(s.Outgoing) == 0
		})
	}
}
