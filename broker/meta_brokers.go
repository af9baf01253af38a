package broker

import (
	"context"
	"net"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
)

// The broker registry: every node registers itself in the cluster
// metadata when it starts (register.go), so the set of brokers is
// replicated state, not only cluster.toml. A node that is not in the
// others' cluster.toml becomes known to them this way.

// Broker states in the registry.
const (
	brokerActive   = "active"
	brokerDraining = "draining" // gets no new replicas; being emptied
	brokerRemoved  = "removed"  // gone: not listed, its connections refused
)

// maxRetired bounds the retired incarnations a registry entry keeps.
const maxRetired = 8

// brokerMeta is one registered broker.
type brokerMeta struct {
	ID        int32          `json:"id"`
	Kafka     string         `json:"kafka,omitempty"`
	Listeners []ListenerSpec `json:"listeners,omitempty"` // advertised only (Listen cleared)
	Raft      string         `json:"raft"`
	Admin     string         `json:"admin,omitempty"`
	Rack      string         `json:"rack,omitempty"`
	// Incarnation is the data directory's (node.json); Retired are the
	// ones before it, whose connections peers refuse.
	Incarnation string    `json:"incarnation"`
	Retired     []string  `json:"retired,omitempty"`
	State       string    `json:"state"`
	Registered  time.Time `json:"registered"`
	// Rejoin are the groups this incarnation still has to rejoin: it came
	// back with an empty directory, and each group's leader demotes and
	// re-promotes it (rejoin.go), then reports it done.
	Rejoin []uint64 `json:"rejoin,omitempty"`
	// JoinedBelow, for an incarnation registered in join mode, is the
	// first group id created after its registration: this incarnation
	// opens every group below it gagged, whether or not its rejoin has
	// been reported done (its old disk may have been a member of any).
	JoinedBelow uint64 `json:"joined_below,omitempty"`
}

// memberCmd is the payload of the registry's metadata commands.
type memberCmd struct {
	// register_broker
	Broker *brokerMeta `json:"broker,omitempty"`
	Join   bool        `json:"join,omitempty"` // the node is in join mode
	// broker_rejoined (Broker.ID and Broker.Incarnation), broker_state
	ID          int32    `json:"id,omitempty"`
	Incarnation string   `json:"incarnation,omitempty"`
	Groups      []uint64 `json:"groups,omitempty"`
	State       string   `json:"state,omitempty"`
}

// spec turns a registration into the NodeSpec the rest of the broker
// uses.
func (bm *brokerMeta) spec() NodeSpec {
	return NodeSpec{ID: bm.ID, Kafka: bm.Kafka, Raft: bm.Raft, Admin: bm.Admin, Rack: bm.Rack, Listeners: slices.Clone(bm.Listeners)}
}

// sameAddresses reports whether two registrations advertise the same.
func (bm *brokerMeta) sameAddresses(o *brokerMeta) bool {
	return bm.Kafka == o.Kafka && bm.Raft == o.Raft && bm.Admin == o.Admin && bm.Rack == o.Rack &&
		slices.Equal(bm.Listeners, o.Listeners)
}

func brokerKey(id int32) string { return strconv.Itoa(int(id)) }

// applyMember runs the registry commands; it must be deterministic.
func (m *metaSM) applyMember(op string, c *memberCmd) metaResult {
	if c == nil {
		return metaResult{Err: kerr.InvalidRequest.Code, Msg: op + " without its payload"}
	}
	if m.st.Brokers == nil {
		m.st.Brokers = map[string]*brokerMeta{}
	}
	switch op {
	case "register_broker":
		return m.applyRegister(c)
	case "broker_rejoined":
		bm := m.st.Brokers[brokerKey(c.ID)]
		if bm == nil || bm.Incarnation != c.Incarnation {
			return metaResult{} // an older incarnation's leftovers: nothing to do
		}
		bm.Rejoin = slices.DeleteFunc(bm.Rejoin, func(g uint64) bool { return slices.Contains(c.Groups, g) })
		if len(bm.Rejoin) == 0 {
			bm.Rejoin = nil
		}
		return metaResult{}
	case "broker_state":
		bm := m.st.Brokers[brokerKey(c.ID)]
		if bm == nil {
			return metaResult{Err: kerr.BrokerNotAvailable.Code, Msg: "broker " + brokerKey(c.ID) + " is not registered"}
		}
		switch c.State {
		case brokerActive, brokerDraining, brokerRemoved:
		default:
			return metaResult{Err: kerr.InvalidRequest.Code, Msg: "unknown broker state " + strconv.Quote(c.State)}
		}
		bm.State = c.State
		return metaResult{}
	}
	return metaResult{Err: kerr.InvalidRequest.Code, Msg: "unknown metadata command " + strconv.Quote(op)}
}

func (m *metaSM) applyRegister(c *memberCmd) metaResult {
	nb := c.Broker
	if nb == nil || nb.ID <= 0 || nb.ID >= 1<<16 || nb.Incarnation == "" {
		return metaResult{Err: kerr.InvalidRequest.Code, Msg: "bad broker registration"}
	}
	if _, _, err := net.SplitHostPort(nb.Raft); err != nil {
		return metaResult{Err: kerr.InvalidRequest.Code, Msg: "bad raft address " + strconv.Quote(nb.Raft)}
	}
	key := brokerKey(nb.ID)
	old := m.st.Brokers[key]
	reg := *nb
	reg.Listeners = slices.Clone(nb.Listeners)
	if old != nil && old.Incarnation == nb.Incarnation {
		if old.State == brokerRemoved {
			return metaResult{Err: kerr.BrokerNotAvailable.Code, Msg: "broker " + key + " was removed; start it with an empty data directory to add it again"}
		}
		// A restart (or a changed address): the registration keeps its
		// state and what it still has to rejoin.
		reg.State, reg.Registered, reg.Rejoin, reg.Retired, reg.JoinedBelow = old.State, old.Registered, old.Rejoin, old.Retired, old.JoinedBelow
		m.st.Brokers[key] = &reg
		return metaResult{}
	}
	if slices.Contains(retiredOf(old), nb.Incarnation) {
		return metaResult{Err: kerr.BrokerNotAvailable.Code, Msg: "incarnation " + nb.Incarnation + " of broker " + key + " was retired"}
	}
	reg.State, reg.Rejoin, reg.JoinedBelow = brokerActive, nil, 0
	if old != nil {
		reg.Retired = append(slices.Clone(old.Retired), old.Incarnation)
		if len(reg.Retired) > maxRetired {
			reg.Retired = reg.Retired[len(reg.Retired)-maxRetired:]
		}
	}
	if c.Join {
		// Every group the node's old disk may have been a member of: the
		// metadata group, and each partition listing it. The leaders
		// decide, from each group's configuration, what rejoining takes.
		reg.Rejoin, reg.JoinedBelow = []uint64{metaGroup}, m.st.NextGroup
		for _, t := range m.st.Topics {
			for _, p := range t.Partitions {
				if slices.Contains(p.Replicas, nb.ID) {
					reg.Rejoin = append(reg.Rejoin, p.Group)
				}
			}
		}
		slices.Sort(reg.Rejoin)
	}
	m.st.Brokers[key] = &reg
	return metaResult{}
}

func retiredOf(bm *brokerMeta) []string {
	if bm == nil {
		return nil
	}
	return append(slices.Clone(bm.Retired), bm.Incarnation)
}

// broker returns a copy of one registration.
func (m *metaSM) broker(id int32) (brokerMeta, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	bm := m.st.Brokers[brokerKey(id)]
	if bm == nil {
		return brokerMeta{}, false
	}
	return cloneBroker(bm), true
}

// brokers returns copies of every registration, by id.
func (m *metaSM) brokers() []brokerMeta {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]brokerMeta, 0, len(m.st.Brokers))
	for _, bm := range m.st.Brokers {
		out = append(out, cloneBroker(bm))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func cloneBroker(bm *brokerMeta) brokerMeta {
	c := *bm
	c.Listeners = slices.Clone(bm.Listeners)
	c.Retired = slices.Clone(bm.Retired)
	c.Rejoin = slices.Clone(bm.Rejoin)
	return c
}

// clusterNode is a broker as the rest of the node sees it: its spec and
// registry state ("" when only cluster.toml knows it).
type clusterNode struct {
	NodeSpec
	State string
	Reg   *brokerMeta
}

// clusterNodes is the cluster's brokers: cluster.toml's nodes and the
// registered ones. For a node this node's cluster.toml lists, the file's
// addresses win (its operator may route them: NAT, proxies); the others
// are reached at what they registered. Removed brokers are left out.
// Sorted by id.
func (b *Broker) clusterNodes() []clusterNode {
	byID := map[int32]clusterNode{}
	for _, n := range b.cfg.Cluster.Nodes {
		byID[n.ID] = clusterNode{NodeSpec: n}
	}
	for _, bm := range b.metaSM.brokers() {
		reg := bm
		cn := clusterNode{NodeSpec: bm.spec(), State: bm.State, Reg: &reg}
		if own, ok := byID[bm.ID]; ok {
			cn.NodeSpec = own.NodeSpec
		}
		byID[bm.ID] = cn
	}
	out := make([]clusterNode, 0, len(byID))
	for _, cn := range byID {
		if cn.State != brokerRemoved {
			out = append(out, cn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// peerIDs lists the other brokers' ids (clusterNodes without self).
func (b *Broker) peerIDs() []int32 {
	var out []int32
	for _, n := range b.clusterNodes() {
		if n.ID != b.cfg.NodeID {
			out = append(out, n.ID)
		}
	}
	return out
}

// knownBroker reports whether id is a broker of the cluster (not removed).
func (b *Broker) knownBroker(id int32) bool {
	for _, n := range b.clusterNodes() {
		if n.ID == id {
			return true
		}
	}
	return false
}

// UnregisterBroker implements kafka.BrokerUnregisterer: broker id is
// marked removed, unless it still holds replicas (move those first: a
// reassignment, or the decommission command). A metadata voter's vote is
// moved to another broker first (meta_voters.go). A broker removing
// itself has the metadata leader do it (unregister_forward.go).
func (b *Broker) UnregisterBroker(ctx context.Context, id int32) (int16, string) {
	bm, ok := b.metaSM.broker(id)
	if !ok || bm.State == brokerRemoved {
		return kerr.BrokerIDNotRegistered.Code, "broker " + brokerKey(id) + " is not registered"
	}
	for _, t := range b.metaSM.topics() {
		for i, p := range t.Partitions {
			if slices.Contains(p.Replicas, id) {
				return kerr.InvalidRequest.Code, "broker " + brokerKey(id) + " still holds a replica of " + t.Name + "-" + strconv.Itoa(i) + ": move its replicas off first"
			}
		}
	}
	if st := b.meta.Status(); slices.Contains(st.Voters, uint64(id)) || slices.Contains(st.Outgoing, uint64(id)) {
		if code, msg := b.moveMetaVote(ctx, id); code != 0 {
			return code, msg
		}
	}
	if id == b.cfg.NodeID {
		if code, msg, ok := b.forwardUnregister(ctx, id); ok {
			return code, msg
		}
	}
	res, err := b.metaPropose(ctx, metaCmd{Op: "broker_state", Member: &memberCmd{ID: id, State: brokerRemoved}})
	if err != nil {
		return kerr.RequestTimedOut.Code, err.Error()
	}
	if res.Err == 0 {
		b.logger.Info("broker removed from the cluster", "node", id)
	}
	return res.Err, res.Msg
}

var _ kafka.BrokerUnregisterer = (*Broker)(nil)
