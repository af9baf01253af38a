package broker

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/coordinator"
	"github.com/chronik-dev/chronik/kafka"
)

// The Broker implements kafka.Backend.
var _ kafka.Backend = (*Broker)(nil)

// NodeID implements kafka.Backend.
func (b *Broker) NodeID() int32 { return b.cfg.NodeID }

// ClusterID implements kafka.Backend.
func (b *Broker) ClusterID() string { return b.cfg.Cluster.ClusterID }

// Brokers implements kafka.Backend.
func (b *Broker) Brokers() []kafka.BrokerInfo {
	nodes := b.clusterNodes()
	out := make([]kafka.BrokerInfo, 0, len(nodes))
	for _, n := range nodes {
		h, p := addrHostPort(n.Kafka)
		bi := kafka.BrokerInfo{NodeID: n.ID, Host: h, Port: p, Listeners: advertisedListeners(n.NodeSpec)}
		if n.Rack != "" {
			r := n.Rack
			bi.Rack = &r
		}
		out = append(out, bi)
	}
	return out
}

// ControllerID implements kafka.Backend: the metadata group's leader.
func (b *Broker) ControllerID() int32 {
	if b.meta == nil {
		return -1
	}
	if l := b.meta.Status().Leader; l != 0 {
		return int32(l)
	}
	return -1
}

// partitionInfo describes a partition from this node's point of view.
func (b *Broker) partitionInfo(index int32, pm partitionMeta) kafka.PartitionInfo {
	l := b.leaderOf(pm.Group, false)
	pi := kafka.PartitionInfo{Partition: index, Leader: l.leader, LeaderEpoch: l.epoch, Replicas: pm.Replicas, ISR: l.isr}
	if pi.ISR == nil {
		if pi.Leader >= 0 {
			pi.ISR = []int32{pi.Leader}
		} else {
			pi.ISR = []int32{}
		}
	}
	for _, r := range pm.Replicas {
		if r != b.cfg.NodeID && !b.host.PeerAlive(uint64(r)) {
			pi.Offline = append(pi.Offline, r)
		}
	}
	if pi.Leader < 0 {
		pi.Err = kerr.LeaderNotAvailable.Code
		if li, ok := b.view.lastLeader(pm.Group); ok && b.host.PeerAlive(uint64(li.Leader)) && slices.Contains(pm.Replicas, li.Leader) {
			pi.Fallback = &kafka.LeaderHint{Leader: li.Leader, Epoch: li.Epoch}
		}
	}
	return pi
}

// Topics implements kafka.Backend.
func (b *Broker) Topics(names []string, includeInternal bool) []kafka.TopicInfo {
	var metas []topicMeta
	var out []kafka.TopicInfo
	if names == nil {
		for _, t := range b.metaSM.topics() {
			if !t.Internal || includeInternal {
				metas = append(metas, t)
			}
		}
	} else {
		for _, n := range names {
			t, ok := b.metaSM.topic(n)
			if !ok && b.metaSM.deletedWithin(n, deletedGrace) {
				out = append(out, kafka.TopicInfo{Name: n}) // being deleted: no partitions
				continue
			}
			if !ok {
				code := kerr.UnknownTopicOrPartition.Code
				if err := validTopicName(n); err != nil {
					code = kerr.InvalidTopicException.Code
				}
				out = append(out, kafka.TopicInfo{Name: n, Err: code})
				continue
			}
			metas = append(metas, t)
		}
	}
	for _, t := range metas {
		ti := kafka.TopicInfo{Name: t.Name, ID: t.ID, Internal: t.Internal}
		for i, pm := range t.Partitions {
			ti.Partitions = append(ti.Partitions, b.partitionInfo(int32(i), pm))
		}
		out = append(out, ti)
	}
	return out
}

// TopicName implements kafka.Backend.
func (b *Broker) TopicName(id [16]byte) (string, bool) { return b.metaSM.topicName(id) }

func validTopicName(n string) error {
	if n == "" || n == "." || n == ".." {
		return fmt.Errorf("topic name %q is not allowed", n)
	}
	if len(n) > 249 {
		return fmt.Errorf("topic name is longer than 249 characters")
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q has a character other than ASCII letters, digits, '.', '_' and '-'", n)
		}
	}
	return nil
}

// CreateTopics implements kafka.Backend.
func (b *Broker) CreateTopics(ctx context.Context, reqs []kafka.CreateTopic, validateOnly bool) []kafka.CreateTopicResult {
	return b.createTopics(ctx, reqs, validateOnly, false)
}

func (b *Broker) createTopics(ctx context.Context, reqs []kafka.CreateTopic, validateOnly, internal bool) []kafka.CreateTopicResult {
	out := make([]kafka.CreateTopicResult, len(reqs))
	nodes := b.nodeIDs()
	for i, r := range reqs {
		res := &out[i]
		res.Name = r.Name
		fail := func(code int16, msg string) { res.Err, res.Message = code, msg }
		if err := validTopicName(r.Name); err != nil {
			fail(kerr.InvalidTopicException.Code, err.Error())
			continue
		}
		if len(r.Name) > 0 && r.Name[0] == '_' && r.Name[1:2] == "_" && !internal {
			fail(kerr.InvalidTopicException.Code, "names starting with __ are reserved for internal topics")
			continue
		}
		if _, ok := b.metaSM.topic(r.Name); ok {
			fail(kerr.TopicAlreadyExists.Code, "topic "+r.Name+" already exists")
			continue
		}
		cfgs, err := validateConfigs(r.Configs)
		if err != nil {
			fail(kerr.InvalidConfig.Code, err.Error())
			continue
		}
		var assign [][]int32
		if len(r.Assignment) > 0 {
			if r.Partitions != -1 || r.ReplicationFactor != -1 {
				fail(kerr.InvalidRequest.Code, "give either an assignment or partitions and replication factor")
				continue
			}
			assign = make([][]int32, len(r.Assignment))
			ok := true
			for p, reps := range r.Assignment {
				if p < 0 || int(p) >= len(r.Assignment) || len(reps) == 0 {
					ok = false
					break
				}
				for _, id := range reps {
					if !slices.Contains(nodes, id) {
						ok = false
					}
				}
				assign[p] = reps
			}
			if !ok {
				fail(kerr.InvalidReplicaAssignment.Code, "assignment names unknown brokers or leaves gaps")
				continue
			}
		} else {
			n := r.Partitions
			if n == -1 {
				n = b.cfg.Cluster.DefaultPartitions
			}
			rf := int(r.ReplicationFactor)
			if rf == -1 {
				rf = int(b.cfg.Cluster.DefaultReplicationFactor)
			}
			if n <= 0 {
				fail(kerr.InvalidPartitions.Code, "partitions must be positive")
				continue
			}
			if rf <= 0 || rf > len(nodes) {
				fail(kerr.InvalidReplicationFactor.Code, fmt.Sprintf("replication factor %d with %d brokers", rf, len(nodes)))
				continue
			}
			if n > 100000 {
				fail(kerr.InvalidPartitions.Code, "too many partitions")
				continue
			}
			assign = assignReplicas(nodes, int(n), rf, b.metaSM.partitionCount())
		}
		res.Partitions, res.ReplicationFactor = int32(len(assign)), int16(len(assign[0]))
		if validateOnly {
			continue
		}
		id := newTopicID()
		mr, err := b.metaPropose(ctx, metaCmd{Op: "create_topic", Topic: &topicMeta{Name: r.Name, ID: id, Internal: internal, Configs: cfgs}, Assign: assign})
		if err != nil {
			fail(kerr.RequestTimedOut.Code, "metadata change did not complete: "+err.Error())
			continue
		}
		if mr.Err != 0 && !(mr.Err == kerr.TopicAlreadyExists.Code && mr.Topic != nil && mr.Topic.ID == id) {
			fail(mr.Err, mr.Msg)
			continue
		}
		res.ID = id
		res.Configs = b.describeTopicConfigs(topicMeta{Configs: cfgs})
	}
	// Answer once the new partitions have leaders, so clients that produce
	// right away (kafka-go treats a missing leader as fatal) find them.
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for i := range out {
		if out[i].Err != 0 || validateOnly {
			continue
		}
		b.waitLeaders(wait, out[i].Name)
	}
	return out
}

// LeadersChanged is kafka.Backend's: leaderEvents fires at every change
// of a leader this node knows of (local replicas and peers' notices).
func (b *Broker) LeadersChanged() <-chan struct{} { return b.leaderEvents.wait() }

// waitLeaders waits until every partition of a topic has a known leader,
// or ctx ends.
func (b *Broker) waitLeaders(ctx context.Context, topic string) {
	for {
		changed := b.leaderEvents.wait()
		t, ok := b.metaSM.topic(topic)
		if ok {
			all := true
			for i, pm := range t.Partitions {
				if b.partitionInfo(int32(i), pm).Leader < 0 {
					all = false
					break
				}
			}
			if all {
				return
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// DeleteTopic implements kafka.Backend.
func (b *Broker) DeleteTopic(ctx context.Context, name string) int16 {
	t, ok := b.metaSM.topic(name)
	if !ok {
		return kerr.UnknownTopicOrPartition.Code
	}
	if t.Internal {
		return kerr.InvalidTopicException.Code
	}
	mr, err := b.metaPropose(ctx, metaCmd{Op: "delete_topic", Name: name})
	if err != nil {
		return kerr.RequestTimedOut.Code
	}
	return mr.Err
}

// CreatePartitions implements kafka.Backend.
func (b *Broker) CreatePartitions(ctx context.Context, topic string, count int32, validateOnly bool) (int16, string) {
	t, ok := b.metaSM.topic(topic)
	if !ok {
		return kerr.UnknownTopicOrPartition.Code, ""
	}
	if t.Internal {
		return kerr.InvalidTopicException.Code, "internal topics cannot grow"
	}
	have := int32(len(t.Partitions))
	if count <= have {
		return kerr.InvalidPartitions.Code, fmt.Sprintf("topic has %d partitions; new count must be larger", have)
	}
	if validateOnly {
		return 0, ""
	}
	rf := t.Partitions[0].replicationFactor()
	assign := assignReplicas(b.nodeIDs(), int(count-have), rf, b.metaSM.partitionCount())
	mr, err := b.metaPropose(ctx, metaCmd{Op: "create_partitions", Name: topic, Assign: assign})
	if err != nil {
		return kerr.RequestTimedOut.Code, err.Error()
	}
	if mr.Err == 0 {
		b.waitLeaders(ctx, topic)
	}
	return mr.Err, mr.Msg
}

// TopicConfigs implements kafka.Backend.
func (b *Broker) TopicConfigs(topic string) ([]kafka.ConfigEntry, int16) {
	t, ok := b.metaSM.topic(topic)
	if !ok {
		return nil, kerr.UnknownTopicOrPartition.Code
	}
	return b.describeTopicConfigs(t), 0
}

// lookup finds a topic partition's group and local replica. A partition
// this node does not host answers NOT_LEADER with the leader it knows.
func (b *Broker) lookup(topic string, part int32) (*partition, uint64, int16) {
	if p := b.partitionByName(topic, part); p != nil {
		return p, p.group, 0
	}
	t, ok := b.metaSM.topic(topic)
	if !ok || part < 0 || int(part) >= len(t.Partitions) {
		return nil, 0, kerr.UnknownTopicOrPartition.Code
	}
	if t.Internal {
		return nil, 0, kerr.InvalidTopicException.Code
	}
	return nil, t.Partitions[part].Group, kerr.NotLeaderForPartition.Code
}

// Produce implements kafka.Backend.
func (b *Broker) Produce(topic string, part int32, records []byte, acks int16, timeout time.Duration) kafka.ProduceWait {
	p, g, code := b.lookup(topic, part)
	if p == nil {
		r := kafka.ProduceResult{Err: code, BaseOffset: -1, LogAppendTime: -1, LogStartOffset: -1, Hint: noHint}
		if code == kerr.NotLeaderForPartition.Code {
			r.Hint = b.leaderHint(g, 0)
		}
		return immediate(r)
	}
	return p.produce(records, acks, timeout)
}

// ScreenProduce implements kafka.ProduceScreener: records for a partition
// that does not exist, or larger than its topic's max.message.bytes, are
// refused whatever they hold (as produce would).
func (b *Broker) ScreenProduce(topic string, part int32, size int) (int16, string) {
	p, _, code := b.lookup(topic, part)
	if p == nil {
		if code == kerr.NotLeaderForPartition.Code {
			return 0, "" // answered with a leader hint once read
		}
		return code, ""
	}
	if int64(size) > p.b.topicConfig(p.topic).maxMessageBytes {
		return kerr.MessageTooLarge.Code, "batch larger than max.message.bytes"
	}
	return 0, ""
}

// Fetch implements kafka.Backend.
func (b *Broker) Fetch(req kafka.FetchPartition) (kafka.FetchResult, <-chan struct{}) {
	p, g, code := b.lookup(req.Topic, req.Partition)
	if p == nil {
		r := kafka.FetchResult{Err: code, HighWatermark: -1, LastStable: -1, LogStartOffset: -1, Hint: noHint}
		if code == kerr.NotLeaderForPartition.Code {
			r.Hint = b.leaderHint(g, 0)
		}
		return r, nil
	}
	return p.fetch(req)
}

// ListOffset implements kafka.Backend.
func (b *Broker) ListOffset(topic string, part int32, ts int64, current int32, _ bool) kafka.ListOffsetResult {
	p, g, code := b.lookup(topic, part)
	if p == nil {
		r := kafka.ListOffsetResult{Err: code, Offset: -1, Timestamp: -1, LeaderEpoch: -1}
		if code == kerr.NotLeaderForPartition.Code {
			r.Hint = b.leaderHint(g, 0)
		}
		return r
	}
	return p.listOffset(ts, current)
}

// EpochEndOffset implements kafka.Backend.
func (b *Broker) EpochEndOffset(topic string, part int32, current, epoch int32) kafka.EpochEndResult {
	p, _, code := b.lookup(topic, part)
	if p == nil {
		return kafka.EpochEndResult{Err: code, LeaderEpoch: -1, EndOffset: -1}
	}
	return p.epochEnd(current, epoch)
}

// InitProducerID implements kafka.Backend. Producer ids come from blocks
// that the metadata group hands out, so they are unique cluster-wide.
func (b *Broker) InitProducerID(ctx context.Context, txnID *string, pid int64, epoch int16) (int64, int16, int16) {
	if txnID != nil && *txnID != "" {
		return -1, -1, kerr.TransactionalIDAuthorizationFailed.Code
	}
	if pid >= 0 && epoch >= 0 && epoch < 32767 {
		// KIP-360: a producer that knows its id may bump its epoch.
		return pid, epoch + 1, 0
	}
	b.pidMu.Lock()
	defer b.pidMu.Unlock()
	if b.pidNext >= b.pidEnd {
		mr, err := b.metaPropose(ctx, metaCmd{Op: "alloc_producer_ids", Count: producerIDBlock})
		if err != nil {
			return -1, -1, kerr.CoordinatorNotAvailable.Code
		}
		b.pidNext, b.pidEnd = mr.PIDStart, mr.PIDStart+producerIDBlock
	}
	id := b.pidNext
	b.pidNext++
	return id, 0, 0
}

// Coordinator implements kafka.Backend.
func (b *Broker) Coordinator(group string) (int32, int16) {
	t, ok := b.metaSM.topic(offsetsTopic)
	if !ok || len(t.Partitions) == 0 {
		return -1, kerr.CoordinatorNotAvailable.Code
	}
	pm := t.Partitions[groupPartition(group, int32(len(t.Partitions)))]
	pi := b.partitionInfo(0, pm)
	if pi.Leader < 0 {
		return -1, kerr.CoordinatorNotAvailable.Code
	}
	if pi.Leader == b.cfg.NodeID && !b.ownsGroup(group) {
		// Leader, but not ready yet (or stopping): ask again shortly.
		return -1, kerr.CoordinatorNotAvailable.Code
	}
	return pi.Leader, 0
}

// GroupRequest implements kafka.Backend.
func (b *Broker) GroupRequest(ctx context.Context, req kmsg.Request) kmsg.Response {
	cl := kafka.ClientFromContext(ctx)
	return b.coord.Handle(coordinator.WithClient(ctx, cl.ID, "/"+cl.Host), req)
}

// GroupAPIs implements kafka.Backend.
func (b *Broker) GroupAPIs() []kafka.APIRange {
	var out []kafka.APIRange
	for _, k := range coordinator.Keys() {
		out = append(out, kafka.APIRange{Key: k.Key, Min: k.Min, Max: k.Max})
	}
	return out
}

// ShuttingDown implements kafka.Backend.
func (b *Broker) ShuttingDown() <-chan struct{} { return b.shutting }
