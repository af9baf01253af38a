package raft

import (
	"context"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// TestLearnerBehindCacheRefilled adds a learner to a group holding 3 MiB,
// more than the entry cache: etcd raft's appends to it would be read from
// the log on the leader's worker, so the leader refills it instead (read
// by the refill readers) up to where the cache starts, and etcd raft's
// appends take over from there. The learner ends up holding everything.
func TestLearnerBehindCacheRefilled(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	c.host = func(cfg *Config) {
		cfg.TickInterval, cfg.ElectionTicks, cfg.HeartbeatTicks = 20*time.Millisecond, 50, 1
	}
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	const entries, size = 192, 16 << 10
	payload := make([]byte, size)
	var target uint64
	for done := 0; done < entries; {
		l := c.leader(10 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var ps []Pending
		for i := 0; i < 16; i++ {
			ps = append(ps, l.rep.Submit(clog.KindCommand, payload))
		}
		ok := true
		for _, p := range ps {
			res, err := l.rep.Wait(ctx, p, true)
			if err != nil {
				ok = false
				break
			}
			target = max(target, res.Index)
		}
		cancel()
		if ok {
			done += len(ps)
		}
	}
	n4 := c.start(4, true)
	c.reconfigure(Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}, 10*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for n4.rep.Status().Applied < target {
		if time.Now().After(deadline) {
			t.Fatalf("learner at %d of %d after 20 s", n4.rep.Status().Applied, target)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var behind uint64
	for _, nd := range c.running() {
		behind += nd.host.BehindRefills()
	}
	if behind == 0 {
		t.Fatal("no leader refilled the learner: etcd raft read its entries on a worker")
	}
}
