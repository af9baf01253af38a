package raft

import (
	"context"
	"errors"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// TestAppendedResultStable: a proposal acknowledged as appended (acks=1)
// and failed later (here the leader is cut off and stops) must not have its
// appended result rewritten under the reader. Run with -race.
func TestAppendedResultStable(t *testing.T) {
	c := newTestCluster(t, 3, false)
	l := c.leader()
	c.net.Isolate(l.host.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p := l.rep.Submit(clog.KindCommand, []byte("orphan"))
	res, err := l.rep.Wait(ctx, p, false)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	if res.Index == 0 {
		t.Fatal("appended proposal has no index")
	}
	c.stop(l.host.ID())
	select {
	case <-Done(p):
	case <-ctx.Done():
		t.Fatal("proposal not finished after its replica stopped")
	}
	// The appended outcome stays what it was; the final one is the failure.
	if res2, err := l.rep.Wait(ctx, p, false); err != nil || res2 != res {
		t.Fatalf("appended outcome changed: %v %v", res2, err)
	}
	if _, err := l.rep.Wait(ctx, p, true); !errors.Is(err, ErrStopped) {
		t.Fatalf("final outcome: %v, want ErrStopped", err)
	}
}
