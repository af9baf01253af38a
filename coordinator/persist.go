package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// snapshotVersion is the version of the group snapshot encoding written by
// SaveGroup. A snapshot of another version is ignored on load (the group then
// starts over, as it did before snapshots existed).
const snapshotVersion = 1

// saveTimeout bounds one SaveGroup call.
const saveTimeout = 15 * time.Second

// groupSnapshot is what a group's membership looks like in the store: JSON,
// byte fields base64-encoded. It is written when a group becomes Stable
// (its leader's SyncGroup) and when it becomes Empty.
type groupSnapshot struct {
	Version      int              `json:"version"`
	ProtocolType string           `json:"protocol_type"`
	Protocol     string           `json:"protocol,omitempty"` // "" when Empty
	Generation   int32            `json:"generation"`
	Leader       string           `json:"leader,omitempty"` // "" when Empty
	Members      []memberSnapshot `json:"members"`          // in arrival order
}

type memberSnapshot struct {
	ID                 string  `json:"id"`
	InstanceID         *string `json:"instance_id,omitempty"`
	ClientID           string  `json:"client_id"`
	ClientHost         string  `json:"client_host"`
	SessionTimeoutMs   int64   `json:"session_timeout_ms"`
	RebalanceTimeoutMs int64   `json:"rebalance_timeout_ms"`
	Metadata           []byte  `json:"metadata"` // for Protocol only, as Kafka keeps it
	Assignment         []byte  `json:"assignment"`
}

// snapshot encodes the group's membership; c.mu is held.
func (g *group) snapshot() []byte {
	s := groupSnapshot{
		Version:      snapshotVersion,
		ProtocolType: g.protocolType,
		Generation:   g.generation,
		Members:      []memberSnapshot{},
	}
	if len(g.members) > 0 {
		s.Protocol = g.protocol
		s.Leader = g.leader
	}
	for _, m := range g.sortedMembers() {
		s.Members = append(s.Members, memberSnapshot{
			ID:                 m.id,
			InstanceID:         m.instanceID,
			ClientID:           m.clientID,
			ClientHost:         m.clientHost,
			SessionTimeoutMs:   m.sessionTimeout.Milliseconds(),
			RebalanceTimeoutMs: m.rebalanceTimeout.Milliseconds(),
			Metadata:           m.metadata(g.protocol),
			Assignment:         m.assignment,
		})
	}
	data, err := json.Marshal(&s)
	if err != nil { // cannot happen: every field marshals
		panic(fmt.Sprintf("coordinator: encoding group snapshot: %v", err))
	}
	return data
}

func decodeSnapshot(data []byte) (*groupSnapshot, error) {
	var s groupSnapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	if s.Version != snapshotVersion {
		return nil, fmt.Errorf("unknown snapshot version %d", s.Version)
	}
	if s.Generation < 0 {
		return nil, fmt.Errorf("negative generation %d", s.Generation)
	}
	seen := make(map[string]bool, len(s.Members))
	for _, m := range s.Members {
		if m.ID == "" || seen[m.ID] {
			return nil, fmt.Errorf("empty or duplicate member id %q", m.ID)
		}
		seen[m.ID] = true
	}
	if len(s.Members) > 0 && s.Protocol == "" {
		return nil, errors.New("members without a protocol")
	}
	return &s, nil
}

// restoreLocked recreates group from a snapshot, with c.mu held and the
// group not in memory: Stable at the saved generation with the saved members
// and assignments (Empty if it has none). Every member's session starts
// afresh. A nil or unusable snapshot restores nothing.
func (c *Coordinator) restoreLocked(name string, data []byte) {
	if data == nil || c.restoreConsumerLocked(name, data) {
		return
	}
	s, err := decodeSnapshot(data)
	if err != nil {
		c.log.Warn("ignoring unreadable group snapshot", "group", name, "err", err)
		return
	}
	g := c.newGroup(name)
	g.generation = s.Generation
	g.protocolType = s.ProtocolType
	if len(s.Members) == 0 {
		g.state, g.prevState = stateEmpty, stateEmpty
		g.schedule(&g.idleTimer, emptyGroupRetention, g.forgetIfIdle)
		c.log.Info("group loaded", "group", name, "state", g.state.String(), "generation", g.generation)
		return
	}
	g.protocol = s.Protocol
	for _, ms := range s.Members {
		c.joinSeq++
		m := &member{
			id:               ms.ID,
			instanceID:       ms.InstanceID,
			clientID:         ms.ClientID,
			clientHost:       ms.ClientHost,
			seq:              c.joinSeq,
			sessionTimeout:   time.Duration(ms.SessionTimeoutMs) * time.Millisecond,
			rebalanceTimeout: time.Duration(ms.RebalanceTimeoutMs) * time.Millisecond,
			protocolType:     s.ProtocolType,
			protocols:        []kmsg.JoinGroupRequestProtocol{{Name: s.Protocol, Metadata: ms.Metadata}},
			assignment:       ms.Assignment,
		}
		if m.sessionTimeout <= 0 {
			m.sessionTimeout = c.cfg.MinSessionTimeout
		}
		if m.rebalanceTimeout < 0 {
			m.rebalanceTimeout = 0
		}
		g.members[m.id] = m
		if m.instanceID != nil {
			g.static[*m.instanceID] = m.id
		}
	}
	g.leader = s.Leader
	if g.members[g.leader] == nil {
		g.leader = g.sortedMembers()[0].id
	}
	g.state, g.prevState = stateStable, stateStable
	for _, m := range g.members {
		g.armSession(m, m.sessionTimeout)
	}
	c.log.Info("group loaded", "group", name, "state", g.state.String(), "generation", g.generation, "protocol", g.protocol, "leader", g.leader, "members", len(g.members))
}

// storeOp is one write of a group's durable state: a snapshot to save, or
// the deletion of everything the group stored.
type storeOp struct {
	data []byte // snapshot to save (nil for a delete)
	gen  int32  // generation of data, for logs

	del  bool
	ctx  context.Context // the DeleteGroups request's
	done chan error      // receives the delete's result; buffered

	// waiters learn the outcome of this save, or of the newer one that
	// superseded it while queued; each is buffered.
	waiters []chan error

	// stale is set on an in-flight save of a group this node released: it
	// no longer describes the group, whose newest state is in the store.
	stale bool
}

// writer serializes the durable writes of one group, so they reach the store
// in the order the group produced them. Queued saves collapse into the newest
// one; a delete supersedes every save queued before it.
type writer struct {
	queue    []*storeOp
	inflight *storeOp
}

// newest is the latest write queued or in flight; nil if it tells nothing.
func (w *writer) newest() *storeOp {
	op := w.inflight
	if n := len(w.queue); n > 0 {
		op = w.queue[n-1]
	}
	if op == nil || op.stale {
		return nil
	}
	return op
}

// persist queues a snapshot of the group for saving; c.mu is held. Called
// when the group becomes Stable or Empty, or a static member's id changes.
func (g *group) persist() {
	g.c.enqueue(g.name, &storeOp{data: g.snapshot(), gen: g.generation})
}

// enqueue queues op for group and starts the group's writer if idle; c.mu
// is held.
func (c *Coordinator) enqueue(name string, op *storeOp) {
	if l := c.loads[name]; l != nil {
		l.ops++
	}
	w := c.writers[name]
	if w == nil {
		w = &writer{}
		c.writers[name] = w
		c.writing.Add(1)
		go c.runWriter(name, w)
	}
	// The new write supersedes every queued save; queued deletes stay, as
	// their callers wait for them.
	keep := w.queue[:0]
	for _, q := range w.queue {
		if q.del {
			keep = append(keep, q)
		} else if !op.del {
			op.waiters = append(op.waiters, q.waiters...)
		} else {
			q.notify(errSaveDropped)
		}
	}
	w.queue = append(keep, op)
}

// runWriter performs the group's queued writes one at a time, without c.mu,
// and exits when none is left. Every write also ends with Close.
func (c *Coordinator) runWriter(name string, w *writer) {
	defer c.writing.Done()
	for {
		c.mu.Lock()
		w.inflight = nil
		if len(w.queue) == 0 {
			delete(c.writers, name)
			c.mu.Unlock()
			return
		}
		op := w.queue[0]
		w.queue = w.queue[1:]
		w.inflight = op
		c.mu.Unlock()

		if op.del {
			ctx, cancel := context.WithCancel(op.ctx)
			stop := context.AfterFunc(c.ctx, cancel)
			op.done <- c.cfg.Store.Delete(ctx, name, nil)
			stop()
			cancel()
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, saveTimeout)
		err := c.cfg.Store.SaveGroup(ctx, name, op.data)
		cancel()
		op.notify(err)
		if err != nil {
			c.log.Warn("group snapshot save failed", "group", name, "generation", op.gen, "err", err)
		}
	}
}

// dropSavesLocked forgets the group's queued saves and marks an in-flight
// one stale, when this node stops coordinating the group; c.mu is held.
// Queued deletes stay: their callers wait for them.
func (c *Coordinator) dropSavesLocked(name string) {
	w := c.writers[name]
	if w == nil {
		return
	}
	keep := w.queue[:0]
	for _, q := range w.queue {
		if q.del {
			keep = append(keep, q)
		} else {
			q.notify(errSaveDropped)
		}
	}
	w.queue = keep
	if w.inflight != nil && !w.inflight.del {
		w.inflight.stale = true
	}
	if l := c.loads[name]; l != nil {
		l.ops++
	}
}

// loadState tracks the reads of a group's snapshot in progress: ops counts
// the writes queued for the group meanwhile, which make such a read stale.
type loadState struct {
	refs int
	ops  uint64
}

// loadLocked brings a group that is not in memory in from its snapshot, if
// it has one; c.mu is held on entry and on return. The newest snapshot this
// node has queued or is writing wins over the store's. Otherwise the store
// is read with c.mu released, and ok is false, with nothing restored, when
// the caller must start over: a write queued for the group meanwhile made
// the read stale, or a Release started (the epoch moved past e), or the
// coordinator closed.
func (c *Coordinator) loadLocked(name string, e uint64) (ok bool) {
	if w := c.writers[name]; w != nil {
		if op := w.newest(); op != nil {
			if !op.del {
				c.restoreLocked(name, op.data)
			}
			return true
		}
	}
	l := c.loads[name]
	if l == nil {
		l = &loadState{}
		c.loads[name] = l
	}
	l.refs++
	start := l.ops
	c.mu.Unlock()
	data := c.cfg.Store.LoadGroup(name)
	c.mu.Lock()
	stale := l.ops != start
	if l.refs--; l.refs == 0 {
		delete(c.loads, name)
	}
	if stale || c.epoch.Load() != e || c.closed.Load() {
		return false
	}
	if c.groups[name] == nil && c.consumers[name] == nil {
		c.restoreLocked(name, data)
	}
	return true
}

// errSaveDropped is what waiters of a save hear when it is abandoned
// (Release, or a delete superseded it): answered as NOT_COORDINATOR.
var errSaveDropped = errors.New("group snapshot save abandoned")

func (op *storeOp) notify(err error) {
	for _, w := range op.waiters {
		select {
		case w <- err:
		default:
		}
	}
}
