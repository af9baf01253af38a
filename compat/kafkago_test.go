package compat

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// kafkagoWrite writes msgs with a synchronous acks=all Writer and returns
// each acknowledged value's partition and offset.
func kafkagoWrite(t testing.TB, c *cluster, topic string, bal kafka.Balancer, msgs []kafka.Message) map[string][2]int64 {
	t.Helper()
	var mu sync.Mutex
	acked := map[string][2]int64{}
	var dup []string
	w := &kafka.Writer{
		Addr:         kafka.TCP(c.bootstrap()...),
		Topic:        topic,
		Balancer:     bal,
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    500,
		MaxAttempts:  20,
		Completion: func(ms []kafka.Message, err error) {
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, m := range ms {
				if _, ok := acked[string(m.Value)]; ok {
					dup = append(dup, string(m.Value))
				}
				acked[string(m.Value)] = [2]int64{int64(m.Partition), m.Offset}
			}
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := w.WriteMessages(ctx, msgs...)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("kafka-go WriteMessages: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dup) > 0 {
		t.Fatalf("kafka-go: %d values acknowledged twice, e.g. %q", len(dup), dup[0])
	}
	if len(acked) != len(msgs) {
		t.Fatalf("kafka-go: %d of %d acknowledged", len(acked), len(msgs))
	}
	return acked
}

// kafkagoHighWatermarks lists each partition's high watermark with
// kafka-go's Client.
func kafkagoHighWatermarks(t testing.TB, c *cluster, topic string, parts int) []int64 {
	t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(c.bootstrap()...), Timeout: 10 * time.Second}
	var reqs []kafka.OffsetRequest
	for p := 0; p < parts; p++ {
		reqs = append(reqs, kafka.LastOffsetOf(p))
	}
	resp, err := cl.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatalf("kafka-go ListOffsets: %v", err)
	}
	out := make([]int64, parts)
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("kafka-go ListOffsets %s/%d: %v", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
	}
	if len(resp.Topics[topic]) != parts {
		t.Fatalf("kafka-go ListOffsets: %d of %d partitions answered", len(resp.Topics[topic]), parts)
	}
	return out
}

func TestKafkaGoProduceConsume(t *testing.T) {
	c := startCluster(t, 3)
	const topic, n, parts = "kafkago", 10000, 6
	createTopic(t, c, topic, parts, 3, nil)
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(strconv.Itoa(i)), Value: testValue("kg", i)}
	}
	acked := kafkagoWrite(t, c, topic, &kafka.Hash{}, msgs)
	hwm := kafkagoHighWatermarks(t, c, topic, parts)
	seen := map[string]bool{}
	for p := 0; p < parts; p++ {
		if hwm[p] == 0 {
			t.Fatalf("partition %d is empty: the hash balancer should spread %d keys over %d partitions", p, n, parts)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.bootstrap(), Topic: topic, Partition: p,
			MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 200 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				cancel()
				r.Close()
				t.Fatalf("kafka-go read %s/%d: %v (have %d, high watermark %d)", topic, p, err, len(seen), hwm[p])
			}
			pos, ok := acked[string(m.Value)]
			if !ok {
				t.Fatalf("read a value never produced at %d/%d: %q", m.Partition, m.Offset, m.Value)
			}
			if pos != [2]int64{int64(m.Partition), m.Offset} {
				t.Fatalf("value %q read at %d/%d, acked at %v", m.Value, m.Partition, m.Offset, pos)
			}
			if seen[string(m.Value)] {
				t.Fatalf("value read twice: %q", m.Value)
			}
			seen[string(m.Value)] = true
			i, _ := strconv.Atoi(string(m.Key))
			if string(m.Value) != string(testValue("kg", i)) {
				t.Fatalf("key %q does not match value %q", m.Key, m.Value)
			}
			if m.Offset >= hwm[p]-1 {
				break
			}
		}
		cancel()
		r.Close()
	}
	if len(seen) != n {
		t.Fatalf("read back %d distinct of %d", len(seen), n)
	}
}

// kafkagoMember is one kafka-go group Reader running a fetch/commit loop.
type kafkagoMember struct {
	t      testing.TB
	r      *kafka.Reader
	cancel context.CancelFunc
	done   chan struct{}
	closed bool
}

func startKafkagoMember(t testing.TB, c *cluster, group, topic string, tr *groupTracker) *kafkagoMember {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           c.bootstrap(),
		GroupID:           group,
		Topic:             topic,
		StartOffset:       kafka.FirstOffset,
		MinBytes:          1,
		MaxBytes:          1 << 20,
		MaxWait:           200 * time.Millisecond,
		CommitInterval:    100 * time.Millisecond,
		HeartbeatInterval: 300 * time.Millisecond,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  200 * time.Millisecond,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    200 * time.Millisecond,
		ErrorLogger: kafka.LoggerFunc(func(f string, a ...any) {
			t.Logf("kafka-go reader: "+f, a...)
		}),
	})
	ctx, cancel := context.WithCancel(context.Background())
	m := &kafkagoMember{t: t, r: r, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for tr.wait(ctx) {
			msg, err := r.FetchMessage(ctx)
			if err != nil {
				if ctx.Err() == nil {
					t.Logf("kafka-go FetchMessage: %v", err)
				}
				return
			}
			tr.add(string(msg.Value))
			if err := r.CommitMessages(ctx, msg); err != nil && ctx.Err() == nil {
				t.Logf("kafka-go CommitMessages: %v", err)
			}
		}
	}()
	t.Cleanup(m.close)
	return m
}

// close stops the loop, then closes the Reader: the pending commits are
// flushed and the member leaves the group.
func (m *kafkagoMember) close() {
	if m.closed {
		return
	}
	m.closed = true
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		m.t.Errorf("kafka-go member did not stop within 30s")
	}
	if err := m.r.Close(); err != nil && !errors.Is(err, context.Canceled) {
		m.t.Logf("kafka-go reader close: %v", err)
	}
}

func TestKafkaGoConsumerGroup(t *testing.T) {
	c := startCluster(t, 3)
	const topic, group, n, parts = "kafkago-group", "kafkago-g", 3000, 6
	createTopic(t, c, topic, parts, 3, nil)
	msgs := make([]kafka.Message, n)
	want := map[string]bool{}
	for i := range msgs {
		v := testValue("kgg", i)
		want[string(v)] = true
		msgs[i] = kafka.Message{Key: []byte(strconv.Itoa(i)), Value: v}
	}
	kafkagoWrite(t, c, topic, &kafka.Hash{}, msgs)

	tr := newGroupTracker(n / 2)
	var members []*kafkagoMember
	for i := 0; i < 3; i++ {
		members = append(members, startKafkagoMember(t, c, group, topic, tr))
	}
	t0 := time.Now()
	t.Logf("assignment: %v (stable after %v)", waitGroupStable(t, c, group, topic, 3, parts), time.Since(t0))
	close(tr.start)
	waitFor(t, 40*time.Second, "half the records consumed", func() bool { return tr.total.Load() >= n/2 })
	start := time.Now()
	members[0].close()
	if got := tr.total.Load(); got > n/2+10 {
		t.Fatalf("%d records processed while paused at %d", got, n/2)
	}
	waitGroupStable(t, c, group, topic, 2, parts)
	t.Logf("closed one member; stable with 2 after %v", time.Since(start))
	close(tr.gate)
	waitFor(t, 40*time.Second, "the two remaining members to consume everything", func() bool {
		missing, _, _ := tr.check(want)
		return missing == 0
	})
	t.Logf("takeover after closing one member took %v", time.Since(start))
	members[1].close()
	members[2].close()
	missing, extra, dups := tr.check(want)
	if missing != 0 || extra != 0 {
		t.Fatalf("group consumed: %d missing, %d unexpected, %d duplicates", missing, extra, dups)
	}
	if dups != 0 {
		t.Logf("%d records were delivered twice around the rebalance (at-least-once)", dups)
	}

	// After the commits, a fresh member gets only new records: one per
	// partition, so any redelivered old record would come first.
	byKey := kafka.BalancerFunc(func(m kafka.Message, partitions ...int) int {
		p, _ := strconv.Atoi(string(m.Key))
		return p
	})
	var newMsgs []kafka.Message
	wantNew := map[string]bool{}
	for p := 0; p < parts; p++ {
		v := testValue("kgg-new", p)
		wantNew[string(v)] = true
		newMsgs = append(newMsgs, kafka.Message{Key: []byte(strconv.Itoa(p)), Value: v})
	}
	for p, m := range newMsgs {
		if pos := kafkagoWrite(t, c, topic, byKey, []kafka.Message{m})[string(m.Value)]; pos[0] != int64(p) {
			t.Fatalf("record for partition %d written to %v", p, pos)
		}
	}
	fresh := newGroupTracker(1 << 62)
	close(fresh.start)
	m := startKafkagoMember(t, c, group, topic, fresh)
	fresh.expectExactly(t, "fresh member", wantNew, m.close)
}

// TestKafkaGoReproEmptyFetch reproduces a broker bug: a Fetch that finds
// no records is answered with the partition's Records field null (size -1)
// instead of empty (size 0). kafka-go's Conn (Fetch v10) fails the batch
// with "the size of the message set in a fetch response doesn't match the
// number of remaining bytes (message set size = -1, remaining bytes = 0)";
// a group Reader logs that for every partition it has read to the end, and
// backs off before fetching again. Real Kafka sends an empty record set.
func TestKafkaGoReproEmptyFetch(t *testing.T) {
	c := startCluster(t, 3)
	const topic = "kafkago-empty"
	createTopic(t, c, topic, 1, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var conn *kafka.Conn
	waitFor(t, 10*time.Second, "a connection to the partition leader", func() bool {
		var err error
		conn, err = kafka.DialLeader(ctx, "tcp", c.bootstrap()[0], topic, 0)
		return err == nil
	})
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 200 * time.Millisecond})
	err := batch.Err()
	batch.Close()
	if err != nil {
		t.Fatalf("kafka-go Fetch at the end of an empty partition: %v", err)
	}
}
