package raft

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// TestLeaderStallKeepsLeadership: a leader whose worker stalls for several
// election timeouts (a slow fsync on a loaded disk) finds its ticks piled
// up in the inbox. Stepped all at once, after the follower's answers, they
// ran more than one quorum check with no chance for an answer in between,
// and the leader stepped down in its own term with nobody to replace it
// (TestSnapshotCatchUp failed so under -race on a loaded machine). With one
// of three voters down, the live follower cannot elect another without the
// leader's vote, and it answered everything it was sent: the leader stays.
func TestLeaderStallKeepsLeadership(t *testing.T) {
	c := newTestCluster(t, 3, false)
	l := c.leader()
	for id := range c.nodes {
		if id != l.host.ID() {
			c.stop(id)
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte("before"), true); err != nil {
		t.Fatal(err)
	}
	term := l.rep.Status().Term
	stall := 3 * time.Duration(10) * 10 * time.Millisecond // three election timeouts
	var once atomic.Bool
	fault := func(r *Replica) error {
		if r == l.rep && once.CompareAndSwap(false, true) {
			time.Sleep(stall) // the slow disk
		}
		return nil
	}
	l.host.syncFault.Store(&fault)
	defer l.host.syncFault.Store(nil)
	for i := 0; i < 3; i++ {
		if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte("after"), true); err != nil {
			t.Fatalf("proposal %d after a %v stall: %v", i, stall, err)
		}
	}
	if !once.Load() {
		t.Fatal("the stall never ran")
	}
	if s := l.rep.Status(); !s.IsLeader() || s.Term != term {
		t.Fatalf("after a stall the leader is %v in term %d, want leader in term %d", s.State, s.Term, term)
	}
}
