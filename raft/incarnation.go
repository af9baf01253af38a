package raft

import (
	"sync"
	"sync/atomic"
	"time"
)

// Incarnations. Every data directory has an incarnation (Config.
// Incarnation), which a node states on each connection it dials, right
// after the hello (transport.go); a MemTransport carries it with every
// delivery. A peer of an older release states none (0, unknown). When a
// node's disk is replaced, the broker retires the old incarnation
// (SetRetiredIncarnation): a connection stating it is refused, and the
// messages of one that is open already are dropped and counted, so an old
// disk brought back cannot vote or acknowledge under the node's id.

// incarnationHandler is what a transport of this package tells the Host
// about the incarnation of each connection.
type incarnationHandler interface {
	// statedIncarnation is told the incarnation a new connection from
	// node id states (0: none) before the peer is reported up on it, and
	// says whether the connection may talk.
	statedIncarnation(id, inc uint64) bool
	// receiveFrom is Receive for messages of a connection that stated inc.
	receiveFrom(from, inc uint64, msgs []WireMsg)
}

// incarnations is the host's registry; mu is a leaf.
type incarnations struct {
	mu      sync.RWMutex
	stated  map[uint64]uint64          // node -> incarnation last stated
	retired map[uint64]map[uint64]bool // node -> retired incarnations

	dropped atomic.Uint64
	lastLog atomic.Int64
}

func (s *incarnations) init() {
	s.stated = map[uint64]uint64{}
	s.retired = map[uint64]map[uint64]bool{}
}

func (s *incarnations) isRetired(id, inc uint64) bool {
	if inc == 0 {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.retired[id][inc]
}

// PeerIncarnation is the data directory incarnation that peer id last
// stated (0: unknown, or a peer of an older release that states none).
func (h *Host) PeerIncarnation(id uint64) uint64 {
	if id == h.id {
		return h.cfg.Incarnation
	}
	h.incs.mu.RLock()
	defer h.incs.mu.RUnlock()
	return h.incs.stated[id]
}

// SetRetiredIncarnation marks incarnation inc of node id as retired (its
// disk was replaced): a connection of id that states inc is refused, and
// the messages of one already open are dropped and counted
// (RetiredMessages). 0 retires nothing.
func (h *Host) SetRetiredIncarnation(id, inc uint64) {
	if inc == 0 {
		return
	}
	h.incs.mu.Lock()
	if h.incs.retired[id] == nil {
		h.incs.retired[id] = map[uint64]bool{}
	}
	h.incs.retired[id][inc] = true
	if h.incs.stated[id] == inc {
		delete(h.incs.stated, id)
	}
	h.incs.mu.Unlock()
	h.logger.Info("raft peer incarnation retired: its messages are dropped from now on", "node", id, "incarnation", inc)
}

// RetiredMessages is how many messages from retired incarnations were
// dropped (chronik_raft_retired_messages_total).
func (h *Host) RetiredMessages() uint64 { return h.incs.dropped.Load() }

// statedIncarnation implements incarnationHandler; transport goroutine,
// no raft lock.
func (h *Host) statedIncarnation(id, inc uint64) bool {
	if h.incs.isRetired(id, inc) {
		h.dropRetired(id, inc, 0)
		return false
	}
	if inc == 0 {
		return true
	}
	h.incs.mu.Lock()
	prev := h.incs.stated[id]
	h.incs.stated[id] = inc
	h.incs.mu.Unlock()
	if prev != 0 && prev != inc {
		// A new data directory: what this node's leaders count as stored
		// there is gone. Probe it in every group (refill.go).
		h.logger.Info("raft peer states a new incarnation: probing it in the groups led here", "node", id, "incarnation", inc, "was", prev)
		for _, r := range h.Replicas() {
			r.enqueue(func() { r.inOps = append(r.inOps, func() { r.noteRefillErr(r.probeMember(id)) }) })
		}
	}
	if h.cfg.OnPeerIncarnation != nil {
		h.cfg.OnPeerIncarnation(id, inc)
	}
	return true
}

// receiveFrom implements incarnationHandler.
func (h *Host) receiveFrom(from, inc uint64, msgs []WireMsg) {
	if h.incs.isRetired(from, inc) {
		h.dropRetired(from, inc, len(msgs))
		return
	}
	h.Receive(from, msgs)
}

// dropRetired counts n dropped messages (0: a refused connection) and
// logs at most once a second.
func (h *Host) dropRetired(id, inc uint64, n int) {
	total := h.incs.dropped.Add(uint64(n))
	now := time.Now().UnixNano()
	last := h.incs.lastLog.Load()
	if now-last >= int64(time.Second) && h.incs.lastLog.CompareAndSwap(last, now) {
		h.logger.Warn("dropping messages from a retired incarnation of a peer (its disk was replaced)",
			"node", id, "incarnation", inc, "retired_messages_total", total)
	}
}
