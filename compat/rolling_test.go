package compat

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitAllHealthy waits until every node reports every partition led and
// fully in sync.
func (c *cluster) waitAllHealthy(d time.Duration) {
	c.t.Helper()
	for _, nd := range c.nodes {
		c.waitHealthy(nd.id, d)
	}
}

// checkShutdownLog checks that a stopped node printed the runbook's lines.
func checkShutdownLog(t *testing.T, nd *node) {
	t.Helper()
	log := nd.log.String()
	for _, want := range []string{
		"Starting graceful shutdown for node " + itoa(nd.id),
		"Step 1/4: Draining in-flight requests",
		"All in-flight requests drained in",
		"Step 2/4: Transferring leadership",
		"Step 3/4: Syncing WAL to disk",
		"WAL sync complete",
		"Step 4/4: Shutting down",
		"Graceful shutdown complete in",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("node %d log lacks %q", nd.id, want)
		}
	}
}

func itoa(n int) string {
	return strconv.Itoa(n)
}

// TestRollingRestartUnderLoad rolls all three nodes with SIGTERM, one after
// the other, under continuous idempotent acks=all produce at franz-go
// defaults. Nothing may be lost or duplicated, no request may fail with a
// non-retriable error, and every node must come back with a full ISR.
func TestRollingRestartUnderLoad(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "roll", 30, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	l := startLoader(t, c, "roll", 3000)
	l.waitAcks(3000, 30*time.Second)
	rollStart := time.Now()
	for _, nd := range c.nodes {
		stopStart := time.Now()
		c.stop(nd.id, 30*time.Second)
		stopped := time.Since(stopStart)
		checkShutdownLog(t, nd)
		for _, line := range nd.log.lines("Graceful shutdown complete") {
			t.Logf("node %d: %s (SIGTERM to exit %v)", nd.id, line[strings.Index(line, "msg="):], stopped.Round(time.Millisecond))
		}
		c.start(nd.id)
		c.waitReady(30 * time.Second)
		c.waitAllHealthy(30 * time.Second)
	}
	t.Logf("rolled 3 nodes in %v", time.Since(rollStart).Round(time.Millisecond))
	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	l.mu.Lock()
	nonRetry := l.nonRetry
	errs := len(l.errs)
	p99 := percentile(l.gaps, 0.99)
	l.mu.Unlock()
	t.Logf("gaps over 20ms between acks: %d, p99 %v", len(l.gaps), p99)
	t.Logf("big gaps: %v", l.bigGaps)
	for _, nd := range c.nodes {
		for _, s := range []string{"Transferring", "Successfully", "moved leadership", "Step", "peer"} {
			for _, line := range nd.log.lines(s) {
				t.Logf("node %d: %s", nd.id, line)
			}
		}
	}
	if len(nonRetry) > 0 || errs > 0 {
		t.Errorf("produce errors during the roll: %v", l.errs)
	}
	lost, dup := l.verify(c)
	if lost != 0 || dup != 0 {
		t.Fatalf("lost %d acknowledged records, %d duplicates", lost, dup)
	}
}
