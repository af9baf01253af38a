package raft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// proposeN commits n values at the leader (acks=all) and returns them.
func proposeN(t *testing.T, l *testNode, prefix string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vals := make([]string, 0, n)
	for i := range n {
		v := fmt.Sprintf("%s-%04d", prefix, i)
		if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte(v), true); err != nil {
			t.Fatalf("propose %s: %v", v, err)
		}
		vals = append(vals, v)
	}
	return vals
}

// follower picks a running voter other than the leader l.
func (c *memberCluster) follower(l *testNode) uint64 {
	for _, nd := range c.running() {
		if id := nd.host.ID(); id != l.host.ID() {
			return id
		}
	}
	c.t.Fatal("no follower")
	return 0
}

// rejoinStale wipes a follower of a running group whose leader keeps
// leading, restarts it joining at a new incarnation and rejoins it: the
// leader's progress still counts the follower's old log (etcd raft's
// Match), which the refill must make up for without a leader change.
// It returns the rejoined node and the steps Reconfigure took.
func rejoinStale(t *testing.T, c *memberCluster, voters []uint64) (*testNode, []string) {
	for _, id := range voters {
		c.start(id, false)
	}
	l := c.leader(5 * time.Second)
	vals := proposeN(t, l, "before", 200)
	f := c.follower(l)
	c.holdsAll([]uint64{f}, vals, 10*time.Second)
	term := l.rep.Status().Term
	c.stop(f)
	c.wipe(f)
	nf := c.start(f, true)
	if !nf.rep.Status().Gagged {
		t.Fatal("the wiped follower is not gagged")
	}
	start := time.Now()
	steps := c.reconfigure(Membership{Voters: voters, Rejoin: map[uint64]uint64{f: c.incs[f]}}, 20*time.Second)
	waitFor(t, 5*time.Second, "the rejoined node ungagged", func() bool { return !nf.rep.Status().Gagged })
	took := time.Since(start)
	if _, err := os.Stat(joiningPath(nf.dir)); err == nil {
		t.Fatal("the joining marker is still there")
	}
	c.configIs(voters, voters, nil, 5*time.Second)
	c.holdsAll([]uint64{f}, vals, 5*time.Second)
	after := proposeN(t, l, "after", 5)
	c.holdsAll(voters, append(vals, after...), 5*time.Second)
	if s := l.rep.Status(); !s.IsLeader() || s.Term != term {
		t.Fatalf("the leadership changed: node %d term %d leads %v, was term %d", l.host.ID(), s.Term, s.IsLeader(), term)
	}
	waitFor(t, 5*time.Second, "the refill to end", func() bool { return len(l.rep.Status().Refilling) == 0 })
	t.Logf("rejoined node %d in %v without a leader change; steps %v", f, took.Round(time.Millisecond), steps)
	return nf, steps
}

// TestRejoinStaleMatch: 3 voters, the leader keeps leading while a
// follower is wiped and rejoins.
//
// The election timeout is 0.3 s rather than the usual 0.1 s: the test
// asserts that the leadership never changes, and at a load of 15-20 on
// two cores a 0.1 s CheckQuorum window can be missed by scheduling alone.
func TestRejoinStaleMatch(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	c.host = func(cfg *Config) { cfg.ElectionTicks = 30 }
	_, steps := rejoinStale(t, c, []uint64{1, 2, 3})
	for _, want := range []string{"demote", "change"} {
		if !slices.Contains(steps, want) {
			t.Fatalf("steps %v lack %q", steps, want)
		}
	}
}

// TestRejoinStaleMatchTwoVoters: in a 2-voter group the wiped voter can
// be neither demoted nor removed (either change needs its ack), nor can
// leadership move: it is refilled as a voter and promoted again in place.
//
// The leader must keep leading: with the wiped voter silent for a whole
// election timeout, CheckQuorum makes it step down, and no leader can be
// elected again without the gagged voter's vote (that takes Ungag). So
// the election timeout here is 1 s, well above a restart's pause.
func TestRejoinStaleMatchTwoVoters(t *testing.T) {
	c := newMemberCluster(t, 1, 2)
	c.host = func(cfg *Config) { cfg.ElectionTicks = 100 }
	_, steps := rejoinStale(t, c, []uint64{1, 2})
	if !slices.Contains(steps, "repromote") || slices.Contains(steps, "demote") {
		t.Fatalf("steps %v: want a promotion in place, no demotion", steps)
	}
}

// TestRejoinStaleMatchSnapshot: a state-machine group (like the metadata
// group) compacts its log to snapshots, so the wiped follower is refilled
// with the leader's snapshot first.
func TestRejoinStaleMatchSnapshot(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	c.host = func(cfg *Config) { cfg.ElectionTicks = 30 } // as TestRejoinStaleMatch
	c.replica = func(rc *ReplicaConfig) { rc.CompactToSnapshot = true }
	nf, _ := rejoinStale(t, c, []uint64{1, 2, 3})
	if first := nf.rep.Log().FirstIndex(); first <= 1 {
		t.Fatalf("the rejoined node's log starts at %d: it was not sent a snapshot", first)
	}
}

// TestTransferNeverTargetsGagged: a gagged voter (wiped, not rejoined
// yet) tells its leader, which neither rebalances to it (it is the
// preferred leader and in sync) nor transfers to it on request.
func TestTransferNeverTargetsGagged(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	c.host = func(cfg *Config) { cfg.AutoRebalance, cfg.RebalanceDelay = true, 100*time.Millisecond }
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	waitFor(t, 10*time.Second, "node 1, preferred, to lead", func() bool {
		s := c.node(1).rep.Status()
		return s.IsLeader() && s.LeaderReady
	})
	vals := proposeN(t, c.node(1), "v", 20)
	c.stop(1)
	c.wipe(1)
	l := c.leader(5 * time.Second)
	n1 := c.start(1, true)
	waitFor(t, 5*time.Second, "the leader to know node 1 is gagged and in sync", func() bool {
		s := l.rep.Status()
		return containsID(s.GaggedPeers, 1) && containsID(s.ISR, 1) && s.Match[1] == s.LastIndex
	})
	c.holdsAll([]uint64{1}, vals, 5*time.Second)
	// Several rebalance rounds (250 ms each) past the delay.
	term := l.rep.Status().Term
	until := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(until) {
		if s := l.rep.Status(); s.Transferee != 0 || s.Term != term || !s.IsLeader() {
			t.Fatalf("transfer to a gagged node: transferee %d, term %d (was %d), leader %v", s.Transferee, s.Term, term, s.IsLeader())
		}
		select {
		case <-l.rep.Changed():
		case <-time.After(20 * time.Millisecond):
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := l.rep.TransferLeadership(ctx, 1)
	if took := time.Since(start); !errors.Is(err, ErrTransferFail) || took > 300*time.Millisecond {
		t.Fatalf("transfer to the gagged node: %v after %v, want ErrTransferFail at once", err, took)
	}
	t.Logf("refused at once: %v", err)
	if !n1.rep.Status().Gagged {
		t.Fatal("node 1 lost its gag")
	}
	// Rejoined, it is preferred again: the rebalance moves leadership to it.
	c.reconfigure(Membership{Voters: []uint64{1, 2, 3}, Rejoin: map[uint64]uint64{1: c.incs[1]}}, 20*time.Second)
	waitFor(t, 10*time.Second, "leadership back on node 1", func() bool {
		s := n1.rep.Status()
		return s.IsLeader() && !s.Gagged
	})
}
