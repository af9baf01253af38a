package compat

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	kafkago "github.com/segmentio/kafka-go"
)

// clientLoad is what a non-franz producer saw during a roll.
type clientLoad struct {
	mu     sync.Mutex
	acked  map[string]bool
	errs   map[string]int
	sent   int
	lastOK map[int32]time.Time
	gaps   map[int32]time.Duration
	gapAt  map[int32]time.Time // when each partition's longest gap began
	long   []gapAt             // every gap over longGap, for figures per roll
}

// longGap: gaps between acks above this are kept for the figures per roll.
const longGap = 20 * time.Millisecond

func newClientLoad() *clientLoad {
	return &clientLoad{acked: map[string]bool{}, errs: map[string]int{}, lastOK: map[int32]time.Time{}, gaps: map[int32]time.Duration{}, gapAt: map[int32]time.Time{}}
}

func (cl *clientLoad) ok(v string, p int32) { cl.okAt(v, p, time.Now()) }

// okAt notes an ack of v on p that arrived at now; acks of one partition
// come in time order.
func (cl *clientLoad) okAt(v string, p int32, now time.Time) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.acked[v] = true
	if last, seen := cl.lastOK[p]; seen {
		if now.Sub(last) > cl.gaps[p] {
			cl.gaps[p], cl.gapAt[p] = now.Sub(last), last
		}
		if now.Sub(last) > longGap {
			cl.long = append(cl.long, gapAt{partition: p, gap: now.Sub(last), end: now})
		}
	}
	cl.lastOK[p] = now
}

func (cl *clientLoad) fail(err error) {
	cl.mu.Lock()
	cl.errs[err.Error()]++
	cl.mu.Unlock()
}

// worst is the longest gap between acks on any one partition.
func (cl *clientLoad) worst() time.Duration {
	w, _, _ := cl.worstAt()
	return w
}

// worstAt is the longest gap, its partition and when it began.
func (cl *clientLoad) worstAt() (time.Duration, int32, time.Time) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var w time.Duration
	var wp int32
	for p, g := range cl.gaps {
		if g > w {
			w, wp = g, p
		}
	}
	return w, wp, cl.gapAt[wp]
}

func (cl *clientLoad) summary() string {
	worst := cl.worst()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return fmt.Sprintf("sent %d, acked %d, errors %v, longest gap between acks on a partition %v",
		cl.sent, len(cl.acked), cl.errs, worst.Round(time.Millisecond))
}

// worstBetween is the longest gap between acks on one partition that
// ended in [from, to], its partition and when it began.
func (cl *clientLoad) worstBetween(from, to time.Time) (time.Duration, int32, time.Time) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var w gapAt
	for _, g := range cl.long {
		if !g.end.Before(from) && !g.end.After(to) && g.gap > w.gap {
			w = g
		}
	}
	return w.gap, w.partition, w.end.Add(-w.gap)
}

// rollClientsFast rolls nodes 2, 3, 1 at the fast pace (see rollFast) and
// waits for leadership back on the preferred replicas, CHRONIK_ROLLS times
// in a row (once by default).
func rollClientsFast(t *testing.T, c *cluster, topic string) *rollTimeline {
	return rollClientsFastEach(t, c, topic, nil)
}

// rollClientsFastEach is rollClientsFast calling each after every roll
// with the roll's number and its span.
func rollClientsFastEach(t *testing.T, c *cluster, topic string, each func(tl *rollTimeline, r int, from, to time.Time)) *rollTimeline {
	tl := newRollTimeline()
	for i := range rollsFromEnv(t) {
		from := time.Now()
		tl.note("roll %d", i+1)
		rollFast(t, c, tl, topic, 2, 3, 1)
		c.waitPreferred(t, 2, topic)
		tl.note("roll %d: leaders back on the preferred replicas", i+1)
		if each != nil {
			each(tl, i+1, from, time.Now())
		}
	}
	t.Logf("rolled 3 nodes and rebalanced in %v", time.Since(tl.start).Round(time.Millisecond))
	return tl
}

// perRoll logs, after each roll, the longest gap on one partition that
// ended during it and where it began; the rolls' worst are gathered in
// worst.
func (cl *clientLoad) perRoll(t *testing.T, who string, worst *[]time.Duration) func(tl *rollTimeline, r int, from, to time.Time) {
	return func(tl *rollTimeline, r int, from, to time.Time) {
		w, p, at := cl.worstBetween(from, to)
		*worst = append(*worst, w)
		t.Logf("%s: roll %d (%v, rebalance included): longest gap between acks on a partition %v, partition %d from %s (%s)", who, r,
			to.Sub(from).Round(time.Millisecond), w.Round(time.Millisecond), p, tl.rel(at), tl.around(at))
	}
}

// logWorst says where in the roll a client's longest gap fell.
func (cl *clientLoad) logWorst(t *testing.T, who string, tl *rollTimeline) {
	w, p, at := cl.worstAt()
	t.Logf("%s: longest gap %v on partition %d from %s (%s)", who, w.Round(time.Millisecond), p, tl.rel(at), tl.around(at))
}

// checkAcked reads the topic back and checks every acknowledged value is
// there; it returns how many values appear more than once.
func checkAcked(t *testing.T, c *cluster, topic string, acked map[string]bool) (lost, dup int) {
	ends := listEnds(t, newFranz(t, c), topic)
	total := int64(0)
	for _, e := range ends {
		total += e
	}
	seen := map[string]int{}
	for _, r := range consumeAll(t, c, topic, int(total)) {
		seen[string(r.Value)]++
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

// TestRollingRestartSarama rolls the cluster under an idempotent sarama
// producer at its default retry settings (3 retries, 100 ms apart).
func TestRollingRestartSarama(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "roll-sarama", 30, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	if path := os.Getenv("CHRONIK_TEST_CLIENT_LOG"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		prev := sarama.Logger
		sarama.Logger = log.New(f, "", log.Ltime|log.Lmicroseconds)
		t.Cleanup(func() { sarama.Logger = prev; f.Close() })
	}
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_0_0_0
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewRoundRobinPartitioner
	prod, err := sarama.NewAsyncProducer(c.bootstrap(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	load := newClientLoad()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for m := range prod.Successes() {
			v, _ := m.Value.Encode()
			load.ok(string(v), m.Partition)
		}
	}()
	go func() {
		defer wg.Done()
		for e := range prod.Errors() {
			load.fail(e.Err)
		}
	}()
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			prod.Input() <- &sarama.ProducerMessage{Topic: "roll-sarama", Value: sarama.StringEncoder(fmt.Sprintf("sarama-%d-%s", i, strings.Repeat("s", 50)))}
			load.mu.Lock()
			load.sent++
			load.mu.Unlock()
		}
	}()
	waitFor(t, 30*time.Second, "sarama acks", func() bool { load.mu.Lock(); defer load.mu.Unlock(); return len(load.acked) > 1000 })
	var perRoll []time.Duration
	tl := rollClientsFastEach(t, c, "roll-sarama", load.perRoll(t, "sarama", &perRoll))
	time.Sleep(time.Second)
	close(stop)
	<-sent
	prod.AsyncClose()
	wg.Wait()
	t.Log("sarama: " + load.summary())
	t.Logf("sarama: longest gap per roll %v", roundAll(perRoll))
	load.logWorst(t, "sarama", tl)
	lost, dup := checkAcked(t, c, "roll-sarama", load.acked)
	if lost != 0 || dup != 0 {
		t.Fatalf("sarama: lost %d acknowledged records, %d duplicates", lost, dup)
	}
	if len(load.errs) > 0 {
		t.Errorf("sarama saw errors during the roll: %v", load.errs)
	}
	// Target 300 ms; 3x for CI noise.
	if w, limit := load.worst(), 900*time.Millisecond*raceSlack; w > limit {
		t.Errorf("sarama: a partition went %v without an ack; want under %v", w.Round(time.Millisecond), limit)
	}
}

// TestRollingRestartKafkaGo rolls the cluster under a kafka-go Writer. Its
// metadata cache refreshes on a 6 s timer and it does not follow leader
// hints; a node that no longer leads a partition forwards its writes to
// the leader, so the writer keeps going on what it cached, and a stopping
// node stays up while it does (--forward-wait). No write may fail, and
// every acknowledged record must be there; each roll's longest gap is
// logged (CHRONIK_ROLLS=5 for the figures).
func TestRollingRestartKafkaGo(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "roll-kgo", 30, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	w := &kafkago.Writer{Addr: kafkago.TCP(c.bootstrap()...), Topic: "roll-kgo", RequiredAcks: kafkago.RequireAll,
		Balancer: &kafkago.RoundRobin{}, BatchTimeout: 5 * time.Millisecond, MaxAttempts: 10}
	load := newClientLoad()
	// Acks are taken from Completion, which sees each batch with its
	// partition: WriteMessages leaves the caller's messages at partition
	// 0, so counting them there measured a topic-wide gap.
	w.Completion = func(msgs []kafkago.Message, err error) {
		if err != nil {
			return
		}
		now := time.Now()
		for _, m := range msgs {
			load.okAt(string(m.Value), int32(m.Partition), now)
		}
	}
	if path := os.Getenv("CHRONIK_TEST_CLIENT_LOG"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		w.ErrorLogger = log.New(f, "", log.Ltime|log.Lmicroseconds) // failed attempts, before each retry
	}
	defer w.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var msgs []kafkago.Message
				for k := 0; k < 10; k++ {
					msgs = append(msgs, kafkago.Message{Value: []byte(fmt.Sprintf("kgo-%d-%d-%d-%s", g, i, k, strings.Repeat("k", 50)))})
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := w.WriteMessages(ctx, msgs...)
				cancel()
				load.mu.Lock()
				load.sent += len(msgs)
				load.mu.Unlock()
				if err != nil {
					load.fail(err)
				}
			}
		}(g)
	}
	waitFor(t, 30*time.Second, "kafka-go acks", func() bool { load.mu.Lock(); defer load.mu.Unlock(); return len(load.acked) > 1000 })
	var perRoll []time.Duration
	tl := rollClientsFastEach(t, c, "roll-kgo", load.perRoll(t, "kafka-go", &perRoll))
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Log("kafka-go: " + load.summary())
	t.Logf("kafka-go: longest gap per roll %v", roundAll(perRoll))
	load.logWorst(t, "kafka-go", tl)
	lost, dup := checkAcked(t, c, "roll-kgo", load.acked)
	t.Logf("kafka-go: %d duplicates (not idempotent: a retried write may land twice)", dup)
	if lost != 0 {
		t.Fatalf("kafka-go: lost %d acknowledged records", lost)
	}
	if len(load.errs) > 0 {
		t.Errorf("kafka-go saw errors during the roll: %v", load.errs)
	}
	// Target 1 s (issue 10: a stopping node forwards for it until its
	// metadata timer moves it, --forward-wait); 3x for CI noise.
	if w, limit := load.worst(), 3*time.Second*raceSlack; w > limit {
		t.Errorf("kafka-go: a partition went %v without an ack; want under %v", w.Round(time.Millisecond), limit)
	}
}

// roundAll rounds durations to the millisecond, for logs.
func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
