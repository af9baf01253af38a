package compat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// saramaConfig is a modern-protocol, idempotent, acks=all sarama config.
func saramaConfig() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_0_0_0
	cfg.ClientID = "compat-sarama"
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Retry.Max = 20
	cfg.Producer.Retry.Backoff = 100 * time.Millisecond
	cfg.Metadata.Retry.Max = 20
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	return cfg
}

func newSaramaClient(t testing.TB, c *cluster, cfg *sarama.Config) sarama.Client {
	t.Helper()
	if cfg == nil {
		cfg = saramaConfig()
	}
	cl, err := sarama.NewClient(c.bootstrap(), cfg)
	if err != nil {
		t.Fatalf("sarama client: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// saramaProduceAsync produces msgs with an idempotent AsyncProducer and
// returns each acknowledged value's partition and offset.
func saramaProduceAsync(t testing.TB, cl sarama.Client, msgs []*sarama.ProducerMessage) map[string][2]int64 {
	t.Helper()
	p, err := sarama.NewAsyncProducerFromClient(cl)
	if err != nil {
		t.Fatalf("sarama producer: %v", err)
	}
	defer p.Close()
	go func() {
		for _, m := range msgs {
			p.Input() <- m
		}
	}()
	acked := map[string][2]int64{}
	timeout := time.After(60 * time.Second)
	for i := 0; i < len(msgs); i++ {
		select {
		case m := <-p.Successes():
			v, _ := m.Value.Encode()
			if _, dup := acked[string(v)]; dup {
				t.Fatalf("value acked twice: %q", v)
			}
			acked[string(v)] = [2]int64{int64(m.Partition), m.Offset}
		case e := <-p.Errors():
			t.Fatalf("sarama produce error: %v", e.Err)
		case <-timeout:
			t.Fatalf("sarama: only %d of %d produced within 60s", len(acked), len(msgs))
		}
	}
	return acked
}

// saramaReadAll reads every partition of topic from the start up to its
// high watermark at call time.
func saramaReadAll(t testing.TB, cl sarama.Client, topic string) []*sarama.ConsumerMessage {
	t.Helper()
	cons, err := sarama.NewConsumerFromClient(cl)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	parts, err := cl.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []*sarama.ConsumerMessage
	for _, p := range parts {
		hwm, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatalf("high watermark %s/%d: %v", topic, p, err)
		}
		if hwm == 0 {
			continue
		}
		pc, err := cons.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatalf("consume %s/%d: %v", topic, p, err)
		}
		timeout := time.After(30 * time.Second)
	loop:
		for {
			select {
			case m := <-pc.Messages():
				out = append(out, m)
				if m.Offset >= hwm-1 {
					break loop
				}
			case e := <-pc.Errors():
				t.Logf("sarama partition consumer %s/%d: %v", topic, p, e)
			case <-timeout:
				t.Fatalf("reading %s/%d: stuck before offset %d", topic, p, hwm)
			}
		}
		pc.Close()
	}
	return out
}

func TestSaramaProduceConsume(t *testing.T) {
	c := startCluster(t, 3)
	const topic, n = "sarama", 10000
	createTopic(t, c, topic, 6, 3, nil)
	cl := newSaramaClient(t, c, nil)
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(strconv.Itoa(i)),
			Value: sarama.ByteEncoder(testValue("sa", i))}
	}
	acked := saramaProduceAsync(t, cl, msgs)
	if len(acked) != n {
		t.Fatalf("acked %d of %d", len(acked), n)
	}
	perPart := map[int64]int{}
	for _, pos := range acked {
		perPart[pos[0]]++
	}
	if len(perPart) != 6 {
		t.Fatalf("hash partitioner used %d of 6 partitions: %v", len(perPart), perPart)
	}
	recs := saramaReadAll(t, cl, topic)
	seen := map[string]bool{}
	for _, m := range recs {
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
		if string(m.Key) != strconv.Itoa(i) || string(m.Value) != string(testValue("sa", i)) {
			t.Fatalf("key %q does not match value %q", m.Key, m.Value)
		}
	}
	if len(seen) != n {
		t.Fatalf("read back %d distinct of %d", len(seen), n)
	}
}

// groupTracker counts what a consumer group processed. Members wait for
// start before processing anything, and once total reaches pause they
// wait for gate.
type groupTracker struct {
	mu    sync.Mutex
	seen  map[string]int
	total atomic.Int64
	start chan struct{}
	gate  chan struct{}
	pause int64
}

func newGroupTracker(pause int64) *groupTracker {
	return &groupTracker{seen: map[string]int{}, start: make(chan struct{}), gate: make(chan struct{}), pause: pause}
}

// wait blocks while the tracker is paused; false if ctx ended first.
func (g *groupTracker) wait(ctx context.Context) bool {
	select {
	case <-g.start:
	case <-ctx.Done():
		return false
	}
	if g.total.Load() < g.pause {
		return true
	}
	select {
	case <-g.gate:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *groupTracker) add(v string) {
	g.mu.Lock()
	g.seen[v]++
	g.mu.Unlock()
	g.total.Add(1)
}

// check reports values of want that were not seen, values seen that are
// not in want, and how many were seen more than once.
func (g *groupTracker) check(want map[string]bool) (missing, extra, dups int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for v := range want {
		if g.seen[v] == 0 {
			missing++
		}
	}
	for v, k := range g.seen {
		if !want[v] {
			extra++
		}
		if k > 1 {
			dups += k - 1
		}
	}
	return
}

// expectExactly waits until the tracker has seen all of want (or anything
// else), calls stop, and fails unless it saw want exactly once each.
func (g *groupTracker) expectExactly(t testing.TB, who string, want map[string]bool, stop func()) {
	t.Helper()
	waitFor(t, 40*time.Second, who+" to get the new records", func() bool {
		missing, extra, _ := g.check(want)
		return missing == 0 || extra > 0
	})
	stop()
	if missing, extra, dups := g.check(want); missing != 0 || extra != 0 || dups != 0 {
		t.Fatalf("%s: %d missing, %d redelivered/unexpected, %d duplicates", who, missing, extra, dups)
	}
}

// waitGroupStable waits until the broker describes group as Stable with
// members members that split all partitions of topic between them, each
// holding at least one; it returns the assignment per member id.
func waitGroupStable(t testing.TB, c *cluster, group, topic string, members, partitions int) map[string][]int32 {
	t.Helper()
	adm, err := sarama.NewClusterAdmin(c.bootstrap(), saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	var last string
	var out map[string][]int32
	deadline := time.Now().Add(40 * time.Second)
	for {
		ds, err := adm.DescribeConsumerGroups([]string{group})
		ok := err == nil && len(ds) == 1
		if ok {
			d := ds[0]
			last = fmt.Sprintf("state %q, %d members", d.State, len(d.Members))
			ok = d.State == "Stable" && len(d.Members) == members
			out = map[string][]int32{}
			total := 0
			for id, m := range d.Members {
				a, err := m.GetMemberAssignment()
				if err != nil || a == nil || len(a.Topics[topic]) == 0 {
					ok = false
					continue
				}
				out[id+" ("+m.ClientId+"@"+m.ClientHost+")"] = a.Topics[topic]
				total += len(a.Topics[topic])
			}
			ok = ok && total == partitions
		} else {
			last = fmt.Sprint(err)
		}
		if ok {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s not stable with %d members after 40s: %s", group, members, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type saramaGroupHandler struct {
	tr *groupTracker
}

func (h saramaGroupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h saramaGroupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h saramaGroupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		if !h.tr.wait(sess.Context()) {
			return nil
		}
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.tr.add(string(m.Value))
			sess.MarkMessage(m, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

// saramaMember is one consumer group member running its Consume loop.
type saramaMember struct {
	t      testing.TB
	group  sarama.ConsumerGroup
	cancel context.CancelFunc
	done   chan struct{}
	closed bool
}

func startSaramaMember(t testing.TB, c *cluster, groupID, topic string, tr *groupTracker) *saramaMember {
	t.Helper()
	cfg := saramaConfig()
	cfg.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Rebalance.Timeout = 20 * time.Second
	cfg.Consumer.Group.Rebalance.Retry.Backoff = 200 * time.Millisecond
	g, err := sarama.NewConsumerGroup(c.bootstrap(), groupID, cfg)
	if err != nil {
		t.Fatalf("sarama consumer group: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &saramaMember{t: t, group: g, cancel: cancel, done: make(chan struct{})}
	go func() {
		for e := range g.Errors() {
			t.Logf("sarama group %s: %v", groupID, e)
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, saramaGroupHandler{tr}); err != nil {
				if errors.Is(err, sarama.ErrClosedConsumerGroup) {
					return
				}
				t.Logf("sarama Consume: %v", err)
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
	t.Cleanup(m.close)
	return m
}

// close ends the session (committing marked offsets) and leaves the group.
func (m *saramaMember) close() {
	if m.closed {
		return
	}
	m.closed = true
	m.cancel()
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		m.t.Errorf("sarama member did not stop within 30s")
	}
	if err := m.group.Close(); err != nil {
		m.t.Logf("sarama group close: %v", err)
	}
}

func TestSaramaConsumerGroup(t *testing.T) {
	c := startCluster(t, 3)
	const topic, group, n = "sarama-group", "sarama-g", 3000
	createTopic(t, c, topic, 6, 3, nil)
	cl := newSaramaClient(t, c, nil)
	msgs := make([]*sarama.ProducerMessage, n)
	want := map[string]bool{}
	for i := range msgs {
		v := testValue("sg", i)
		want[string(v)] = true
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(strconv.Itoa(i)), Value: sarama.ByteEncoder(v)}
	}
	saramaProduceAsync(t, cl, msgs)

	tr := newGroupTracker(n / 2)
	var members []*saramaMember
	for i := 0; i < 3; i++ {
		members = append(members, startSaramaMember(t, c, group, topic, tr))
	}
	t0 := time.Now()
	t.Logf("assignment: %v (stable after %v)", waitGroupStable(t, c, group, topic, 3, 6), time.Since(t0))
	close(tr.start)
	waitFor(t, 40*time.Second, "half the records consumed", func() bool { return tr.total.Load() >= n/2 })
	start := time.Now()
	members[0].close()
	if got := tr.total.Load(); got > n/2+10 {
		t.Fatalf("%d records processed while paused at %d", got, n/2)
	}
	waitGroupStable(t, c, group, topic, 2, 6)
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
	if missing != 0 || extra != 0 || dups != 0 {
		t.Fatalf("group consumed: %d missing, %d unexpected, %d duplicates", missing, extra, dups)
	}

	// Every partition's committed offset is its high watermark.
	adm, err := sarama.NewClusterAdminFromClient(cl)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := adm.ListConsumerGroupOffsets(group, nil)
	if err != nil {
		t.Fatalf("OffsetFetch: %v", err)
	}
	for p := int32(0); p < 6; p++ {
		hwm, err := cl.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		b := offs.GetBlock(topic, p)
		if b == nil || b.Err != sarama.ErrNoError || b.Offset != hwm {
			t.Fatalf("partition %d: committed %+v, high watermark %d", p, b, hwm)
		}
	}

	// A fresh member of the same group gets only records produced after
	// the commit: one per partition, so any redelivered old record would
	// arrive before the new one of its partition.
	fresh := newGroupTracker(1 << 62)
	close(fresh.start)
	var newMsgs []*sarama.ProducerMessage
	wantNew := map[string]bool{}
	for p := int32(0); p < 6; p++ {
		v := testValue("sg-new", int(p))
		wantNew[string(v)] = true
		newMsgs = append(newMsgs, &sarama.ProducerMessage{Topic: topic, Partition: p, Value: sarama.ByteEncoder(v)})
	}
	pcfg := saramaConfig()
	pcfg.Producer.Partitioner = sarama.NewManualPartitioner
	saramaProduceAsync(t, newSaramaClient(t, c, pcfg), newMsgs)
	m := startSaramaMember(t, c, group, topic, fresh)
	fresh.expectExactly(t, "fresh member", wantNew, m.close)
}

// adminLeader asks node id's admin endpoint for the leader of topic/partition.
func adminLeader(t testing.TB, c *cluster, id int, topic string, partition int32) int32 {
	t.Helper()
	code, body, err := c.get(id, "/partitions")
	if err != nil || code != 200 {
		t.Fatalf("GET /partitions on node %d: %d %v", id, code, err)
	}
	var parts []struct {
		Topic     string `json:"topic"`
		Partition int32  `json:"partition"`
		Leader    int32  `json:"leader"`
	}
	if err := json.Unmarshal([]byte(body), &parts); err != nil {
		t.Fatalf("GET /partitions: %v: %s", err, body)
	}
	for _, p := range parts {
		if p.Topic == topic && p.Partition == partition {
			return p.Leader
		}
	}
	return 0
}

func TestSaramaKillLeader(t *testing.T) {
	c := startCluster(t, 3)
	const topic, parts = "sarama-kill", 3
	createTopic(t, c, topic, parts, 3, nil)
	cfg := saramaConfig()
	cfg.Producer.Retry.Max = 50
	cfg.Producer.Retry.Backoff = 100 * time.Millisecond
	cfg.Producer.Partitioner = sarama.NewRoundRobinPartitioner
	cfg.Net.DialTimeout = 2 * time.Second
	cfg.Net.ReadTimeout = 5 * time.Second
	cfg.Net.WriteTimeout = 5 * time.Second
	cl := newSaramaClient(t, c, cfg)
	prod, err := sarama.NewSyncProducerFromClient(cl)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()

	var (
		mu       sync.Mutex
		acked    = map[string][2]int64{}
		failed   []string
		nextSeq  atomic.Int64
		stopAt   atomic.Int64
		firstErr error
	)
	stopAt.Store(1 << 62)
	value := func(i int64) string { return fmt.Sprintf("kill-%07d", i) }
	var wg sync.WaitGroup
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				done := int64(len(acked)) >= stopAt.Load()
				mu.Unlock()
				if done {
					return
				}
				i := nextSeq.Add(1) - 1
				v := value(i)
				p, off, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(v)})
				mu.Lock()
				if err != nil {
					failed = append(failed, v)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					acked[v] = [2]int64{int64(p), off}
				}
				mu.Unlock()
			}
		}()
	}
	ackCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitFor(t, 40*time.Second, "2000 acks", func() bool { return ackCount() >= 2000 })
	leader, err := cl.Leader(topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	victim := int(leader.ID())
	if a := adminLeader(t, c, victim, topic, 0); a != int32(victim) {
		t.Logf("sarama says node %d leads %s/0, admin endpoint says %d", victim, topic, a)
	}
	perPart := func() [parts]int {
		mu.Lock()
		defer mu.Unlock()
		var out [parts]int
		for _, pos := range acked {
			out[pos[0]]++
		}
		return out
	}
	before := perPart()
	t.Logf("killing node %d (leader of %s/0) at %d acks", victim, topic, ackCount())
	killedAt := time.Now()
	c.kill(victim)
	stopAt.Store(4000)
	wg.Wait()
	t.Logf("reached %d acks %v after the kill; %d produce errors (first: %v)", ackCount(), time.Since(killedAt), len(failed), firstErr)
	if after := perPart(); after[0] <= before[0] {
		t.Fatalf("no acks on %s/0 after its leader was killed: %v before, %v after", topic, before, after)
	}
	if l, err := cl.Leader(topic, 0); err != nil || int(l.ID()) == victim {
		t.Fatalf("after the kill sarama sees leader %v of %s/0 (err %v)", l, topic, err)
	}

	c.start(victim)
	c.waitReady(30 * time.Second)
	for _, nd := range c.nodes {
		c.waitHealthy(nd.id, 30*time.Second)
	}
	rcl := newSaramaClient(t, c, nil)
	recs := saramaReadAll(t, rcl, topic)
	seen := map[string]int{}
	for _, m := range recs {
		seen[string(m.Value)]++
	}
	var bad []string
	for v, pos := range acked {
		if seen[v] != 1 {
			bad = append(bad, fmt.Sprintf("%s (acked at %v) read %d times", v, pos, seen[v]))
		}
	}
	failedSet := map[string]bool{}
	for _, v := range failed {
		failedSet[v] = true
	}
	for v, k := range seen {
		if _, ok := acked[v]; !ok && k > 1 {
			bad = append(bad, fmt.Sprintf("unacked %s read %d times", v, k))
		}
		if _, ok := acked[v]; !ok && !failedSet[v] {
			bad = append(bad, fmt.Sprintf("value never sent: %q", v))
		}
	}
	// Acked records must be where the producer was told they are.
	for _, m := range recs {
		if pos, ok := acked[string(m.Value)]; ok && pos != [2]int64{int64(m.Partition), m.Offset} {
			bad = append(bad, fmt.Sprintf("%s at %d/%d, acked at %v", m.Value, m.Partition, m.Offset, pos))
		}
	}
	unackedPresent := 0
	for _, v := range failed {
		if seen[v] > 0 {
			unackedPresent++
		}
	}
	t.Logf("%d acked, %d records read, %d produce errors surfaced by sarama (%d of those values are in the log anyway)",
		len(acked), len(recs), len(failed), unackedPresent)
	sort.Strings(bad)
	if len(bad) > 0 {
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
		}
		t.Fatalf("after the leader kill:\n%s", strings.Join(bad, "\n"))
	}
}

// TestSaramaReproDescribeGroupsClientID reproduces a broker bug: the group
// coordinator never learns the client id and address of a member's
// connection (coordinator.WithClient is never called), so JoinGroup hands
// out member ids "-<uuid>" instead of "<client.id>-<uuid>" and
// DescribeGroups reports client_id "" and client_host "" for every member.
// Kafka reports the request header's client id and "/<ip>".
func TestSaramaReproDescribeGroupsClientID(t *testing.T) {
	c := startCluster(t, 3)
	const topic, group = "sarama-describe", "sarama-describe-g"
	createTopic(t, c, topic, 1, 3, nil)
	tr := newGroupTracker(1 << 62)
	close(tr.start)
	startSaramaMember(t, c, group, topic, tr) // ClientID "compat-sarama"
	waitGroupStable(t, c, group, topic, 1, 1)
	adm, err := sarama.NewClusterAdmin(c.bootstrap(), saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ds, err := adm.DescribeConsumerGroups([]string{group})
	if err != nil || len(ds) != 1 || len(ds[0].Members) != 1 {
		t.Fatalf("DescribeGroups: %v %+v", err, ds)
	}
	for id, m := range ds[0].Members {
		if m.ClientId != "compat-sarama" || !strings.HasPrefix(id, "compat-sarama-") || !strings.Contains(m.ClientHost, "127.0.0.1") {
			t.Fatalf("DescribeGroups member: id %q, client_id %q, client_host %q; want id \"compat-sarama-<uuid>\", client_id \"compat-sarama\", client_host \"/127.0.0.1\"",
				id, m.ClientId, m.ClientHost)
		}
	}
}
