package compat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCatchUpThroughSnapshot: a replica stops, 100,000 records are written
// and retention deletes the log it would need; when it comes back, the
// leader sends a snapshot, the replica restarts its log at the leader's log
// start and catches up. It then leads (preferred replica) and serves
// exactly what the others hold.
func TestCatchUpThroughSnapshot(t *testing.T) {
	c := startCluster(t, 3, withArgs("--retention-check-interval", "200ms", "--rebalance-delay", "500ms"))
	seg, ret := "262144", "1048576"
	createTopic(t, c, "snap", 1, 3, map[string]*string{"segment.bytes": &seg, "retention.bytes": &ret})
	c.waitAllHealthy(30 * time.Second)
	ps, _ := c.partitions(1)
	var pref int
	for _, p := range ps {
		if p.Topic == "snap" {
			pref = int(p.Replicas[0])
		}
	}
	c.stop(pref, 20*time.Second)

	cl := newFranz(t, c, kgo.DefaultProduceTopic("snap"), kgo.ProducerBatchMaxBytes(64<<10))
	const n = 100000
	acked := produceAll(t, cl, "snap", n, "s")
	// Wait until retention on the live nodes has deleted the records the
	// stopped replica would need.
	other := 1
	if pref == 1 {
		other = 2
	}
	var start int64
	waitFor(t, 30*time.Second, "retention to delete old segments", func() bool {
		ps, err := c.partitions(other)
		if err != nil {
			return false
		}
		for _, p := range ps {
			if p.Topic == "snap" {
				start = p.LogStartOffset
			}
		}
		return start > 0
	})
	t.Logf("log start offset moved to %d while node %d was down", start, pref)

	c.start(pref)
	c.waitReady(30 * time.Second)
	waitFor(t, 30*time.Second, "the snapshot install", func() bool {
		return len(c.node(pref).log.lines("installed raft snapshot")) > 0
	})
	waitFor(t, 30*time.Second, "the preferred replica to lead again", func() bool {
		return int(c.leaderOf(other, "snap", 0)) == pref
	})
	// Read everything the new leader holds; it must match what was acked.
	ends := listEnds(t, cl, "snap")
	cons := newFranz(t, c, kgo.ConsumeTopics("snap"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	byOffset := map[int64]string{}
	for v, pos := range acked {
		byOffset[pos[1]] = v
	}
	var first int64 = -1
	next := int64(-1)
	for next < ends[0] {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read up to %d of %d", next, ends[0])
		}
		fs.EachRecord(func(r *kgo.Record) {
			if first < 0 {
				first = r.Offset
			} else if r.Offset != next {
				t.Fatalf("gap: offset %d after %d", r.Offset, next-1)
			}
			if byOffset[r.Offset] != string(r.Value) {
				t.Fatalf("offset %d holds %q, acked %q", r.Offset, shorten(r.Value), shorten([]byte(byOffset[r.Offset])))
			}
			next = r.Offset + 1
		})
	}
	if first < start {
		t.Fatalf("served from %d, before the log start %d", first, start)
	}
	t.Logf("node %d served offsets %d-%d after catching up through a snapshot", pref, first, next-1)
}

func shorten(b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, '-'); i >= 0 && len(s) > i+8 {
		return s[:i+8]
	}
	return fmt.Sprint(len(s), " bytes")
}
