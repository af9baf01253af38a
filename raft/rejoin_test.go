package raft

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	etcdraft "go.etcd.io/raft/v3"
)

// TestWipeAndRejoin is issue 11's scenario at the Raft level: nodes A, B
// and C; C is cut off; entry E is acknowledged by A and B; A stops; B's
// data directory is deleted and B restarts empty. With Joining, B is
// gagged: C cannot be elected (B neither votes nor campaigns), E is never
// lost, and once A is back Reconfigure demotes B to learner, catches it
// up and promotes it at its new incarnation, which lifts the gag.
//
// Without Joining (the second subtest) B votes with no memory: C is
// elected with B's vote and without E, which is lost (when A returns,
// etcd raft finds its committed E overwritten and panics on A, which
// fails the replica). The outcome is deterministic: only B and C run, B
// grants any vote, so C is the only node that can lead.
func TestWipeAndRejoin(t *testing.T) {
	t.Run("joining", func(t *testing.T) { wipeAndRejoin(t, true) })
	t.Run("without-joining-loses-E", func(t *testing.T) { wipeAndRejoin(t, false) })
}

func wipeAndRejoin(t *testing.T, joining bool) {
	const a, b, cID = 1, 2, 3
	c := newMemberCluster(t, a, b, cID)
	for _, id := range []uint64{a, b, cID} {
		c.start(id, false)
	}
	c.leader(5 * time.Second)
	c.net.Isolate(cID)
	waitFor(t, 5*time.Second, "a leader without C", func() bool {
		for _, id := range []uint64{a, b} {
			if s := c.node(id).rep.Status(); s.IsLeader() && s.LeaderReady {
				return true
			}
		}
		return false
	})
	waitFor(t, 5*time.Second, "the cut-off C to step down", func() bool { return !c.node(cID).rep.Status().IsLeader() })
	const e = "E-acknowledged"
	c.propose([]byte(e), 5*time.Second)
	termE := c.leader(5 * time.Second).rep.Status().Term
	c.stop(a)
	c.stop(b)
	c.wipe(b)
	nb := c.start(b, joining)
	c.net.Heal()
	nc := c.node(cID)
	if !joining {
		waitFor(t, 10*time.Second, "C elected with the wiped B's vote", func() bool {
			s := nc.rep.Status()
			return s.IsLeader() && s.LeaderReady && s.Term > termE
		})
		if slices.Contains(nc.sm.list(), e) {
			t.Fatal("C holds E")
		}
		t.Logf("without Joining: C leads term %d without the acknowledged E", nc.rep.Status().Term)
		return
	}
	if !nb.rep.Status().Gagged {
		t.Fatal("the wiped B is not gagged")
	}
	// Ten election timeouts at most (20 ticks of 10 ms each).
	until := time.Now().Add(2 * time.Second)
	for time.Now().Before(until) {
		for _, nd := range []*testNode{nb, nc} {
			if s := nd.rep.Status(); s.State == etcdraft.StateLeader || s.State == etcdraft.StateCandidate {
				t.Fatalf("node %d became %v without A", nd.host.ID(), s.State)
			}
		}
		select {
		case <-nc.rep.Changed():
		case <-nb.rep.Changed():
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.start(a, false)
	l := c.leader(10 * time.Second)
	if l.host.ID() != a {
		t.Fatalf("node %d leads, want A", l.host.ID())
	}
	waitFor(t, 5*time.Second, "leader to apply E", func() bool { return slices.Contains(l.sm.list(), e) })
	steps := c.reconfigure(Membership{Voters: []uint64{a, b, cID}, Rejoin: map[uint64]uint64{b: c.incs[b]}}, 20*time.Second)
	t.Logf("rejoin B: steps %v", steps)
	for _, want := range []string{"demote", "change"} {
		if !slices.Contains(steps, want) {
			t.Fatalf("steps %v lack %q", steps, want)
		}
	}
	c.configIs([]uint64{a, b, cID}, []uint64{a, b, cID}, nil, 5*time.Second)
	waitFor(t, 5*time.Second, "B ungagged", func() bool { return !nb.rep.Status().Gagged })
	if _, err := os.Stat(joiningPath(nb.dir)); err == nil {
		t.Fatal("B's joining marker is still there")
	}
	c.holdsAll([]uint64{a, b, cID}, []string{e}, 5*time.Second)
	// Idempotent: the same request again is done at once.
	l = c.leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := l.rep.Reconfigure(ctx, Membership{Voters: []uint64{a, b, cID}, Rejoin: map[uint64]uint64{b: c.incs[b]}})
	if err != nil || !p.Done {
		t.Fatalf("repeated rejoin: %+v, %v", p, err)
	}
}

// TestGagSurvivesRestart restarts a joining replica before it is
// promoted: it is still gagged; Ungag lifts the gag durably.
func TestGagSurvivesRestart(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	c.leader(5 * time.Second)
	c.start(4, true)
	c.reconfigure(Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}, 10*time.Second)
	c.stop(4)
	n4 := c.start(4, false)
	if !n4.rep.Status().Gagged {
		t.Fatal("a joining replica restarted ungagged")
	}
	c.propose([]byte("x"), 5*time.Second)
	c.holdsAll([]uint64{4}, []string{"x"}, 5*time.Second)
	if err := n4.rep.Ungag(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "status ungagged", func() bool { return !n4.rep.Status().Gagged })
	c.stop(4)
	if n4 = c.start(4, true); n4.rep.Status().Gagged {
		t.Fatal("gagged again after Ungag and a restart")
	}
}

// TestRejoinRefusedWithoutQuorum refuses a Rejoin that would leave fewer
// than a quorum of trusted voters during the change.
func TestRejoinRefusedWithoutQuorum(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	l := c.leader(5 * time.Second)
	var rejoin = map[uint64]uint64{}
	for _, id := range []uint64{1, 2, 3} {
		if id != l.host.ID() {
			rejoin[id] = 77
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := l.rep.Reconfigure(ctx, Membership{Voters: []uint64{1, 2, 3}, Rejoin: rejoin})
	if err == nil {
		t.Fatal("a rejoin of two voters of three was accepted")
	}
	t.Log(err)
}
