package compat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// loader produces sequence-numbered records continuously with franz-go at
// default settings (idempotent, acks=all) and records every ack, every
// error and the longest gap between acks on each partition.
type loader struct {
	t     testing.TB
	cl    *kgo.Client
	topic string
	rate  int // records per second; 0 = as fast as acks come

	mu       sync.Mutex
	acked    map[string]ackPos // value -> position
	lastAck  map[int32]time.Time
	maxGap   map[int32]time.Duration
	gaps     []time.Duration // every gap above 20ms, for percentiles
	allGaps  []gapAt         // every gap, with when it ended
	bigGaps  []string
	errs     map[string]int
	nonRetry []error
	sent     int
	stop     context.CancelFunc
	done     chan struct{}
	started  time.Time
}

type ackPos struct {
	partition int32
	offset    int64
	at        time.Time
	latency   time.Duration // from the hand-off to the client to the ack
}

func startLoader(t testing.TB, c *cluster, topic string, rate int, opts ...kgo.Opt) *loader {
	t.Helper()
	base := []kgo.Opt{kgo.SeedBrokers(c.bootstrap()...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerLinger(0)}
	if path := os.Getenv("CHRONIK_TEST_CLIENT_LOG"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		base = append(base, kgo.WithLogger(kgo.BasicLogger(f, kgo.LogLevelDebug, func() string { return time.Now().Format("15:04:05.000 ") })))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &loader{t: t, cl: cl, topic: topic, rate: rate, acked: map[string]ackPos{}, lastAck: map[int32]time.Time{},
		maxGap: map[int32]time.Duration{}, errs: map[string]int{}, stop: cancel, done: make(chan struct{}), started: time.Now()}
	t.Cleanup(func() { l.halt(); cl.Close() })
	go l.run(ctx)
	return l
}

func (l *loader) run(ctx context.Context) {
	defer close(l.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := time.Duration(0)
	if l.rate > 0 {
		interval = time.Second / time.Duration(l.rate)
	}
	next := time.Now()
	inflight := make(chan struct{}, 2000)
	for i := 0; ; i++ {
		if interval > 0 {
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
		}
		select {
		case inflight <- struct{}{}:
		case <-ctx.Done():
			return
		}
		v := []byte("seq-" + strconv.Itoa(i) + "-" + strings.Repeat("x", 100))
		l.mu.Lock()
		l.sent++
		l.mu.Unlock()
		wg.Add(1)
		handed := time.Now()
		// The records' own context is not the loader's: stopping the loader
		// must not fail records already handed to the client.
		l.cl.Produce(context.Background(), &kgo.Record{Value: v}, func(r *kgo.Record, err error) {
			defer wg.Done()
			defer func() { <-inflight }()
			l.onAck(r, handed, err)
		})
	}
}

func (l *loader) onAck(r *kgo.Record, handed time.Time, err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs[err.Error()]++
		var ke *kerr.Error
		if !errors.As(err, &ke) || !ke.Retriable {
			l.nonRetry = append(l.nonRetry, err)
		}
		return
	}
	l.acked[string(r.Value)] = ackPos{partition: r.Partition, offset: r.Offset, at: now, latency: now.Sub(handed)}
	if last, ok := l.lastAck[r.Partition]; ok {
		gap := now.Sub(last)
		if gap > l.maxGap[r.Partition] {
			l.maxGap[r.Partition] = gap
		}
		if gap > 20*time.Millisecond {
			l.gaps = append(l.gaps, gap)
		}
		l.allGaps = append(l.allGaps, gapAt{partition: r.Partition, gap: gap, end: now})
		if gap > 100*time.Millisecond {
			l.bigGaps = append(l.bigGaps, fmt.Sprintf("p%d %s..%s", r.Partition, last.Format("15:04:05.000"), now.Format("15:04:05.000")))
		}
	}
	l.lastAck[r.Partition] = now
}

// halt stops producing and waits for outstanding records.
func (l *loader) halt() {
	l.stop()
	select {
	case <-l.done:
	case <-time.After(90 * time.Second):
		l.t.Errorf("loader did not finish within 90s")
	}
}

func (l *loader) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitAcks waits until at least n records are acknowledged in total.
func (l *loader) waitAcks(n int, d time.Duration) {
	l.t.Helper()
	waitFor(l.t, d, fmt.Sprintf("%d acks", n), func() bool { return l.ackedCount() >= n })
}

// lastAckOn returns the time of the latest ack on a partition.
func (l *loader) lastAckOn(p int32) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastAck[p]
}

type gapAt struct {
	partition int32
	gap       time.Duration
	end       time.Time
}

// stallsBetween returns, for each partition, the longest gap between acks
// that ended in [from, to], sorted ascending.
func (l *loader) stallsBetween(from, to time.Time) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	worst := map[int32]time.Duration{}
	for _, g := range l.allGaps {
		if g.end.Before(from) || g.end.After(to) {
			continue
		}
		if g.gap > worst[g.partition] {
			worst[g.partition] = g.gap
		}
	}
	out := make([]time.Duration, 0, len(worst))
	for _, d := range worst {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// report summarizes errors and gaps.
func (l *loader) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var worst time.Duration
	for _, g := range l.maxGap {
		if g > worst {
			worst = g
		}
	}
	return fmt.Sprintf("sent %d, acked %d, errors %v, longest gap between acks on a partition %v",
		l.sent, len(l.acked), l.errs, worst.Round(time.Millisecond))
}

// verify consumes the whole topic and checks every acknowledged record is
// there exactly once, at the offset it was acknowledged at.
func (l *loader) verify(c *cluster) (lost, dup int) {
	l.t.Helper()
	l.mu.Lock()
	acked := make(map[string]ackPos, len(l.acked))
	for k, v := range l.acked {
		acked[k] = v
	}
	l.mu.Unlock()
	// Read until every partition's high watermark.
	cl := newFranz(l.t, c)
	ends := listEnds(l.t, cl, l.topic)
	total := int64(0)
	for _, e := range ends {
		total += e
	}
	cons := newFranz(l.t, c, kgo.ConsumeTopics(l.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	seen := map[string]int{}
	got := int64(0)
	for got < total {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			l.t.Fatalf("verify: read %d of %d records", got, total)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got++
			seen[string(r.Value)]++
			if pos, ok := acked[string(r.Value)]; ok && (pos.partition != r.Partition || pos.offset != r.Offset) {
				l.t.Errorf("record %s acked at %d/%d but read at %d/%d", r.Value[:12], pos.partition, pos.offset, r.Partition, r.Offset)
			}
		})
	}
	for v := range acked {
		if seen[v] == 0 {
			lost++
		}
	}
	for _, n := range seen {
		if n > 1 {
			dup += n - 1
		}
	}
	return lost, dup
}

// listEnds returns each partition's high watermark.
func listEnds(t testing.TB, cl *kgo.Client, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		out, err := listEndsOnce(ctx, cl, topic)
		if err == nil {
			return out
		}
		if ctx.Err() != nil {
			t.Fatalf("list offsets: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// partitionsJSON is one row of GET /partitions.
type partitionsJSON struct {
	Topic          string  `json:"topic"`
	Partition      int32   `json:"partition"`
	Leader         int32   `json:"leader"`
	Replicas       []int32 `json:"replicas"`
	InSyncReplicas []int32 `json:"in_sync_replicas"`
	LeaderEpoch    int64   `json:"leader_epoch"`
	HighWatermark  int64   `json:"high_watermark"`
	LogStartOffset int64   `json:"log_start_offset"`
	Status         string  `json:"status"`
	Failed         string  `json:"failed"`
}

// partitions fetches /partitions from node id.
func (c *cluster) partitions(id int) ([]partitionsJSON, error) {
	code, body, err := c.get(id, "/partitions")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("status %d", code)
	}
	var out []partitionsJSON
	err = json.Unmarshal([]byte(body), &out)
	return out, err
}

// leaderOf returns the leader of topic/p as node id sees it.
func (c *cluster) leaderOf(id int, topic string, p int32) int32 {
	ps, err := c.partitions(id)
	if err != nil {
		return 0
	}
	for _, x := range ps {
		if x.Topic == topic && x.Partition == p {
			return x.Leader
		}
	}
	return 0
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q * float64(len(s)-1))
	return s[i]
}

func listEndsOnce(ctx context.Context, cl *kgo.Client, topic string) (map[int32]int64, error) {
	adm := kadm.NewClient(cl)
	res, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var ferr error
	res.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			ferr = o.Err
			return
		}
		out[o.Partition] = o.Offset
	})
	return out, ferr
}

// firstAckAfter returns when partition p was first acknowledged after t0.
func (l *loader) firstAckAfter(p int32, t0 time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.acked {
		if a.partition == p && a.at.After(t0) && (first.IsZero() || a.at.Before(first)) {
			first = a.at
		}
	}
	return first, !first.IsZero()
}

// stallSummary is "p50 …, p99 …, max …" of stalls as stallsBetween
// returns them (sorted, so the last is the longest).
func stallSummary(stalls []time.Duration) string {
	return fmt.Sprintf("p50 %v, p99 %v, max %v", percentile(stalls, 0.5).Round(time.Millisecond),
		percentile(stalls, 0.99).Round(time.Millisecond), stalls[len(stalls)-1].Round(time.Millisecond))
}

// checkStalls fails t when the longest of stalls (sorted) is over limit;
// during ("" or " during the roll") goes into the message.
func checkStalls(t *testing.T, stalls []time.Duration, limit time.Duration, during string) {
	t.Helper()
	if worst := stalls[len(stalls)-1]; worst > limit {
		t.Errorf("a partition went %v without an ack%s; want under %v", worst.Round(time.Millisecond), during, limit)
	}
}

// checkDelivered fails t on any produce error (during names the phase,
// e.g. "the roll") and, fatally, on an acknowledged record lost or
// duplicated in c.
func (l *loader) checkDelivered(t *testing.T, c *cluster, during string) {
	t.Helper()
	l.mu.Lock()
	errs := l.errs
	l.mu.Unlock()
	if len(errs) > 0 {
		t.Errorf("produce errors during %s: %v", during, errs)
	}
	if lost, dup := l.verify(c); lost != 0 || dup != 0 {
		t.Fatalf("lost %d acknowledged records, %d duplicates", lost, dup)
	}
}
