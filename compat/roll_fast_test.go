package compat

import (
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

// TestRollingRestartFast rolls nodes 2, 3, 1 at an orchestrator's pace
// (the next SIGTERM as soon as a live node shows a full ISR, no settle
// time, no wait for the restarted node's readiness) under franz-go at
// defaults, then lets the rebalance put leadership back. The target is
// 100 ms without an ack on any one partition; the bound here is 3x that
// (more under -race) for CI noise. Nothing may fail, be lost or repeat.
func TestRollingRestartFast(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "fast", 30, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	l := startLoader(t, c, "fast", 3000)
	l.waitAcks(3000, 30*time.Second)

	tl := newRollTimeline()
	rollFast(t, c, tl, "fast", 2, 3, 1)
	t.Logf("rolled 3 nodes in %v", time.Since(tl.start).Round(time.Millisecond))
	c.waitPreferred(t, 2, "fast")
	tl.note("leaders back on the preferred replicas")
	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	end := time.Now()
	stalls := l.stallsBetween(tl.start, end)
	t.Logf("longest gap between acks per partition, roll and rebalance: %s; the longest:%s",
		stallSummary(stalls), l.worstGaps(tl, tl.start, end, 5))
	checkStalls(t, stalls, 300*time.Millisecond*raceSlack, "")
	l.checkDelivered(t, c, "the roll")
}
