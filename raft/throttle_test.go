package raft

import (
	"context"
	"slices"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// TestLearnerThrottle adds a learner to a group holding 3 MiB with
// Config.LearnerRate at 1 MiB/s: it catches up at that rate (within
// 20%), while proposals to the voters keep committing fast.
func TestLearnerThrottle(t *testing.T) {
	const rate = 1 << 20
	c := newMemberCluster(t, 1, 2, 3)
	c.host = func(cfg *Config) { cfg.LearnerRate = rate }
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	l := c.leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const entries, size = 192, 16 << 10
	payload := make([]byte, size)
	var ps []Pending
	for i := 0; i < entries; i++ {
		ps = append(ps, l.rep.Submit(clog.KindCommand, payload))
	}
	for _, p := range ps {
		if _, err := l.rep.Wait(ctx, p, true); err != nil {
			t.Fatal(err)
		}
	}
	res, _ := l.rep.Wait(ctx, ps[len(ps)-1], true)
	target := res.Index
	n4 := c.start(4, true)
	start := time.Now()
	c.reconfigure(Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}, 10*time.Second)
	// Voters' commits while the learner catches up.
	// The rate is measured from 10% to 90% of the copy, past the start
	// (adding the learner, probing its log) and the end.
	var lat []time.Duration
	var t10, t90 time.Time
	for {
		applied := n4.rep.Status().Applied
		if t10.IsZero() && applied >= target/10 {
			t10 = time.Now()
		}
		if applied >= target*9/10 {
			t90 = time.Now()
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("learner at %d of %d after 20 s", applied, target)
		}
		t0 := time.Now()
		c.propose([]byte("small"), 5*time.Second)
		lat = append(lat, time.Since(t0))
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	got := 0.8 * float64(entries*size) / t90.Sub(t10).Seconds()
	slices.Sort(lat)
	p99 := lat[len(lat)*99/100]
	t.Logf("learner copied 90%% of %d KiB in %v: %.0f KiB/s from 10%% to 90%% (limit %d KiB/s); %d voter commits meanwhile, p50 %v p99 %v max %v; %d messages held back",
		entries*size>>10, took.Round(time.Millisecond), got/1024, rate>>10, len(lat), lat[len(lat)/2], p99, lat[len(lat)-1],
		l.host.ThrottledLearnerMessages())
	if got < 0.8*rate || got > 1.2*rate {
		t.Fatalf("learner rate %.0f B/s, want %d ±20%%", got, rate)
	}
	if p99 > 200*time.Millisecond {
		t.Fatalf("voter commit p99 %v during the catch-up", p99)
	}
}
