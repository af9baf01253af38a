package raft

import (
	"context"
	"fmt"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// A follower whose connection was lost is back in the leader's ISR only
// once it holds every committed entry, not as soon as it reconnects: a
// restarted node reconnects before its replicas replicate, and an ISR that
// named it then told an orchestrator it was safe to stop the next node.
func TestLapsedFollowerRejoinsISROnlyCaughtUp(t *testing.T) {
	c := newTestCluster(t, 3, false)
	l := c.leader()
	var f uint64
	for _, id := range c.ids {
		if id != l.host.ID() {
			f = id
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	propose := func(prefix string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte(fmt.Sprint(prefix, i)), true); err != nil {
				t.Fatal(err)
			}
		}
	}
	propose("a", 5)
	waitFor(t, 5*time.Second, "the follower in the ISR", func() bool { return containsID(l.rep.Status().ISR, f) })

	// The follower goes away; the leader commits with the other one.
	c.net.Isolate(f)
	l.host.PeerDown(f, true)
	waitFor(t, 5*time.Second, "the follower out of the ISR", func() bool { return !containsID(l.rep.Status().ISR, f) })
	propose("b", 20)

	// It reconnects (the transport says so) but replicates nothing yet:
	// well within the lag time (1 s), it must stay out.
	l.host.PeerUp(f)
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		propose("c", 1)
		if s := l.rep.Status(); containsID(s.ISR, f) {
			t.Fatalf("follower %d back in the ISR %v at match %d of commit %d before replicating", f, s.ISR, s.Match[f], s.Commit)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Once it replicates again it catches up and is back.
	c.net.Heal()
	propose("d", 1)
	waitFor(t, 5*time.Second, "the caught-up follower back in the ISR", func() bool {
		s := l.rep.Status()
		return containsID(s.ISR, f) && s.Match[f] >= s.Commit
	})
}
