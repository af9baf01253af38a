package raft

import (
	"context"
	"fmt"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// TestFollowerTornTailRejoins: a follower whose last entry was torn by a
// crash restarts with a shorter log than the leader believes it has. The
// leader's heartbeats then carry a commit index beyond the follower's log,
// on which etcd raft panics; the follower must instead rejoin and catch up.
func TestFollowerTornTailRejoins(t *testing.T) {
	c := newTestCluster(t, 3, false)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 5; i++ {
		if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte(fmt.Sprint("a", i)), true); err != nil {
			t.Fatal(err)
		}
	}
	var f uint64
	for id := range c.nodes {
		if id != l.host.ID() {
			f = id
			break
		}
	}
	waitFor(t, 5*time.Second, "follower to apply", func() bool { return len(c.nodes[f].sm.list()) == 5 })
	dir := c.nodes[f].dir
	c.stop(f)
	tearLogTail(t, dir, 3)
	c.start(f, false)
	// The leader counts the lost entry as stored on f and etcd raft never
	// sends it again; told so, the leader sends it itself (refill.go).
	waitFor(t, 5*time.Second, "torn follower to catch up", func() bool { return len(c.nodes[f].sm.list()) == 5 })
	if n := c.nodes[f].host.ClampedCommits(); n == 0 {
		t.Fatal("no heartbeat commit was clamped: the tail was not torn past the leader's view")
	}
	if _, err := c.leader().rep.Propose(ctx, clog.KindCommand, []byte("b"), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "torn follower to apply new entries", func() bool { return len(c.nodes[f].sm.list()) == 6 })
	if s := c.nodes[f].rep.Status(); s.Failed {
		t.Fatal("follower failed")
	}
}
