package broker

import (
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
	"github.com/chronik-dev/chronik/raft"
)

// The cluster metadata lives in Raft group 1, replicated over every node.
// Partition groups get ids from firstPartitionGroup on, assigned when the
// create command is applied, so every node derives the same ids.
const (
	metaGroup           = 1
	firstPartitionGroup = 100
	offsetsTopic        = "__consumer_offsets"
	metaName            = "__cluster_metadata-0"
	metaTopic           = "__cluster_metadata" // as /partitions lists it
	producerIDBlock     = 1000
)

type topicMeta struct {
	Name       string            `json:"name"`
	ID         [16]byte          `json:"id"`
	Internal   bool              `json:"internal,omitempty"`
	Partitions []partitionMeta   `json:"partitions"`
	Configs    map[string]string `json:"configs,omitempty"`
}

type partitionMeta struct {
	Group    uint64  `json:"group"`
	Replicas []int32 `json:"replicas"` // Replicas[0] is the preferred leader
	// Replica movement (meta_reassign.go).
	Origin []int32 `json:"origin,omitempty"`
	Target []int32 `json:"target,omitempty"`
	Prior  []int32 `json:"prior,omitempty"`
	// Queue is the place of a move waiting for a slot (move_queue.go):
	// 0 when no move waits.
	Queue uint64 `json:"queue,omitempty"`
}

type metaState struct {
	Topics         map[string]*topicMeta `json:"topics"`
	NextGroup      uint64                `json:"next_group"`
	NextProducerID int64                 `json:"next_producer_id"`
	// BrokerConfigs are the dynamic broker configs: "" holds the
	// cluster-wide defaults, a node id that node's own.
	BrokerConfigs map[string]map[string]string `json:"broker_configs,omitempty"`
	// Quotas are the client quotas, by entity (see quotaKey).
	Quotas map[string]map[string]string `json:"quotas,omitempty"`
	// ACLs are every access control entry (broker/acls.go).
	ACLs []kafka.ACL `json:"acls,omitempty"`
	// Scram holds SCRAM credentials by user and mechanism (scram.go).
	Scram map[string]map[string]*scramMeta `json:"scram,omitempty"`
	// Brokers is the broker registry, by node id (meta_brokers.go).
	Brokers map[string]*brokerMeta `json:"brokers,omitempty"`
	// MetaVoters are the metadata group's voters after its latest vote
	// move (nil: the bootstrap voters), MetaTarget those a move under way
	// goes to (meta_voters.go).
	MetaVoters []int32 `json:"meta_voters,omitempty"`
	MetaTarget []int32 `json:"meta_target,omitempty"`
	// NextQueue numbers queued moves in the order they were submitted.
	NextQueue uint64 `json:"next_queue,omitempty"`
}

// metaCmd is a command in the metadata log (JSON, KindCommand).
type metaCmd struct {
	Op  string `json:"op"`
	Req uint64 `json:"req"` // proposer's request id: node<<48 | sequence
	// create_topic
	Topic *topicMeta `json:"topic,omitempty"`
	// delete_topic, create_partitions, alter_configs, alter_broker_configs
	// (Name is the node id, or "" for the cluster-wide defaults),
	// alter_client_quotas (Name is the entity's quotaKey)
	Name   string            `json:"name,omitempty"`
	Assign [][]int32         `json:"assign,omitempty"`
	Set    map[string]string `json:"set,omitempty"`
	// Replace drops every config Set does not name (AlterConfigs).
	Replace bool `json:"replace,omitempty"`
	// Expect, with Check, is the config map the proposer computed Set
	// from: the change applies only if it is still current, so concurrent
	// alterations of one resource cannot lose each other's changes.
	Expect map[string]string `json:"expect,omitempty"`
	Check  bool              `json:"check,omitempty"` // Expect is set (an empty map is omitted)
	// alloc_producer_ids
	Count int64 `json:"count,omitempty"`
	// create_acls, delete_acls
	ACLs    []kafka.ACL       `json:"acls,omitempty"`
	Filters []kafka.ACLFilter `json:"filters,omitempty"`
	// alter_scram
	Scram []scramChange `json:"scram,omitempty"`
	// reassign (Name is the topic), reassign_done
	Moves []partitionMove `json:"moves,omitempty"`
	// reassign, reassign_done, admit_moves: the proposer's
	// max_concurrent_moves (0: unlimited, as before queues existed)
	Limit int `json:"limit,omitempty"`
	// register_broker, broker_rejoined, broker_state (meta_brokers.go)
	Member *memberCmd `json:"member,omitempty"`
	// meta_voters, meta_voters_done: the metadata group's target voters
	Voters []int32 `json:"voters,omitempty"`
}

type metaResult struct {
	Err      int16
	Msg      string
	PIDStart int64
	Topic    *topicMeta
	Deleted  [][]kafka.ACL // delete_acls: per filter
	Codes    []int16       // reassign, reassign_done: per partition
}

// metaSM is the metadata state machine.
type metaSM struct {
	node    int32
	mu      sync.RWMutex
	st      metaState
	byID    map[[16]byte]string
	byGroup map[uint64]groupRef
	results map[uint64]metaResult
	changed func() // told after every applied change (not under mu)
	// deletedAt is when this node applied each topic deletion; local
	// bookkeeping only, never part of the replicated state.
	deletedAt map[string]time.Time
	// acls indexes st.ACLs; rebuilt (never changed) when they change.
	acls *kafka.ACLIndex
}

// groupRef names the partition a Raft group serves.
type groupRef struct {
	topic     string
	partition int32
}

func newMetaSM(node int32, changed func()) *metaSM {
	m := &metaSM{node: node, changed: changed, results: map[uint64]metaResult{}, deletedAt: map[string]time.Time{}}
	m.reset(metaState{})
	return m
}

func (m *metaSM) reset(st metaState) {
	if st.Topics == nil {
		st.Topics = map[string]*topicMeta{}
	}
	if st.NextGroup < firstPartitionGroup {
		st.NextGroup = firstPartitionGroup
	}
	if st.NextProducerID < 1 {
		st.NextProducerID = 1
	}
	m.st = st
	m.acls = kafka.NewACLIndex(st.ACLs)
	m.byID = map[[16]byte]string{}
	m.byGroup = map[uint64]groupRef{}
	for _, t := range st.Topics {
		m.index(t)
	}
}

// addPartitions appends a partition per replica list to t, each with the
// next Raft group id, and indexes them.
func (m *metaSM) addPartitions(t *topicMeta, assign [][]int32) {
	for _, reps := range assign {
		t.Partitions = append(t.Partitions, partitionMeta{Group: m.st.NextGroup, Replicas: reps})
		m.st.NextGroup++
	}
	m.index(t)
}

func (m *metaSM) index(t *topicMeta) {
	m.byID[t.ID] = t.Name
	for i, p := range t.Partitions {
		m.byGroup[p.Group] = groupRef{topic: t.Name, partition: int32(i)}
	}
}

// Apply implements raft.StateMachine.
func (m *metaSM) Apply(ents []raft.Committed) error {
	changed := false
	m.mu.Lock()
	for _, e := range ents {
		if e.Kind != clogCommand {
			continue
		}
		var cmd metaCmd
		if err := json.Unmarshal(e.Payload, &cmd); err != nil {
			return fmt.Errorf("metadata entry %d: %w", e.Index, err)
		}
		res := m.apply(&cmd)
		changed = true
		if int32(cmd.Req>>48) == m.node && cmd.Req != 0 {
			m.results[cmd.Req] = res
		}
	}
	m.mu.Unlock()
	if changed && m.changed != nil {
		m.changed()
	}
	return nil
}

// apply runs one command; it must be deterministic.
func (m *metaSM) apply(cmd *metaCmd) metaResult {
	switch cmd.Op {
	case "create_topic":
		t := cmd.Topic
		if t == nil {
			return metaResult{Err: kerr.InvalidRequest.Code}
		}
		if old, ok := m.st.Topics[t.Name]; ok {
			return metaResult{Err: kerr.TopicAlreadyExists.Code, Msg: "topic " + t.Name + " already exists", Topic: old}
		}
		delete(m.deletedAt, t.Name)
		nt := &topicMeta{Name: t.Name, ID: t.ID, Internal: t.Internal, Configs: t.Configs}
		m.st.Topics[nt.Name] = nt
		m.addPartitions(nt, cmd.Assign)
		return metaResult{Topic: nt}
	case "delete_topic":
		t, ok := m.st.Topics[cmd.Name]
		if !ok {
			return metaResult{Err: kerr.UnknownTopicOrPartition.Code}
		}
		delete(m.st.Topics, cmd.Name)
		delete(m.byID, t.ID)
		now := time.Now()
		for n, at := range m.deletedAt {
			if now.Sub(at) >= deletedGrace {
				delete(m.deletedAt, n)
			}
		}
		m.deletedAt[cmd.Name] = now
		for _, p := range t.Partitions {
			delete(m.byGroup, p.Group)
		}
		return metaResult{Topic: t}
	case "create_partitions":
		t, ok := m.st.Topics[cmd.Name]
		if !ok {
			return metaResult{Err: kerr.UnknownTopicOrPartition.Code}
		}
		m.addPartitions(t, cmd.Assign)
		return metaResult{Topic: t}
	case "alter_configs":
		t, ok := m.st.Topics[cmd.Name]
		if !ok {
			return metaResult{Err: kerr.UnknownTopicOrPartition.Code}
		}
		if cmd.Check && !maps.Equal(cmd.Expect, t.Configs) {
			return metaResult{Err: errConfigsChanged}
		}
		t.Configs = alterMap(t.Configs, cmd.Set, cmd.Replace)
		return metaResult{Topic: t}
	case "alter_broker_configs":
		if m.st.BrokerConfigs == nil {
			m.st.BrokerConfigs = map[string]map[string]string{}
		}
		if cmd.Check && !maps.Equal(cmd.Expect, m.st.BrokerConfigs[cmd.Name]) {
			return metaResult{Err: errConfigsChanged}
		}
		m.st.BrokerConfigs[cmd.Name] = alterMap(m.st.BrokerConfigs[cmd.Name], cmd.Set, cmd.Replace)
		return metaResult{}
	case "alter_client_quotas":
		return m.applyQuotas(cmd)
	case "create_acls":
		return m.applyCreateACLs(cmd.ACLs)
	case "delete_acls":
		return m.applyDeleteACLs(cmd.Filters)
	case "alter_scram":
		m.applyScram(cmd.Scram)
		return metaResult{}
	case "reassign":
		return m.applyReassign(cmd)
	case "reassign_done":
		return m.applyReassignDone(cmd)
	case "admit_moves":
		m.admitMoves(cmd.Limit)
		return metaResult{}
	case "register_broker", "broker_rejoined", "broker_state":
		return m.applyMember(cmd.Op, cmd.Member)
	case "meta_voters", "meta_voters_done":
		return m.applyMetaVoters(cmd.Op, cmd.Voters)
	case "alloc_producer_ids":
		start := m.st.NextProducerID
		m.st.NextProducerID += cmd.Count
		return metaResult{PIDStart: start}
	}
	return metaResult{Err: kerr.InvalidRequest.Code, Msg: "unknown metadata command " + strconv.Quote(cmd.Op)}
}

// errConfigsChanged is a metaResult code (never sent to clients): the
// configs changed between computing an alteration and applying it.
const errConfigsChanged int16 = -100

// alterMap applies set to cfgs (an empty value deletes the key); replace
// starts from nothing.
func alterMap(cfgs, set map[string]string, replace bool) map[string]string {
	if cfgs == nil || replace {
		cfgs = map[string]string{}
	}
	for k, v := range set {
		if v == "" {
			delete(cfgs, k)
		} else {
			cfgs[k] = v
		}
	}
	return cfgs
}

// brokerConfigs returns a copy of one entity's dynamic broker configs.
func (m *metaSM) brokerConfigs(entity string) map[string]string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[string]string{}
	for k, v := range m.st.BrokerConfigs[entity] {
		out[k] = v
	}
	return out
}

// Snapshot implements raft.StateMachine.
func (m *metaSM) Snapshot() ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return json.Marshal(&m.st)
}

// Restore implements raft.StateMachine.
func (m *metaSM) Restore(_ uint64, data []byte) error {
	var st metaState
	if len(data) > 0 {
		if err := json.Unmarshal(data, &st); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.reset(st)
	m.mu.Unlock()
	if m.changed != nil {
		m.changed()
	}
	return nil
}

func (m *metaSM) takeResult(req uint64) (metaResult, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.results[req]
	delete(m.results, req)
	return r, ok
}

// topic returns a copy of a topic's metadata.
func (m *metaSM) topic(name string) (topicMeta, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	t, ok := m.st.Topics[name]
	if !ok {
		return topicMeta{}, false
	}
	return cloneTopic(t), true
}

// deletedGrace is how long after a deletion Metadata lists the topic with
// no partitions instead of creating it again: clients check their deletion
// that way (kafka-go's Conn does), and must not undo it by asking.
const deletedGrace = 5 * time.Second

// deletedWithin reports whether topic was deleted less than d ago (and not
// created again since).
func (m *metaSM) deletedWithin(topic string, d time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.deletedAt[topic]
	if ok && time.Since(at) >= d {
		delete(m.deletedAt, topic)
		ok = false
	}
	return ok
}

func (m *metaSM) topicName(id [16]byte) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, ok := m.byID[id]
	return n, ok
}

func (m *metaSM) group(g uint64) (groupRef, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r, ok := m.byGroup[g]
	return r, ok
}

// topics returns copies of every topic, sorted by name.
func (m *metaSM) topics() []topicMeta {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]topicMeta, 0, len(m.st.Topics))
	for _, t := range m.st.Topics {
		out = append(out, cloneTopic(t))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (m *metaSM) partitionCount() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := 0
	for _, t := range m.st.Topics {
		n += len(t.Partitions)
	}
	return n
}

func cloneTopic(t *topicMeta) topicMeta {
	c := *t
	c.Partitions = make([]partitionMeta, len(t.Partitions))
	for i, p := range t.Partitions {
		c.Partitions[i] = p.clone()
	}
	c.Configs = map[string]string{}
	for k, v := range t.Configs {
		c.Configs[k] = v
	}
	return c
}

// assignReplicas spreads replicas of n new partitions over nodes: each
// partition starts at the next node after the previous one, so preferred
// leaders (the first replica) rotate evenly. offset continues the rotation
// from partitions that already exist.
func assignReplicas(nodes []int32, n int, rf int, offset int) [][]int32 {
	out := make([][]int32, n)
	for p := 0; p < n; p++ {
		reps := make([]int32, rf)
		for r := 0; r < rf; r++ {
			reps[r] = nodes[(offset+p+r)%len(nodes)]
		}
		out[p] = reps
	}
	return out
}
