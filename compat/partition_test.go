package compat

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestPartitionLeaderAway cuts the leader of a partition off from the other
// nodes (clients still reach it). Writes sent to the cut-off leader must
// not be acknowledged; the majority elects a new leader and carries on; after
// healing, the old leader drops its unacknowledged tail and nothing
// acknowledged is lost or duplicated.
func TestPartitionLeaderAway(t *testing.T) {
	c := startCluster(t, 3, withRaftProxies())
	createTopic(t, c, "part", 1, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	l := startLoader(t, c, "part", 500)
	l.waitAcks(500, 30*time.Second)
	old := int(c.leaderOf(1, "part", 0))
	if old == 0 {
		t.Fatal("no leader")
	}
	c.isolate(old)
	cutAt := time.Now()
	elected := make(chan time.Duration, 1)
	go func() {
		for time.Since(cutAt) < 20*time.Second {
			for _, nd := range c.nodes {
				if ld := c.leaderOf(nd.id, "part", 0); nd.id != old && ld != 0 && int(ld) != old {
					elected <- time.Since(cutAt)
					return
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	// A client that talks only to the cut-off node: nothing it sends may be
	// acknowledged.
	direct, err := kgo.NewClient(kgo.SeedBrokers(c.node(old).kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	minorityAcks := 0
	for i := 0; i < 5; i++ {
		req := kmsg.NewPtrProduceRequest()
		req.Acks = -1
		req.TimeoutMillis = 1000
		rec := kgo.Record{Value: []byte("minority-write")}
		batch := produceBatch(t, &rec)
		req.Topics = []kmsg.ProduceRequestTopic{{Topic: "part", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: batch}}}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := req.RequestWith(ctx, direct.Broker(old))
		cancel()
		if err != nil {
			continue
		}
		code := resp.Topics[0].Partitions[0].ErrorCode
		if code == 0 {
			minorityAcks++
		} else if e := kerr.ErrorForCode(code); !kerr.IsRetriable(e) {
			t.Errorf("minority answered a non-retriable error: %v", e)
		} else {
			t.Logf("minority write %d: %v", i, e)
		}
	}
	if minorityAcks != 0 {
		t.Fatalf("the cut-off leader acknowledged %d writes", minorityAcks)
	}

	// The majority elects a leader and takes writes.
	var newLeader int32
	waitFor(t, 10*time.Second, "a new leader in the majority", func() bool {
		for _, nd := range c.nodes {
			if nd.id == old {
				continue
			}
			if ld := c.leaderOf(nd.id, "part", 0); ld != 0 && int(ld) != old {
				newLeader = ld
				return true
			}
		}
		return false
	})
	select {
	case d := <-elected:
		t.Logf("node %d cut off; node %d leads the majority after %v", old, newLeader, d.Round(time.Millisecond))
	case <-time.After(time.Second):
	}
	before := l.ackedCount()
	l.waitAcks(before+500, 30*time.Second)

	c.heal()
	c.waitAllHealthy(30 * time.Second)
	l.waitAcks(l.ackedCount()+500, 30*time.Second)
	l.halt()
	t.Log(l.report())
	lost, dup := l.verify(c)
	if lost != 0 || dup != 0 {
		t.Fatalf("lost %d acknowledged records, %d duplicates", lost, dup)
	}
	// The unacknowledged minority writes were discarded with the old
	// leader's tail.
	recs := consumeAll(t, c, "part", int(listEnds(t, newFranz(t, c), "part")[0]))
	for _, r := range recs {
		if string(r.Value) == "minority-write" {
			t.Fatalf("a write the minority never acknowledged is in the log at offset %d", r.Offset)
		}
	}
}

// produceBatch encodes one record as an uncompressed, non-idempotent v2
// batch with a valid CRC.
func produceBatch(t *testing.T, r *kgo.Record) []byte {
	t.Helper()
	rec := kmsg.Record{Value: r.Value}
	rec.Length = int32(len(rec.AppendTo(nil)) - 1)
	b := kmsg.RecordBatch{Magic: 2, NumRecords: 1, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		FirstTimestamp: time.Now().UnixMilli(), MaxTimestamp: time.Now().UnixMilli(), Records: rec.AppendTo(nil)}
	raw := b.AppendTo(nil)
	return withCRC(raw)
}
