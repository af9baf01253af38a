package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/kafka"
)

// Produce forwarding. A client that cannot read KIP-951 leader hints
// (Produce before v10: kafka-go, sarama, older librdkafka) keeps sending a
// partition to the node its cached metadata names until its next refresh;
// kafka-go refreshes only on a 6 s timer and never on an error. During a
// roll that node may no longer lead: it handed the partition off while
// stopping, or the preferred leader took it back after a rejoin. Rather
// than answer NOT_LEADER until the client's timer fires, the node sends
// the records on to the leader it knows and relays the leader's answer.
// The leader's idempotence checks apply as for a direct write: the batch
// carries the producer's id, epoch and sequence unchanged.
//
// Forwarded requests go out at the newest Produce version, so the leader
// never forwards them again (it answers NOT_LEADER with a hint), and under
// forwardClientID, which the kafka package also refuses to forward.

// forwardClientID is the client id of forwarded produce requests.
const forwardClientID = kafka.ForwardClientID

// forwarder holds one Kafka client per peer, dialled on first use and
// closed with the broker.
type forwarder struct {
	b       *Broker
	count   prometheus.Counter
	mu      sync.Mutex
	closed  bool
	clients map[int32]*kgo.Client
}

func newForwarder(b *Broker) *forwarder {
	return &forwarder{b: b, clients: map[int32]*kgo.Client{},
		count: prometheus.NewCounter(prometheus.CounterOpts{Name: "chronik_produce_forwarded_total",
			Help: "Produce partitions forwarded to their leader for clients that do not follow leader hints."})}
}

var errNoForward = errors.New("no forwarding to that node")

// client returns the client for node id, creating it if needed.
func (f *forwarder) client(id int32) (*kgo.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errNoForward
	}
	if cl := f.clients[id]; cl != nil {
		return cl, nil
	}
	addr := ""
	for _, n := range f.b.clusterNodes() {
		if n.ID == id {
			addr = n.Kafka
		}
	}
	if addr == "" {
		return nil, errNoForward
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ClientID(forwardClientID),
		kgo.DialTimeout(time.Second), kgo.ConnIdleTimeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	f.clients[id] = cl
	return cl, nil
}

// close closes every client; later forwards fail (and the caller answers
// NOT_LEADER as it would without forwarding).
func (f *forwarder) close() {
	f.mu.Lock()
	cls := f.clients
	f.clients, f.closed = nil, true
	f.mu.Unlock()
	for _, cl := range cls {
		cl.Close()
	}
}

// ForwardProduce implements kafka.ProduceForwarder: it sends one
// partition's records to node leader and returns its answer. ok is false
// when the records were not sent or no answer came (leader down or
// leaving, dial or request error); the caller then keeps its own answer.
// A failure after sending is safe for the same reason a client's retry
// is: an idempotent batch is deduplicated by the leader, and a client
// without idempotence accepts that a retried write may land twice.
func (b *Broker) ForwardProduce(ctx context.Context, leader int32, topic string, part int32, records []byte, acks int16, timeout time.Duration) (kafka.ProduceResult, bool) {
	// The forward goes out on the leader's plaintext listener as an
	// anonymous client, so with ACLs on the leader would judge it as that
	// principal, not the client's: then clients get NOT_LEADER as before.
	if b.cfg.Cluster.ACLsEnabled || leader == b.cfg.NodeID || !b.host.PeerAlive(uint64(leader)) || b.host.PeerLeaving(uint64(leader)) {
		return kafka.ProduceResult{}, false
	}
	cl, err := b.fwd.client(leader)
	if err != nil {
		return kafka.ProduceResult{}, false
	}
	seeds := cl.SeedBrokers()
	if len(seeds) == 0 {
		return kafka.ProduceResult{}, false
	}
	req := kmsg.NewPtrProduceRequest()
	req.Acks = acks
	req.TimeoutMillis = int32(timeout / time.Millisecond)
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = part
	rp.Records = records
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	kresp, err := seeds[0].Request(ctx, req)
	if err != nil {
		b.logger.Debug("produce forward failed", "partition", topic, "index", part, "to", leader, "err", err)
		return kafka.ProduceResult{}, false
	}
	resp, ok := kresp.(*kmsg.ProduceResponse)
	if !ok || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return kafka.ProduceResult{}, false
	}
	p := resp.Topics[0].Partitions[0]
	res := kafka.ProduceResult{Err: p.ErrorCode, BaseOffset: p.BaseOffset, LogAppendTime: p.LogAppendTime,
		LogStartOffset: p.LogStartOffset, Hint: noHint}
	if p.ErrorMessage != nil {
		res.Message = *p.ErrorMessage
	}
	if p.CurrentLeader.LeaderID >= 0 {
		res.Hint = kafka.LeaderHint{Leader: p.CurrentLeader.LeaderID, Epoch: p.CurrentLeader.LeaderEpoch}
	}
	b.fwd.count.Inc()
	return res, true
}

// forwardQuiet: a client that wrote nothing here for this long (through
// forwarding or a NOT_LEADER answer) is taken to have moved to the new
// leaders. Usually the wait ends sooner, when the client closes its
// connections: kafka-go and sarama do once their refreshed metadata no
// longer lists this node (meta_hidden.go). Not shorter: kafka-go's
// synchronous WriteMessages waits for every partition of its batch, so
// one partition backing off (0.1, 0.4, 0.9 s...) elsewhere keeps it from
// writing here for that long (seen with 500 ms: the node left while the
// writer still had it cached).
const forwardQuiet = 2 * time.Second

// awaitForwarded keeps a stopping node up, for ForwardWait at most, while
// clients that follow neither leader hints nor NOT_LEADER still write
// here and are forwarded to (kafka/forwarded.go). It ends once they have
// moved (their metadata refresh leaves this node out and they close their
// connections, or they go quiet), or when every peer is stopping too.
func (b *Broker) awaitForwarded() {
	if b.cfg.ForwardWait <= 0 {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ForwardWait)
	defer cancel()
	peersLeft := b.watchPeersLeaving(ctx, cancel)
	waited, still := b.kafka.AwaitForwardedClients(ctx, forwardQuiet)
	allLeaving := peersLeft()
	switch {
	case waited == 0:
	case allLeaving:
		b.logger.Info("Every peer is stopping too; not forwarding for " + itoa(still) + " client connections that do not follow leader hints")
	case still == 0:
		b.logger.Info("Forwarded for " + itoa(waited) + " client connections that do not follow leader hints until they moved, in " + fmtDur(time.Since(start)))
	default:
		b.logger.Warn(itoa(still) + " of " + itoa(waited) + " client connections that do not follow leader hints still write here after the forward wait (" +
			fmtDur(b.cfg.ForwardWait) + "); they retry until their metadata refresh")
	}
}
