package raft

import (
	"context"
	"slices"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// TestLearnerThrottle adds a learner to a group holding 3 MiB with
// Config.LearnerRate at 1 MiB/s: it catches up no faster than that
// (within 20%), while proposals to the voters keep committing fast.
func TestLearnerThrottle(t *testing.T) {
	const rate = 1 << 20
	c := newMemberCluster(t, 1, 2, 3)
	c.host = func(cfg *Config) {
		cfg.LearnerRate = rate
		// A leadership change would restart the bucket: keep the leader
		// on a loaded machine (a second's election timeout).
		cfg.TickInterval, cfg.ElectionTicks, cfg.HeartbeatTicks = 20*time.Millisecond, 50, 1
	}
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	// 3 MiB in batches of 16 entries, again at the next leader when
	// leadership moves (a loaded machine).
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
	start := time.Now()
	c.reconfigure(Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}, 10*time.Second)
	// Voters' commits while the learner catches up.
	// The rate is measured from 25% to 90% of the copy, past the start
	// (adding the learner, probing its log, the bucket's burst of half a
	// second of the rate) and the end.
	// The window runs from the last sample below 25% to the first at or
	// above 90%, with the entries applied at each: a loaded machine can
	// leave a long time between two samples, and a window that opened and
	// closed on the same sample would divide by nothing.
	var lat []time.Duration
	var t10, t90 time.Time
	var a10, a90 uint64
	for {
		now, applied := time.Now(), n4.rep.Status().Applied
		if applied < target/4 {
			t10, a10 = now, applied
		}
		if applied >= target*9/10 {
			t90, a90 = now, applied
			if t10.IsZero() {
				t10, a10 = start, 0
			}
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("learner at %d of %d after 20 s", applied, target)
		}
		// A commit that fails (a leadership change on a loaded machine)
		// counts with the time it took.
		t0 := time.Now()
		pctx, pcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if l := c.leader(10 * time.Second); l != nil {
			l.rep.Propose(pctx, clog.KindCommand, []byte("small"), true)
		}
		pcancel()
		lat = append(lat, time.Since(t0))
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	// Past target the log holds the loop's small proposals, not 16 KiB
	// entries: a late sample that lands among them must not count them
	// at 16 KiB each (one run read 2.3 MiB/s that way).
	a90 = min(a90, target)
	got := float64((a90-a10)*size) / t90.Sub(t10).Seconds() // entries of the batches, retried ones too
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	held := uint64(0)
	for _, nd := range c.running() {
		held += nd.host.ThrottledLearnerMessages()
	}
	t.Logf("learner copied 90%% of %d KiB in %v: %.0f KiB/s from 25%% to 90%% (limit %d KiB/s); %d voter commits meanwhile, p50 %v p99 %v max %v; %d messages held back",
		entries*size>>10, took.Round(time.Millisecond), got/1024, rate>>10, len(lat), lat[len(lat)/2], p99, lat[len(lat)-1],
		held)
	// The limit holds within 20%. Below it the copy is bound by what a
	// loaded machine can do (under the race detector, with other tests):
	// a third of the rate is the floor asserted; an idle machine measures
	// within a few percent of the rate (see the log line).
	if got > 1.2*rate || got < rate/3 {
		t.Fatalf("learner rate %.0f B/s, want at most %d +20%% (and at least a third)", got, rate)
	}
	if p50 := lat[len(lat)/2]; p50 > 100*time.Millisecond {
		t.Fatalf("voter commit p50 %v during the catch-up", p50)
	}
}
