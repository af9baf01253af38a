package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fill commits n values of size bytes (acks=all) at whichever node
// leads: the setup of a test, which need not keep one leader.
func (c *memberCluster) fill(prefix string, n, size int) []string {
	c.t.Helper()
	vals := make([]string, 0, n)
	for i := range n {
		v := fmt.Sprintf("%s-%04d-", prefix, i)
		v += strings.Repeat("x", max(0, size-len(v)))
		c.propose([]byte(v), 30*time.Second)
		vals = append(vals, v)
	}
	return vals
}

// TestRefillReadsOffWorker: a refill's entries that are no longer cached
// are read by the host's readers, not on the worker. With one worker and
// the leader's reader held inside its read, the group still commits, and
// once the read goes on the wiped follower is refilled and rejoins.
func TestRefillReadsOffWorker(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	// The leadership must not change once the follower is wiped: a 1 s
	// election timeout (one worker, at a load of 40 with -race).
	c.host = func(cfg *Config) { cfg.Workers, cfg.ElectionTicks = 1, 100 }
	c.replica = func(rc *ReplicaConfig) { rc.Log.SegmentBytes = 1 << 20 }
	voters := []uint64{1, 2, 3}
	for _, id := range voters {
		c.start(id, false)
	}
	c.leader(10 * time.Second)
	// 6 MiB: more than the entry cache holds (the first are on disk only),
	// and more than one refill message (a read ahead).
	vals := c.fill("before", 96, 64<<10)
	l := c.leader(10 * time.Second)
	f := c.follower(l)
	c.holdsAll([]uint64{f}, vals, 10*time.Second)
	term := l.rep.Status().Term

	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fault := func() {
		once.Do(func() { close(blocked) })
		select {
		case <-release:
		case <-time.After(20 * time.Second): // never hang the test
		}
	}
	l.host.reads.fault.Store(&fault)
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock()

	c.stop(f)
	c.wipe(f)
	nf := c.start(f, true)
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("no refill read reached the leader's readers")
	}
	// The only worker is free while the read is held: the group commits.
	during := proposeN(t, l, "during", 5)
	unblock()
	steps := c.reconfigure(Membership{Voters: voters, Rejoin: map[uint64]uint64{f: c.incs[f]}}, 30*time.Second)
	waitFor(t, 5*time.Second, "the rejoined node ungagged", func() bool { return !nf.rep.Status().Gagged })
	all := append(append(vals, during...), proposeN(t, l, "after", 5)...)
	c.holdsAll(voters, all, 10*time.Second)
	waitFor(t, 5*time.Second, "the refill to end", func() bool { return len(l.rep.Status().Refilling) == 0 })
	if s := l.rep.Status(); !s.IsLeader() || s.Term != term {
		t.Fatalf("the leadership changed: node %d term %d leads %v, was term %d", l.host.ID(), s.Term, s.IsLeader(), term)
	}
	if n := l.host.refillReads.Load(); n == 0 {
		t.Fatal("no refill read was asked of the readers")
	}
	t.Logf("steps %v; %d reads, %d refill messages", steps, l.host.refillReads.Load(), l.host.RefillMessages())
}

// TestRejoinUnansweredProbe: a node back on an empty disk whose replica
// does not exist yet cannot answer the leader's probe. Until it does it
// counts as holding nothing (not at its old disk's Match), the probe is
// not dropped however long it waits, and Reconfigure demotes it but never
// promotes it. Once its replica opens, it answers, is refilled and
// promoted.
func TestRejoinUnansweredProbe(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	c.host = func(cfg *Config) { cfg.ElectionTicks = 30 }
	voters := []uint64{1, 2, 3}
	for _, id := range voters {
		c.start(id, false)
	}
	c.leader(10 * time.Second)
	vals := c.fill("before", 100, 0)
	l := c.leader(10 * time.Second)
	f := c.follower(l)
	c.holdsAll([]uint64{f}, vals, 10*time.Second)
	c.stop(f)
	c.wipe(f)
	// The new incarnation's host, without the replica: it pings its peers
	// (stating the incarnation) but drops the group's messages.
	c.mu.Lock()
	bare := c.newHost(f)
	c.mu.Unlock()
	defer bare.Close()
	for _, id := range voters {
		if id != f {
			bare.PeerUp(id)
			c.node(id).host.PeerUp(f)
		}
	}
	waitFor(t, 5*time.Second, "the leader probing the new incarnation", func() bool {
		return slices.Contains(l.rep.Status().Refilling, f)
	})
	term := l.rep.Status().Term
	want := Membership{Voters: voters, Rejoin: map[uint64]uint64{f: c.incs[f]}}
	// Well past the old limit on probe resends (10 x refillResend, 1.5 s).
	until := time.Now().Add(3 * time.Second)
	var steps []string
	for time.Now().Before(until) {
		l = c.leader(10 * time.Second) // it may move under load: the rule holds on any leader
		changed := l.rep.Changed()
		ctx, cancel := context.WithTimeout(context.Background(), time.Until(until))
		p, err := l.rep.Reconfigure(ctx, want)
		cancel()
		var nl *NotLeaderError
		if err != nil && ctx.Err() == nil && !errors.As(err, &nl) {
			t.Fatalf("reconfigure after steps %v: %v", steps, err)
		}
		if p.Done {
			t.Fatalf("rejoin done with the node's replica missing; steps %v", steps)
		}
		if len(steps) == 0 || steps[len(steps)-1] != p.Step {
			steps = append(steps, p.Step)
		}
		select {
		case <-changed:
		case <-time.After(50 * time.Millisecond):
		}
	}
	l = c.leader(10 * time.Second)
	s := l.rep.Status()
	if slices.Contains(s.Voters, f) || !slices.Contains(s.Learners, f) {
		t.Fatalf("node %d: voters %v learners %v, want it demoted and not promoted (steps %v)", f, s.Voters, s.Learners, steps)
	}
	if m := s.Match[f]; m != 0 {
		t.Fatalf("node %d counts at match %d with no replica", f, m)
	}
	switch {
	case s.Term != term:
		// A new leader's progress starts afresh (Match 0): no probe of its own.
		t.Logf("the leadership moved (term %d, was %d): probe not checked", s.Term, term)
	case !slices.Contains(s.Refilling, f):
		t.Fatalf("the probe of node %d was dropped", f)
	}
	if err := bare.Close(); err != nil {
		t.Fatal(err)
	}
	nf := c.start(f, true) // the same incarnation, now with its replica
	more := c.reconfigure(want, 20*time.Second)
	waitFor(t, 5*time.Second, "the rejoined node ungagged", func() bool { return !nf.rep.Status().Gagged })
	c.configIs(voters, voters, nil, 5*time.Second)
	c.holdsAll(voters, vals, 10*time.Second)
	t.Logf("steps without the replica %v, then %v", steps, more)
}
