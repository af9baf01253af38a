package raft

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

var errInjected = errors.New("injected fsync failure")

// TestFailedLeaderStepsDown: a leader whose fsync fails, in a group whose
// followers have gone quiet, must at once stop showing as leader, get its
// followers to elect another, and come back as a follower once the disk
// works again.
func TestFailedLeaderStepsDown(t *testing.T) {
	c := newTestClusterRecover(t, 3, false, 50*time.Millisecond)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte(fmt.Sprint("a", i)), true); err != nil {
			t.Fatal(err)
		}
	}
	// Quiet followers do not tick, so they would never notice on their own.
	waitFor(t, 5*time.Second, "the group to go quiet", func() bool {
		for _, nd := range c.nodes {
			if !nd.rep.quiesced.Load() {
				return false
			}
		}
		return true
	})
	// A loaded machine may have moved leadership meanwhile (a 100 ms
	// election timeout): fail whoever leads now.
	l = c.leader()
	fault := func(*Replica) error { return errInjected }
	l.host.syncFault.Store(&fault)
	if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte("lost"), true); !errors.Is(err, ErrStopped) {
		t.Fatalf("proposal on a leader whose fsync fails: %v, want ErrStopped", err)
	}
	if s := l.rep.Status(); !s.Failed || s.IsLeader() || s.Leader != 0 {
		t.Fatalf("failed leader's status: failed %v state %v leader %d", s.Failed, s.State, s.Leader)
	}
	start := time.Now()
	var l2 *testNode
	waitFor(t, 2*time.Second, "a new leader", func() bool {
		for _, nd := range c.nodes {
			if s := nd.rep.Status(); nd != l && s.IsLeader() && s.LeaderReady {
				l2 = nd
				return true
			}
		}
		return false
	})
	t.Logf("new leader %d after %v", l2.host.ID(), time.Since(start))
	if _, err := l2.rep.Propose(ctx, clog.KindCommand, []byte("b"), true); err != nil {
		t.Fatal(err)
	}
	// While the disk fails, recovery attempts fail too.
	time.Sleep(200 * time.Millisecond)
	if !l.rep.Status().Failed {
		t.Fatal("replica recovered while its disk still fails")
	}
	l.host.syncFault.Store(nil)
	waitFor(t, 5*time.Second, "the failed replica to recover and catch up", func() bool {
		s := l.rep.Status()
		return !s.Failed && !s.IsLeader() && s.Leader == l2.host.ID() && s.Applied == l2.rep.Status().Applied
	})
	// "lost" reached the followers before the leader's fsync failed, so
	// they may have committed it: its proposer was told ErrStopped, an
	// unknown outcome, as after a timeout.
	want := map[string]bool{"[a0 a1 a2 b]": true, "[a0 a1 a2 lost b]": true}
	if got := fmt.Sprint(l.sm.list()); !want[got] || got != fmt.Sprint(l2.sm.list()) {
		t.Fatalf("recovered state %v, leader's %v", got, l2.sm.list())
	}
}

// TestHostStartsOnce: a second Start (or one after Close) would start a
// second set of workers and timers that nothing stops.
func TestHostStartsOnce(t *testing.T) {
	h, err := NewHost(Config{ID: 1, Transport: NewMemNetwork().Transport(1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}
