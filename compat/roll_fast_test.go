package compat

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"
)

// waitPreferred waits until node id shows every partition of topic led by
// its preferred replica (the automatic rebalance after a rejoin); topic ""
// means every topic.
func (c *cluster) waitPreferred(t *testing.T, id int, topic string) {
	t.Helper()
	waitFor(t, 20*time.Second, "leaders back on preferred replicas", func() bool {
		ps, err := c.partitions(id)
		if err != nil {
			return false
		}
		for _, p := range ps {
			if (topic == "" || p.Topic == topic) && len(p.Replicas) > 0 && p.Leader != p.Replicas[0] {
				return false
			}
		}
		return true
	})
}

// rollsFromEnv is how many rolls TestRollingRestartFast makes in a row:
// CHRONIK_ROLLS (the figures are over 5), 1 by default so that
// make test stays fast.
func rollsFromEnv(t *testing.T) int {
	v := os.Getenv("CHRONIK_ROLLS")
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("CHRONIK_ROLLS=%q: want a positive number of rolls", v)
	}
	return n
}

// latenciesBetween returns the produce latencies of the records
// acknowledged in [from, to], sorted.
func (l *loader) latenciesBetween(from, to time.Time) []time.Duration {
	l.mu.Lock()
	var out []time.Duration
	for _, a := range l.acked {
		if !a.at.Before(from) && !a.at.After(to) {
			out = append(out, a.latency)
		}
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// latencySummary is "p50 …, p99 …, p999 …, max …" of sorted latencies.
func latencySummary(lat []time.Duration) string {
	if len(lat) == 0 {
		return "no acks"
	}
	r := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %v, p99 %v, p999 %v, max %v over %d acks", r(percentile(lat, 0.5)), r(percentile(lat, 0.99)),
		r(percentile(lat, 0.999)), r(lat[len(lat)-1]), len(lat))
}

// TestRollingRestartFast rolls nodes 2, 3, 1 at an orchestrator's pace
// (the next SIGTERM as soon as a live node shows a full ISR, no settle
// time, no wait for the restarted node's readiness) under franz-go at
// defaults, then lets the rebalance put leadership back; CHRONIK_ROLLS
// rolls in a row, the next starting as soon as leadership is back. The
// target is 100 ms without an ack on any one partition; the bound here is
// 3x that (more under -race) for CI noise, in every roll. Each roll's
// longest gap and produce latencies are logged. Nothing may fail, be lost
// or repeat.
func TestRollingRestartFast(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "fast", 30, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	l := startLoader(t, c, "fast", 3000)
	l.waitAcks(3000, 30*time.Second)

	rolls := rollsFromEnv(t)
	tl := newRollTimeline()
	pw := startPaceWatch(t)
	var worst time.Duration
	for r := 1; r <= rolls; r++ {
		from := time.Now()
		tl.note("roll %d", r)
		rollFast(t, c, tl, "fast", 2, 3, 1)
		c.waitPreferred(t, 2, "fast")
		tl.note("roll %d: leaders back on the preferred replicas", r)
		to := time.Now()
		stalls := l.stallsBetween(from, to)
		worst = max(worst, stalls[len(stalls)-1])
		t.Logf("roll %d of %d (%v, rebalance included): longest gap between acks per partition %s; produce latency %s; the test process itself ran late by %s; the longest gaps:%s",
			r, rolls, to.Sub(from).Round(time.Millisecond), stallSummary(stalls), latencySummary(l.latenciesBetween(from, to)),
			pw.worst(tl, from, to), l.worstGaps(tl, from, to, 3))
		checkStalls(t, stalls, 300*time.Millisecond*raceSlack, fmt.Sprintf(" in roll %d", r))
	}
	end := time.Now()
	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	t.Logf("%d rolls in %v: longest gap between acks on a partition %v; produce latency %s", rolls,
		end.Sub(tl.start).Round(time.Millisecond), worst.Round(time.Millisecond), latencySummary(l.latenciesBetween(tl.start, end)))
	l.checkDelivered(t, c, "the rolls")
}
