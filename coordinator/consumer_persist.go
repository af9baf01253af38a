package coordinator

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A consumer group's state is saved through the same OffsetStore snapshot
// as a classic group's (SaveGroup), in its own encoding, after every
// heartbeat that changes it and before that heartbeat is answered. A new
// coordinator restores it as it was: epochs, target assignment, and each
// member's partitions and pending revocations, with fresh session timers.
// Members then go on heartbeating at their epochs, and nobody loses a
// partition over the move.

// consumerSnapshotVersion marks a consumer group's snapshot; the classic
// decoder ignores it (its version is 1).
const consumerSnapshotVersion = 848

type consumerSnapshot struct {
	Version     int               `json:"version"`
	Epoch       int32             `json:"epoch"`
	AssignEpoch int32             `json:"assignment_epoch"`
	TopicSig    []byte            `json:"topic_sig,omitempty"`
	Names       map[string]string `json:"names,omitempty"` // topic id (hex) -> name
	Members     []cmemberSnapshot `json:"members"`         // sorted by id
}

type cmemberSnapshot struct {
	ID          string   `json:"id"`
	InstanceID  *string  `json:"instance_id,omitempty"`
	Rack        *string  `json:"rack,omitempty"`
	ClientID    string   `json:"client_id"`
	ClientHost  string   `json:"client_host"`
	Subscribed  []string `json:"subscribed"`
	Regex       *string  `json:"regex,omitempty"`
	Assignor    string   `json:"assignor,omitempty"`
	RebalanceMs int64    `json:"rebalance_timeout_ms"`
	Epoch       int32    `json:"epoch"`
	PrevEpoch   int32    `json:"previous_epoch"`
	State       int8     `json:"state"`
	Assigned    []tpJSON `json:"assigned"`
	Revoking    []tpJSON `json:"revoking,omitempty"`
	Target      []tpJSON `json:"target"`
	Left        bool     `json:"static_left,omitempty"`
	// Classic is set for a member that speaks the classic protocol.
	Classic *classicSnapshot `json:"classic,omitempty"`
}

type classicSnapshot struct {
	SessionMs int64                 `json:"session_timeout_ms"`
	Protocols []classicProtocolJSON `json:"protocols"`
}

type classicProtocolJSON struct {
	Name     string `json:"name"`
	Metadata []byte `json:"metadata"`
}

type tpJSON struct {
	Topic      string  `json:"topic"` // id, hex
	Partitions []int32 `json:"partitions"`
}

func toJSON(s tpSet) []tpJSON {
	out := []tpJSON{}
	for _, p := range s.sorted() {
		id := hex.EncodeToString(p.topic[:])
		if n := len(out); n > 0 && out[n-1].Topic == id {
			out[n-1].Partitions = append(out[n-1].Partitions, p.part)
			continue
		}
		out = append(out, tpJSON{Topic: id, Partitions: []int32{p.part}})
	}
	return out
}

func fromJSON(ts []tpJSON) (tpSet, error) {
	out := tpSet{}
	for _, t := range ts {
		var id [16]byte
		if b, err := hex.DecodeString(t.Topic); err != nil || len(b) != 16 {
			return nil, fmt.Errorf("bad topic id %q", t.Topic)
		} else {
			copy(id[:], b)
		}
		for _, p := range t.Partitions {
			out[tp{id, p}] = struct{}{}
		}
	}
	return out, nil
}

// snapshot encodes the group; c.mu is held.
func (g *cgroup) snapshot() []byte {
	s := consumerSnapshot{Version: consumerSnapshotVersion, Epoch: g.epoch, AssignEpoch: g.assignEpoch,
		TopicSig: []byte(g.topicSig), Names: map[string]string{}, Members: []cmemberSnapshot{}}
	for id, n := range g.names {
		s.Names[hex.EncodeToString(id[:])] = n
	}
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s.Members = append(s.Members, g.memberSnapshot(g.members[id]))
	}
	data, err := json.Marshal(&s)
	if err != nil { // cannot happen: every field marshals
		panic(fmt.Sprintf("coordinator: encoding consumer group snapshot: %v", err))
	}
	return data
}

func (g *cgroup) memberSnapshot(m *cmember) cmemberSnapshot {
	var cs *classicSnapshot
	if m.classic != nil {
		cs = &classicSnapshot{SessionMs: m.classic.session.Milliseconds(), Protocols: []classicProtocolJSON{}}
		for _, p := range m.classic.protocols {
			cs.Protocols = append(cs.Protocols, classicProtocolJSON{Name: p.Name, Metadata: p.Metadata})
		}
	}
	return cmemberSnapshot{Classic: cs, ID: m.id, InstanceID: m.instanceID, Rack: m.rack,
		ClientID: m.clientID, ClientHost: m.clientHost, Subscribed: m.subscribed, Regex: m.regex,
		Assignor: m.assignor, RebalanceMs: m.rebalance.Milliseconds(), Epoch: m.epoch, PrevEpoch: m.prevEpoch,
		State: int8(m.state), Left: m.left, Assigned: toJSON(m.assigned), Revoking: toJSON(m.revoking), Target: toJSON(g.target[m.id])}
}

// persist queues the group's snapshot; the returned op's wait tells when
// it (or a newer snapshot) is durable. c.mu is held.
func (g *cgroup) persist() *storeOp {
	op := &storeOp{data: g.snapshot(), gen: g.epoch, waiters: []chan error{make(chan error, 1)}}
	g.c.enqueue(g.name, op)
	return op
}

// wait waits for the save of op (its first waiter) or ctx.
func (op *storeOp) wait(ctx context.Context) error {
	select {
	case err := <-op.waiters[0]:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// restoreConsumerLocked restores a consumer group from data if data is a
// consumer group snapshot, and reports whether it was one (restored or,
// if unreadable, ignored). c.mu is held.
func (c *Coordinator) restoreConsumerLocked(name string, data []byte) bool {
	var probe struct {
		Version int `json:"version"`
	}
	if json.Unmarshal(data, &probe) != nil || probe.Version != consumerSnapshotVersion {
		return false
	}
	var s consumerSnapshot
	if err := json.Unmarshal(data, &s); err != nil {
		c.log.Warn("ignoring unreadable consumer group snapshot", "group", name, "err", err)
		return true
	}
	g := &cgroup{c: c, name: name, epoch: s.Epoch, assignEpoch: s.AssignEpoch, topicSig: string(s.TopicSig),
		members: map[string]*cmember{}, target: map[string]tpSet{}, owners: map[tp]string{}, names: map[[16]byte]string{}}
	for h, n := range s.Names {
		var id [16]byte
		if b, err := hex.DecodeString(h); err == nil && len(b) == 16 {
			copy(id[:], b)
			g.names[id] = n
		}
	}
	for _, ms := range s.Members {
		m := &cmember{id: ms.ID, instanceID: ms.InstanceID, rack: ms.Rack, clientID: ms.ClientID, clientHost: ms.ClientHost,
			subscribed: ms.Subscribed, assignor: ms.Assignor, rebalance: time.Duration(ms.RebalanceMs) * time.Millisecond,
			epoch: ms.Epoch, prevEpoch: ms.PrevEpoch, state: memberState(ms.State), left: ms.Left}
		if ms.Regex != nil {
			m.setRegex(*ms.Regex)
		}
		if cs := ms.Classic; cs != nil {
			m.classic = &classicMember{session: time.Duration(cs.SessionMs) * time.Millisecond}
			for _, p := range cs.Protocols {
				m.classic.protocols = append(m.classic.protocols, kmsg.JoinGroupRequestProtocol{Name: p.Name, Metadata: p.Metadata})
			}
		}
		var err1, err2, err3 error
		m.assigned, err1 = fromJSON(ms.Assigned)
		m.revoking, err2 = fromJSON(ms.Revoking)
		tgt, err3 := fromJSON(ms.Target)
		if err1 != nil || err2 != nil || err3 != nil || ms.ID == "" || g.members[ms.ID] != nil {
			c.log.Warn("ignoring unreadable consumer group snapshot", "group", name, "member", ms.ID)
			return true
		}
		g.members[m.id], g.target[m.id] = m, tgt
		for p := range m.assigned {
			g.owners[p] = m.id
		}
		for p := range m.revoking {
			g.owners[p] = m.id
		}
	}
	if c.consumers == nil {
		c.consumers = map[string]*cgroup{}
	}
	c.consumers[name] = g
	for _, m := range g.members {
		g.armSession(m)
		if m.state == memberUnrevoked {
			g.armRevoke(m)
		}
	}
	c.log.Info("consumer group loaded", "group", name, "epoch", g.epoch, "assignment_epoch", g.assignEpoch, "members", len(g.members))
	return true
}
