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

// TestFranzGroupRebalance: three members of one group share six
// partitions; one leaves half way; the others take over its partitions and
// nothing is lost; after everyone commits and leaves, a new member gets
// only what was produced after.
func TestFranzGroupRebalance(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "grp", 6, 3, nil)
	prod := newFranz(t, c, kgo.DefaultProduceTopic("grp"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	const n = 3000
	produceAll(t, prod, "grp", n, "g1")

	var mu sync.Mutex
	seen := map[string]int{}
	total := 0
	newMember := func() *kgo.Client {
		return newFranz(t, c, kgo.ConsumeTopics("grp"), kgo.ConsumerGroup("grp-group"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, _ map[string][]int32) {
				cl.CommitUncommittedOffsets(ctx)
			}))
	}
	members := []*kgo.Client{newMember(), newMember(), newMember()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	stop := make([]chan struct{}, 3)
	for i, m := range members {
		stop[i] = make(chan struct{})
		wg.Add(1)
		go func(i int, m *kgo.Client) {
			defer wg.Done()
			for {
				select {
				case <-stop[i]:
					m.CommitUncommittedOffsets(ctx)
					m.LeaveGroup()
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				fs := m.PollRecords(pctx, 50)
				pcancel()
				fs.EachRecord(func(r *kgo.Record) {
					mu.Lock()
					seen[string(r.Value)]++
					total++
					mu.Unlock()
				})
				if err := m.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
					t.Logf("member %d commit: %v", i, err)
				}
			}
		}(i, m)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	waitFor(t, 30*time.Second, "half the records", func() bool { return count() >= n/2 })
	close(stop[0]) // one member leaves; the other two take its partitions
	waitFor(t, 45*time.Second, "all records after the rebalance", func() bool { return count() >= n })
	close(stop[1])
	close(stop[2])
	wg.Wait()
	mu.Lock()
	for i := 0; i < n; i++ {
		if seen[string(testValue("g1", i))] == 0 {
			t.Errorf("record %d never consumed", i)
		}
	}
	t.Logf("consumed %d distinct records in %d deliveries across a rebalance", len(seen), total)
	mu.Unlock()

	// Everything was committed: a fresh member sees only new records.
	produceAll(t, prod, "grp", 10, "g2")
	fresh := newMember()
	var got []string
	waitFor(t, 30*time.Second, "the 10 new records", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer pcancel()
		fresh.PollFetches(pctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
		return len(got) >= 10
	})
	time.Sleep(300 * time.Millisecond)
	pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	fresh.PollFetches(pctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	pcancel()
	for _, v := range got {
		if !bytes.HasPrefix([]byte(v), []byte("g2-")) {
			t.Fatalf("a committed record was delivered again: %q", v[:12])
		}
	}
	if len(got) != 10 {
		t.Fatalf("fresh member got %d records, want 10", len(got))
	}
}

// TestFranzAdminAndTimestamps: create and delete topics, and look up
// offsets by timestamp.
func TestFranzAdminAndTimestamps(t *testing.T) {
	c := startCluster(t, 3)
	cl := newFranz(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ret := "3600000"
	if _, err := adm.CreateTopic(ctx, 3, 3, map[string]*string{"retention.ms": &ret}, "adm"); err != nil {
		t.Fatal(err)
	}
	if r, err := adm.CreateTopic(ctx, 1, 1, nil, "adm"); err == nil && r.Err == nil {
		t.Fatal("creating an existing topic succeeded")
	}
	rc, err := adm.DescribeTopicConfigs(ctx, "adm")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rc {
		for _, c := range r.Configs {
			if c.Key == "retention.ms" && c.Value != nil && *c.Value == ret {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("retention.ms not described: %+v", rc)
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := 0; i < 100; i++ {
		r := &kgo.Record{Topic: "adm", Partition: 0, Value: []byte(fmt.Sprint(i)), Timestamp: base.Add(time.Duration(i) * time.Second)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	offs, err := adm.ListOffsetsAfterMilli(ctx, base.Add(42500*time.Millisecond).UnixMilli(), "adm")
	if err != nil {
		t.Fatal(err)
	}
	// Partition 0 got the records in order; the first at or after 42.5s is the 43rd.
	lo, _ := offs.Lookup("adm", 0)
	if lo.Err != nil || lo.Offset < 0 {
		t.Fatalf("offset by time: %+v", lo)
	}
	if lo.Offset != 43 {
		t.Fatalf("offset for 42.5s after base: %d, want 43", lo.Offset)
	}
	if _, err := adm.DeleteTopics(ctx, "adm"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "topic gone", func() bool {
		md, err := adm.ListTopics(ctx)
		return err == nil && !md.Has("adm")
	})
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "adm"); err != nil {
		t.Fatal(err)
	}
	ends := listEnds(t, cl, "adm")
	if ends[0] != 0 {
		t.Fatalf("recreated topic is not empty: end offset %d", ends[0])
	}
}
