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
}

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
	if last, seen := cl.lastOK[p]; seen && now.Sub(last) > cl.gaps[p] {
		cl.gaps[p], cl.gapAt[p] = now.Sub(last), last
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

// rollClientsFast rolls nodes 2, 3, 1 at the fast pace (see rollFast) and
// waits for leadership back on the preferred replicas, CHRONIK_ROLLS times
// in a row (once by default).
func rollClientsFast(t *testing.T, c *cluster, topic string) *rollTimeline {
	tl := newRollTimeline()
	for i := range rollsFromEnv(t) {
		rollFast(t, c, tl, topic, 2, 3, 1)
		c.waitPreferred(t, 2, topic)
		tl.note("roll %d: leaders back on the preferred replicas", i+1)
	}
	t.Logf("rolled 3 nodes and rebalanced in %v", time.Since(tl.start).Round(time.Millisecond))
	return tl
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
	tl := rollClientsFast(t, c, "roll-sarama")
	time.Sleep(time.Second)
	close(stop)
	<-sent
	prod.AsyncClose()
	wg.Wait()
	t.Log("sarama: " + load.summary())
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
// the leader, so the writer keeps going on what it cached. No write may
// fail, and every acknowledged record must be there.
func TestRollingRestartKafkaGo(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "roll-kgo", 30, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	w := &kafkago.Writer{Addr: kafkago.TCP(c.bootstrap()...), Topic: "roll-kgo", RequiredAcks: kafkago.RequireAll,
		Balancer: &kafkago.RoundRobin{}, BatchTimeout: 5 * time.Millisecond, MaxAttempts: 10}
	defer w.Close()
	load := newClientLoad()
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
					continue
				}
				for _, m := range msgs {
					load.ok(string(m.Value), int32(m.Partition))
				}
			}
		}(g)
	}
	waitFor(t, 30*time.Second, "kafka-go acks", func() bool { load.mu.Lock(); defer load.mu.Unlock(); return len(load.acked) > 1000 })
	tl := rollClientsFast(t, c, "roll-kgo")
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Log("kafka-go: " + load.summary())
	load.logWorst(t, "kafka-go", tl)
	lost, dup := checkAcked(t, c, "roll-kgo", load.acked)
	t.Logf("kafka-go: %d duplicates (not idempotent: a retried write may land twice)", dup)
	if lost != 0 {
		t.Fatalf("kafka-go: lost %d acknowledged records", lost)
	}
	if len(load.errs) > 0 {
		t.Errorf("kafka-go saw errors during the roll: %v", load.errs)
	}
	// Target 1 s (it cannot write while the node it caches is restarting);
	// 3x for CI noise.
	if w, limit := load.worst(), 3*time.Second*raceSlack; w > limit {
		t.Errorf("kafka-go: a partition went %v without an ack; want under %v", w.Round(time.Millisecond), limit)
	}
}
