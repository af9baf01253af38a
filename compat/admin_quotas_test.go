package compat

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func alterQuota(t testing.TB, adm *kadm.Client, entity kadm.ClientQuotaEntity, ops ...kadm.AlterClientQuotaOp) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: entity, Ops: ops}})
	if err != nil {
		t.Fatalf("kadm AlterClientQuotas: %v", err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("kadm AlterClientQuotas %v: %v %s", r.Entity, r.Err, r.ErrMessage)
		}
	}
}

// quotaOn describes one entity's quotas on one node, to see that each node
// has the replicated value.
func quotaOn(t testing.TB, cl *kgo.Client, node int32, clientID string) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrDescribeClientQuotasRequest()
	c := kmsg.NewDescribeClientQuotasRequestComponent()
	c.EntityType, c.MatchType, c.Match = "client-id", kmsg.QuotasMatchTypeExact, &clientID
	req.Components, req.Strict = append(req.Components, c), true
	resp, err := req.RequestWith(ctx, cl.Broker(int(node)))
	if err != nil || resp.ErrorCode != 0 {
		t.Fatalf("DescribeClientQuotas on node %d: %v (code %d)", node, err, resp.ErrorCode)
	}
	out := map[string]float64{}
	for _, e := range resp.Entries {
		for _, v := range e.Values {
			out[v.Key] = v.Value
		}
	}
	return out
}

// throttleHook records the throttle times a client was given.
type throttleHook struct {
	n     atomic.Int64
	total atomic.Int64 // ns
}

func (h *throttleHook) OnBrokerThrottle(_ kgo.BrokerMetadata, d time.Duration, _ bool) {
	h.n.Add(1)
	h.total.Add(int64(d))
}

// batchBytes sums the record bytes of acknowledged batches written after
// from, up to until.
type batchBytes struct {
	mu          sync.Mutex
	from, until time.Time
	bytes       int64
}

func (b *batchBytes) OnProduceBatchWritten(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.ProduceBatchMetrics) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.After(b.from) && now.Before(b.until) {
		b.bytes += int64(m.CompressedBytes)
	}
}

// TestAdminClientQuotaProduce sets a producer_byte_rate quota for one
// client id with kadm and checks, on a 3-node cluster: every node
// describes it; a franz-go producer with that client id is held to within
// 10% of the rate (measured from 2 s to 10 s of producing, after the one
// window a new client may send at once); a producer with another client id
// writing to the same partition at the same time is never throttled and
// goes faster; the rate shows in the leader's metrics; sarama's
// ClusterAdmin describes and removes the quota.
func TestAdminClientQuotaProduce(t *testing.T) {
	c := startCluster(t, 3)
	const topic, rate = "quota-produce", 1 << 20
	createTopic(t, c, topic, 1, 3, nil)
	admCl := newFranz(t, c)
	adm := kadm.NewClient(admCl)
	slowID := "quota-slow"
	alterQuota(t, adm, kadm.ClientQuotaEntity{{Type: "client-id", Name: &slowID}},
		kadm.AlterClientQuotaOp{Key: "producer_byte_rate", Value: rate})
	for id := int32(1); id <= 3; id++ {
		waitFor(t, 10*time.Second, "the quota on every node", func() bool {
			return quotaOn(t, admCl, id, slowID)["producer_byte_rate"] == rate
		})
	}

	start := time.Now()
	const measureFrom, measureTo = 2 * time.Second, 10 * time.Second
	slowBytes := &batchBytes{from: start.Add(measureFrom), until: start.Add(measureTo)}
	fastBytes := &batchBytes{from: start.Add(measureFrom), until: start.Add(measureTo)}
	slowThr, fastThr := &throttleHook{}, &throttleHook{}
	opts := []kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(64 << 10), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(256)}
	slow := newFranz(t, c, append(opts, kgo.ClientID(slowID), kgo.WithHooks(slowBytes, slowThr))...)
	fast := newFranz(t, c, append(opts, kgo.ClientID("quota-fast"), kgo.WithHooks(fastBytes, fastThr))...)

	ctx, cancel := context.WithTimeout(context.Background(), measureTo+500*time.Millisecond)
	defer cancel()
	value := make([]byte, 1000)
	var wg sync.WaitGroup
	var failed atomic.Value
	for _, cl := range []*kgo.Client{slow, fast} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
					if err != nil && ctx.Err() == nil {
						failed.Store(err)
					}
				})
			}
		}()
	}
	// The slow client's rate while it is being held, from the leader.
	var metricsLine string
	time.Sleep(measureTo - 2*time.Second)
	for id := 1; id <= 3; id++ {
		if _, body, err := c.get(id, "/metrics"); err == nil {
			for _, l := range strings.Split(body, "\n") {
				if strings.HasPrefix(l, "chronik_quota_byte_rate{") && strings.Contains(l, `client_id="quota-slow"`) {
					metricsLine = l
				}
			}
		}
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("produce failed: %v", err)
	}

	secs := (measureTo - measureFrom).Seconds()
	slowRate, fastRate := float64(slowBytes.bytes)/secs, float64(fastBytes.bytes)/secs
	t.Logf("quota %d B/s: throttled client achieved %.0f B/s (%.1f%% of the quota), %d throttled responses, %v throttle in all; "+
		"unthrottled client %.0f B/s, %d throttled responses", rate, slowRate, 100*slowRate/rate,
		slowThr.n.Load(), time.Duration(slowThr.total.Load()), fastRate, fastThr.n.Load())
	if slowRate < 0.9*rate || slowRate > 1.1*rate {
		t.Errorf("throttled client's rate %.0f B/s is not within 10%% of the quota %d B/s", slowRate, rate)
	}
	if slowThr.n.Load() == 0 {
		t.Errorf("the throttled client was never given a throttle time")
	}
	if fastThr.n.Load() != 0 {
		t.Errorf("the client without a quota was throttled %d times", fastThr.n.Load())
	}
	if fastRate < 2*rate {
		t.Errorf("the client without a quota managed only %.0f B/s", fastRate)
	}
	if metricsLine == "" {
		t.Errorf("no chronik_quota_byte_rate metric for the throttled client")
	} else {
		t.Logf("metrics: %s", metricsLine)
	}

	// sarama's ClusterAdmin sees the same quota and removes it.
	sa, err := sarama.NewClusterAdmin(c.bootstrap(), saramaConfig())
	if err != nil {
		t.Fatalf("sarama admin: %v", err)
	}
	defer sa.Close()
	got, err := sa.DescribeClientQuotas([]sarama.QuotaFilterComponent{{EntityType: sarama.QuotaEntityClientID, MatchType: sarama.QuotaMatchExact, Match: slowID}}, false)
	if err != nil || len(got) != 1 || got[0].Values["producer_byte_rate"] != rate {
		t.Fatalf("sarama DescribeClientQuotas: %v %+v", err, got)
	}
	if err := sa.AlterClientQuotas([]sarama.QuotaEntityComponent{{EntityType: sarama.QuotaEntityClientID, MatchType: sarama.QuotaMatchExact, Name: slowID}},
		sarama.ClientQuotasOp{Key: "producer_byte_rate", Remove: true}, false); err != nil {
		t.Fatalf("sarama AlterClientQuotas remove: %v", err)
	}
	for id := int32(1); id <= 3; id++ {
		waitFor(t, 10*time.Second, "the quota removed on every node", func() bool {
			return len(quotaOn(t, admCl, id, slowID)) == 0
		})
	}
}

// TestAdminClientQuotaValidation checks Kafka's refusals and the default
// entities: an unsupported key or entity type and a fractional byte rate
// are INVALID_REQUEST; a default client-id quota and a user quota are
// described with a null name, and filters match as Kafka's do.
func TestAdminClientQuotaValidation(t *testing.T) {
	c := startCluster(t, 1)
	adm := kadm.NewClient(newFranz(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := "x"
	for _, e := range []kadm.AlterClientQuotaEntry{
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &name}}, Ops: []kadm.AlterClientQuotaOp{{Key: "no_such_quota", Value: 1}}},
		{Entity: kadm.ClientQuotaEntity{{Type: "ip", Name: &name}}, Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 1}}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &name}}, Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 1.5}}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &name}, {Type: "client-id"}}, Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 1}}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &name}}, Ops: []kadm.AlterClientQuotaOp{{Key: "request_percentage", Value: 0}}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &name}}, Ops: []kadm.AlterClientQuotaOp{{Key: "request_percentage", Value: -5}}},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &name}}, Ops: []kadm.AlterClientQuotaOp{{Key: "controller_mutation_rate", Value: 5}}},
	} {
		res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{e})
		if err != nil || len(res) != 1 || res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "INVALID_REQUEST") {
			t.Errorf("AlterClientQuotas %v %v: want INVALID_REQUEST, got %v %+v", e.Entity, e.Ops, err, res)
		}
	}
	user := "alice"
	alterQuota(t, adm, kadm.ClientQuotaEntity{{Type: "client-id"}}, kadm.AlterClientQuotaOp{Key: "consumer_byte_rate", Value: 5000})
	alterQuota(t, adm, kadm.ClientQuotaEntity{{Type: "user", Name: &user}, {Type: "client-id", Name: &name}},
		kadm.AlterClientQuotaOp{Key: "producer_byte_rate", Value: 7000})
	describe := func(strict bool, comps ...kadm.DescribeClientQuotaComponent) kadm.DescribedClientQuotas {
		t.Helper()
		got, err := adm.DescribeClientQuotas(ctx, strict, comps)
		if err != nil {
			t.Fatalf("DescribeClientQuotas: %v", err)
		}
		return got
	}
	if got := describe(false, kadm.DescribeClientQuotaComponent{Type: "client-id", MatchType: kmsg.QuotasMatchTypeDefault}); len(got) != 1 ||
		len(got[0].Entity) != 1 || got[0].Entity[0].Name != nil || got[0].Values[0].Value != 5000 {
		t.Errorf("default client-id: %+v", got)
	}
	if got := describe(false, kadm.DescribeClientQuotaComponent{Type: "client-id", MatchType: kmsg.QuotasMatchTypeAny}); len(got) != 2 {
		t.Errorf("any client-id, not strict: want both entities, got %+v", got)
	}
	if got := describe(true, kadm.DescribeClientQuotaComponent{Type: "client-id", MatchType: kmsg.QuotasMatchTypeAny}); len(got) != 1 {
		t.Errorf("any client-id, strict: want the client-id-only entity, got %+v", got)
	}
	if got := describe(false, kadm.DescribeClientQuotaComponent{Type: "user", MatchType: kmsg.QuotasMatchTypeExact, MatchName: &user}); len(got) != 1 ||
		len(got[0].Entity) != 2 || got[0].Values[0].Key != "producer_byte_rate" {
		t.Errorf("user alice: %+v", got)
	}
	if _, err := adm.DescribeClientQuotas(ctx, false, []kadm.DescribeClientQuotaComponent{{Type: "ip", MatchType: kmsg.QuotasMatchTypeAny}}); err == nil {
		t.Errorf("describe of ip entities: want INVALID_REQUEST")
	}
}

// fetchBytes sums the record bytes a consumer read between from and until.
type fetchBytes struct {
	mu          sync.Mutex
	from, until time.Time
	bytes, all  int64
}

func (b *fetchBytes) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all += int64(m.CompressedBytes)
	if now.After(b.from) && now.Before(b.until) {
		b.bytes += int64(m.CompressedBytes)
	}
}

// TestAdminClientQuotaFetch sets a default consumer_byte_rate for every
// client id and checks a franz-go consumer reading a backlog is held to
// within 10% of it, while a consumer of another client id with its own,
// larger quota reads the backlog faster.
func TestAdminClientQuotaFetch(t *testing.T) {
	c := startCluster(t, 1)
	const topic, rate = "quota-fetch", 1 << 20
	createTopic(t, c, topic, 1, 1, nil)
	prod := newFranz(t, c, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerBatchMaxBytes(64<<10))
	value := make([]byte, 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ { // 20 MB
		rs := make([]*kgo.Record, 1000)
		for j := range rs {
			rs[j] = &kgo.Record{Value: value}
		}
		if err := prod.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	adm := kadm.NewClient(prod)
	alterQuota(t, adm, kadm.ClientQuotaEntity{{Type: "client-id"}}, kadm.AlterClientQuotaOp{Key: "consumer_byte_rate", Value: rate})
	vip := "quota-vip"
	alterQuota(t, adm, kadm.ClientQuotaEntity{{Type: "client-id", Name: &vip}}, kadm.AlterClientQuotaOp{Key: "consumer_byte_rate", Value: 8 * rate})

	start := time.Now()
	const measureFrom, measureTo = 2 * time.Second, 8 * time.Second
	read := map[string]*fetchBytes{}
	thr := map[string]*throttleHook{}
	var wg sync.WaitGroup
	cctx, ccancel := context.WithTimeout(ctx, measureTo)
	defer ccancel()
	for _, id := range []string{"quota-consumer", vip} {
		read[id], thr[id] = &fetchBytes{from: start.Add(measureFrom), until: start.Add(measureTo)}, &throttleHook{}
		cl := newFranz(t, c, kgo.ClientID(id), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxBytes(64<<10), kgo.FetchMaxPartitionBytes(64<<10), kgo.WithHooks(read[id], thr[id]))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cctx.Err() == nil {
				cl.PollFetches(cctx)
			}
		}()
	}
	wg.Wait()
	secs := (measureTo - measureFrom).Seconds()
	got := float64(read["quota-consumer"].bytes) / secs
	vipRate := float64(read[vip].bytes) / secs
	t.Logf("default consumer quota %d B/s: achieved %.0f B/s (%.1f%%), %d throttled responses; client with an 8x quota: %.0f B/s (%d B in all), %d throttled",
		rate, got, 100*got/rate, thr["quota-consumer"].n.Load(), vipRate, read[vip].all, thr[vip].n.Load())
	if got < 0.9*rate || got > 1.1*rate {
		t.Errorf("consumer's rate %.0f B/s is not within 10%% of the quota %d B/s", got, rate)
	}
	if vipRate < 3*rate && read[vip].all < 19e6 {
		t.Errorf("the consumer with the larger quota read only %.0f B/s", vipRate)
	}
}

// rawConn speaks the Kafka protocol on one TCP connection with nothing of
// a client's politeness: it never waits out a throttle time.
type rawConn struct {
	nc   net.Conn
	corr int32
}

func (r *rawConn) do(t testing.TB, req kmsg.Request, clientID string) kmsg.Response {
	t.Helper()
	r.corr++
	b := binary.BigEndian.AppendUint32(nil, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, uint32(r.corr))
	b = binary.BigEndian.AppendUint16(b, uint16(len(clientID)))
	b = append(b, clientID...)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	b = req.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	r.nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := r.nc.Write(b); err != nil {
		t.Fatalf("raw write: %v", err)
	}
	var size [4]byte
	if _, err := io.ReadFull(r.nc, size[:]); err != nil {
		t.Fatalf("raw read: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(r.nc, body); err != nil {
		t.Fatalf("raw read: %v", err)
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	off := 4
	if resp.IsFlexible() {
		off++
	}
	if err := resp.ReadFrom(body[off:]); err != nil {
		t.Fatalf("raw decode: %v", err)
	}
	return resp
}

// TestAdminClientQuotaMutesConnection: a client that ignores
// throttle_time_ms (a raw connection sending Produce v7 requests back to
// back) is still held to its quota, within 10% from 2 s to 8 s, because
// the broker reads nothing more from it until the throttle time has passed.
func TestAdminClientQuotaMutesConnection(t *testing.T) {
	c := startCluster(t, 1)
	const topic, rate = "quota-raw", 1 << 19
	createTopic(t, c, topic, 1, 1, nil)
	cl := newFranz(t, c, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.DisableIdempotentWrite(), kgo.RequiredAcks(kgo.LeaderAck()), kgo.ProducerLinger(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs := make([]*kgo.Record, 32)
	for i := range rs {
		rs[i] = &kgo.Record{Value: make([]byte, 1000)}
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// One valid record batch, as the broker stored it, to send again and again.
	fr := kmsg.NewPtrFetchRequest()
	fr.Version, fr.MaxWaitMillis, fr.MaxBytes, fr.ReplicaID = 11, 100, 1<<20, -1
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = topic
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	ft.Partitions = append(ft.Partitions, fp)
	fr.Topics = append(fr.Topics, ft)
	nc, err := net.Dial("tcp", c.node(1).kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := &rawConn{nc: nc}
	fresp := rc.do(t, fr, "quota-raw").(*kmsg.FetchResponse) // the connection keeps its first client id
	if len(fresp.Topics) != 1 || len(fresp.Topics[0].Partitions[0].RecordBatches) < 12 {
		t.Fatalf("fetching a batch to replay: %+v", fresp)
	}
	raw := fresp.Topics[0].Partitions[0].RecordBatches
	batch := raw[:12+binary.BigEndian.Uint32(raw[8:12])]

	id := "quota-raw"
	alterQuota(t, kadm.NewClient(cl), kadm.ClientQuotaEntity{{Type: "client-id", Name: &id}},
		kadm.AlterClientQuotaOp{Key: "producer_byte_rate", Value: rate})
	start := time.Now()
	const measureFrom, measureTo = 2 * time.Second, 8 * time.Second
	var bytes int64
	throttled := 0
	for i := 0; time.Since(start) < measureTo && i < 100000; i++ {
		pr := kmsg.NewPtrProduceRequest()
		pr.Version, pr.Acks, pr.TimeoutMillis = 7, 1, 10000
		pt := kmsg.NewProduceRequestTopic()
		pt.Topic = topic
		pp := kmsg.NewProduceRequestTopicPartition()
		pp.Records = batch
		pt.Partitions = append(pt.Partitions, pp)
		pr.Topics = append(pr.Topics, pt)
		resp := rc.do(t, pr, id).(*kmsg.ProduceResponse)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("raw produce: error %d", code)
		}
		if resp.ThrottleMillis > 0 {
			throttled++
		}
		if now := time.Since(start); now > measureFrom && now < measureTo {
			bytes += int64(len(batch))
		}
	}
	got := float64(bytes) / (measureTo - measureFrom).Seconds()
	t.Logf("a client ignoring throttle_time_ms under a %d B/s quota: %.0f B/s (%.1f%%), %d throttled responses", rate, got, 100*got/rate, throttled)
	if got < 0.9*rate || got > 1.1*rate {
		t.Errorf("the raw client's rate %.0f B/s is not within 10%% of the quota %d B/s", got, rate)
	}
}

// TestAdminClientQuotaSarama: a sarama SyncProducer under a produce quota
// is held to it, within 10% from 2 s to 8 s of producing.
func TestAdminClientQuotaSarama(t *testing.T) {
	c := startCluster(t, 1)
	const topic, rate = "quota-sarama", 1 << 19
	createTopic(t, c, topic, 1, 1, nil)
	id := "quota-sarama"
	alterQuota(t, kadm.NewClient(newFranz(t, c)), kadm.ClientQuotaEntity{{Type: "client-id", Name: &id}},
		kadm.AlterClientQuotaOp{Key: "producer_byte_rate", Value: rate})
	cfg := saramaConfig()
	cfg.ClientID = id
	cl := newSaramaClient(t, c, cfg)
	p, err := sarama.NewSyncProducerFromClient(cl)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	value := make([]byte, 1000)
	start := time.Now()
	const measureFrom, measureTo = 2 * time.Second, 8 * time.Second
	var bytes int64
	for i := 0; time.Since(start) < measureTo && i < 100000; i++ {
		msgs := make([]*sarama.ProducerMessage, 32)
		for j := range msgs {
			msgs[j] = &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(value)}
		}
		if err := p.SendMessages(msgs); err != nil {
			t.Fatalf("sarama produce: %v", err)
		}
		if now := time.Since(start); now > measureFrom && now < measureTo {
			bytes += int64(len(msgs) * len(value))
		}
	}
	got := float64(bytes) / (measureTo - measureFrom).Seconds()
	t.Logf("sarama under a %d B/s quota: %.0f B/s (%.1f%%)", rate, got, 100*got/rate)
	if got < 0.9*rate || got > 1.1*rate {
		t.Errorf("sarama's rate %.0f B/s is not within 10%% of the quota %d B/s", got, rate)
	}
}

// TestAdminClientQuotaACLs: with ACLs on, a principal without
// ALTER_CONFIGS and DESCRIBE_CONFIGS on the cluster gets
// CLUSTER_AUTHORIZATION_FAILED from AlterClientQuotas and
// DescribeClientQuotas, and one that has them is served.
func TestAdminClientQuotaACLs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startCluster(t, 1, withTOML("acls_enabled = true"))
	adm := kadm.NewClient(newFranz(t, c, kgo.RequestRetries(1)))
	name := "x"
	entry := kadm.AlterClientQuotaEntry{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: &name}},
		Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 1000}}}
	res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{entry})
	if err != nil || len(res) != 1 || !errors.Is(res[0].Err, kerr.ClusterAuthorizationFailed) {
		t.Fatalf("AlterClientQuotas without ALTER_CONFIGS: %v %+v, want CLUSTER_AUTHORIZATION_FAILED", err, res)
	}
	if _, err := adm.DescribeClientQuotas(ctx, false, nil); !errors.Is(err, kerr.ClusterAuthorizationFailed) {
		t.Fatalf("DescribeClientQuotas without DESCRIBE_CONFIGS: %v, want CLUSTER_AUTHORIZATION_FAILED", err)
	}

	su := startCluster(t, 1, withTOML("acls_enabled = true\nsuper_users = [\"User:ANONYMOUS\"]"))
	sadm := kadm.NewClient(newFranz(t, su))
	alterQuota(t, sadm, entry.Entity, entry.Ops...)
	if got, err := sadm.DescribeClientQuotas(ctx, false, nil); err != nil || len(got) != 1 {
		t.Fatalf("super user DescribeClientQuotas: %v %+v", err, got)
	}
}
