package compat

import (
	"context"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
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
		"Starting graceful shutdown for node " + strconv.Itoa(nd.id),
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

var transferLine = regexp.MustCompile(`Successfully transferred leadership for \S+ in ([0-9.]+)(ms|s)`)

// transferDurations collects the per-partition transfer times a node logged.
func transferDurations(nd *node) []time.Duration {
	var out []time.Duration
	for _, m := range transferLine.FindAllStringSubmatch(nd.log.String(), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		unit := time.Millisecond
		if m[2] == "s" {
			unit = time.Second
		}
		out = append(out, time.Duration(v*float64(unit)))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// metric returns the value of a metric line that starts with name (labels
// included) on node id.
func (c *cluster) metric(id int, name string) (float64, bool) {
	code, body, err := c.get(id, "/metrics")
	if err != nil || code != 200 {
		return 0, false
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// groupConsumer reads a topic through a consumer group until stopped and
// counts what it saw.
type groupConsumer struct {
	mu   sync.Mutex
	seen map[string]int
	stop chan struct{}
	done chan struct{}
}

func startGroupConsumer(t *testing.T, c *cluster, topic, group string) *groupConsumer {
	cl := newFranz(t, c, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	g := &groupConsumer{seen: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		for {
			select {
			case <-g.stop:
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				cl.CommitUncommittedOffsets(ctx)
				cancel()
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			fs := cl.PollFetches(ctx)
			cancel()
			fs.EachRecord(func(r *kgo.Record) {
				g.mu.Lock()
				g.seen[string(r.Value)]++
				g.mu.Unlock()
			})
		}
	}()
	t.Cleanup(func() { g.halt() })
	return g
}

func (g *groupConsumer) halt() {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	<-g.done
}

func (g *groupConsumer) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}

// TestRollingRestartUnderLoad rolls all three nodes with SIGTERM, one after
// the other, under continuous idempotent acks=all produce at franz-go
// defaults and a consumer group reading along. Nothing may be lost or
// duplicated, no request may fail, every node must come back with a full
// ISR, and the admin endpoints and metrics must show each step.
func TestRollingRestartUnderLoad(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "roll", 30, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	l := startLoader(t, c, "roll", 3000)
	cons := startGroupConsumer(t, c, "roll", "roll-readers")
	l.waitAcks(3000, 30*time.Second)
	waitFor(t, 30*time.Second, "the group to consume", func() bool { return cons.count() > 1000 })

	rollStart := time.Now()
	tl := newRollTimeline()
	var transfers []time.Duration
	for _, nd := range c.nodes {
		other := nd.id%3 + 1
		stopStart := time.Now()
		tl.note("SIGTERM to node %d", nd.id)
		c.stop(nd.id, 30*time.Second)
		stopped := time.Since(stopStart)
		tl.note("node %d exited", nd.id)
		checkShutdownLog(t, nd)
		for _, line := range nd.log.lines("Graceful shutdown complete") {
			t.Logf("node %d: %s (SIGTERM to exit %v)", nd.id, line[strings.Index(line, "msg="):], stopped.Round(time.Millisecond))
		}
		transfers = append(transfers, transferDurations(nd)...)
		// While it is down the others report it: no leadership, and a
		// degraded cluster.
		if v, ok := c.metric(other, `chronik_partition_leader_count{node="`+strconv.Itoa(nd.id)+`"}`); !ok || v != 0 {
			t.Errorf("while node %d is down, node %d reports it leading %v partitions", nd.id, other, v)
		}
		if code, _, _ := c.get(other, "/health"); code != 503 {
			t.Errorf("while node %d is down, node %d's /health answered %d", nd.id, other, code)
		}
		restart := time.Now()
		c.start(nd.id)
		tl.note("node %d started", nd.id)
		c.waitReady(30 * time.Second)
		ready := time.Since(restart)
		tl.note("node %d ready", nd.id)
		c.waitAllHealthy(30 * time.Second)
		tl.note("every node healthy")
		t.Logf("node %d: ready %v after start, every node healthy after %v", nd.id, ready.Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
	}
	rollEnd := time.Now()
	t.Logf("rolled 3 nodes in %v (each back with a full ISR before the next)", rollEnd.Sub(rollStart).Round(time.Millisecond))
	sort.Slice(transfers, func(i, j int) bool { return transfers[i] < transfers[j] })
	if len(transfers) > 0 {
		t.Logf("leadership transfers: %d, p50 %v, p99 %v, max %v", len(transfers),
			percentile(transfers, 0.5), percentile(transfers, 0.99), transfers[len(transfers)-1])
	}
	// Leadership returns to the preferred replicas.
	back := time.Now()
	waitFor(t, 20*time.Second, "leaders back on preferred replicas", func() bool {
		ps, err := c.partitions(1)
		if err != nil {
			return false
		}
		for _, p := range ps {
			if len(p.Replicas) > 0 && p.Leader != p.Replicas[0] {
				return false
			}
		}
		return true
	})
	t.Logf("leadership back on the preferred replicas %v after the last node rejoined", time.Since(back).Round(time.Millisecond))
	tl.note("leaders back on the preferred replicas")

	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	stalls := l.stallsBetween(rollStart, time.Now())
	t.Logf("longest gaps between acks on a partition:%s", l.worstGaps(tl, rollStart, time.Now(), 5))
	t.Logf("longest gap between acks per partition during the roll and rebalance: %s", stallSummary(stalls))
	// Following a leader hint takes milliseconds; a second or more means a
	// client was left to wait for its next metadata refresh (franz-go: 5 s).
	checkStalls(t, stalls, time.Second*raceSlack, " during the roll")
	l.checkDelivered(t, c, "the roll")
	acked := l.ackedCount()
	waitFor(t, 60*time.Second, "the group to read everything", func() bool { return cons.count() >= acked })
	cons.halt()
	t.Logf("the consumer group read all %d records across the roll", cons.count())
	for _, id := range []int{1, 2, 3} {
		if v, ok := c.metric(id, `chronik_partition_isr_count{partition="roll-0"}`); !ok || v != 3 {
			t.Errorf("node %d reports roll-0 ISR of %v", id, v)
		}
	}
}
