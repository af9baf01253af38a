package compat

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// record value for (partition-independent) sequence i: recognisable and
// checkable byte for byte.
func testValue(prefix string, i int) []byte {
	return []byte(fmt.Sprintf("%s-%06d-%s", prefix, i, bytes.Repeat([]byte{byte('a' + i%26)}, 40+i%60)))
}

func newFranz(t testing.TB, c *cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(c.bootstrap()...), kgo.RequiredAcks(kgo.AllISRAcks())}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t testing.TB, c *cluster, name string, partitions int32, rf int16, configs map[string]*string) {
	t.Helper()
	cl := newFranz(t, c)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, rf, configs, name)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", name, err, resp.Err)
	}
}

// produceAll produces n records with franz-go (idempotent, acks=all) and
// returns each record's partition and offset.
func produceAll(t testing.TB, cl *kgo.Client, topic string, n int, prefix string) map[string][2]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	acked := map[string][2]int64{}
	var wg sync.WaitGroup
	var firstErr error
	for i := 0; i < n; i++ {
		wg.Add(1)
		v := testValue(prefix, i)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint(i)), Value: v}, func(r *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			acked[string(r.Value)] = [2]int64{int64(r.Partition), r.Offset}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("produce: %v", firstErr)
	}
	return acked
}

// consumeAll reads a topic from the start until want records arrived.
func consumeAll(t testing.TB, c *cluster, topic string, want int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl := newFranz(t, c, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before the deadline", len(out), want)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Logf("fetch error %s/%d: %v", topic, p, err)
		})
		out = append(out, fs.Records()...)
	}
	return out
}

func TestFranzProduceConsume(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "franz", 6, 3, nil)
	cl := newFranz(t, c, kgo.DefaultProduceTopic("franz"))
	const n = 10000
	acked := produceAll(t, cl, "franz", n, "fz")
	if len(acked) != n {
		t.Fatalf("acked %d of %d", len(acked), n)
	}
	recs := consumeAll(t, c, "franz", n)
	seen := map[string]bool{}
	for _, r := range recs {
		pos, ok := acked[string(r.Value)]
		if !ok {
			t.Fatalf("consumed a record that was never produced: %q", r.Value)
		}
		if pos != [2]int64{int64(r.Partition), r.Offset} {
			t.Fatalf("record %q at %d/%d, acked at %v", r.Value, r.Partition, r.Offset, pos)
		}
		if seen[string(r.Value)] {
			t.Fatalf("duplicate %q", r.Value)
		}
		seen[string(r.Value)] = true
	}
	if len(seen) != n {
		t.Fatalf("read back %d distinct of %d", len(seen), n)
	}
}
