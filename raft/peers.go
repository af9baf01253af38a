package raft

import (
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Node-level channels on the transport (Raft messages use channel 0).
const (
	chanPing    uint16 = 0xFFF0 // liveness ping, no payload
	chanQuiesce uint16 = 0xFFF1 // group goes quiet (Group set)
	// chanGroupDown: the sender's replica of Group failed (failure.go).
	chanGroupDown uint16 = 0xFFF2
	// chanLostTail: the sender lost entries of Group that its leader
	// counts as stored there (failure.go).
	chanLostTail uint16 = 0xFFF3
	// chanGroupUp: the sender's replica of Group recovered; quiet peers
	// wake so it learns the leader at once.
	chanGroupUp uint16 = 0xFFF4
)

// liveness pings every peer a few times per election timeout and declares a
// peer down when nothing at all arrived from it for an election timeout.
// A dropped connection says so at once; this catches the silent failures
// (a network partition that blackholes traffic), on which quiet groups
// depend to wake up.
func (h *Host) liveness() {
	timeout := time.Duration(h.cfg.ElectionTicks) * h.cfg.TickInterval
	h.every(timeout/5, func() {
		now := time.Now()
		var silent []uint64
		h.peerMu.RLock()
		for id, alive := range h.alive {
			if !alive {
				continue
			}
			h.heardMu.Lock()
			last := h.lastHeard[id]
			h.heardMu.Unlock()
			if !last.IsZero() && now.Sub(last) > timeout {
				silent = append(silent, id)
			}
		}
		peers := make([]uint64, 0, len(h.alive))
		for id := range h.alive {
			peers = append(peers, id)
		}
		h.peerMu.RUnlock()
		for _, id := range silent {
			h.logger.Warn("peer silent; treating it as down", "node", id, "for", timeout)
			h.PeerDown(id, false)
		}
		for _, id := range peers {
			h.tr.Send(id, []WireMsg{{Channel: chanPing}})
		}
	})
}

// heard records traffic from a peer; a peer declared silent that speaks
// again is up.
func (h *Host) heard(id uint64) {
	h.heardMu.Lock()
	h.lastHeard[id] = time.Now()
	h.heardMu.Unlock()
	h.peerMu.RLock()
	alive, known := h.alive[id]
	h.peerMu.RUnlock()
	if known && !alive {
		h.PeerUp(id)
	}
}

func (h *Host) sendGroupNotice(to, group uint64, channel uint16, msg []byte) {
	h.tr.Send(to, []WireMsg{{Group: group, Channel: channel, Data: msg}})
}

// groupNotice handles the group-level channels; it reports false for any
// other channel.
func (h *Host) groupNotice(from uint64, wm WireMsg) bool {
	var op func(r *Replica)
	switch wm.Channel {
	case chanQuiesce:
		data := wm.Data
		op = func(r *Replica) { r.onQuiesce(from, data) }
	case chanGroupDown:
		op = func(r *Replica) { r.onGroupDown(from) }
	case chanLostTail:
		op = func(r *Replica) { r.onLostTail(from) }
	case chanGroupUp:
		op = func(r *Replica) { r.wake() }
	case chanGagged:
		data := wm.Data
		op = func(r *Replica) { r.onGagNotice(from, data) }
	default:
		return false
	}
	if r := h.Replica(wm.Group); r != nil {
		r.enqueue(func() { r.inOps = append(r.inOps, func() { op(r) }) })
	}
	return true
}

// wakeAll ends quiescence everywhere (a peer came back and needs its
// leaders' attention).
func (h *Host) wakeAll() {
	for _, r := range h.Replicas() {
		if r.quiesced.Load() {
			r.enqueue(func() { r.inOps = append(r.inOps, r.wake) })
		}
	}
}

// PeerAlive reports whether peer id is connected.
func (h *Host) PeerAlive(id uint64) bool {
	if id == h.id {
		return true
	}
	h.peerMu.RLock()
	defer h.peerMu.RUnlock()
	return h.alive[id]
}

// SetPeerLeaving records that peer id is shutting down gracefully: it is
// no longer a target for leadership until it reconnects.
func (h *Host) SetPeerLeaving(id uint64) {
	h.peerMu.Lock()
	h.leaving[id] = true
	h.peerMu.Unlock()
}

// PeerLeaving reports whether peer id announced a shutdown.
func (h *Host) PeerLeaving(id uint64) bool {
	h.peerMu.RLock()
	defer h.peerMu.RUnlock()
	return h.leaving[id]
}

// SendNotice sends a node-level message on channel (non-zero) to node to.
func (h *Host) SendNotice(to uint64, channel uint16, data []byte) {
	h.tr.Send(to, []WireMsg{{Channel: channel, Data: data}})
}

// Receive implements TransportHandler.
func (h *Host) Receive(from uint64, msgs []WireMsg) {
	h.heard(from)
	for _, wm := range msgs {
		if h.groupNotice(from, wm) {
			continue
		}
		if wm.Channel == chanPing {
			continue
		}
		if wm.Channel != 0 {
			if h.cfg.OnNotice != nil {
				h.cfg.OnNotice(from, wm.Channel, wm.Data)
			}
			continue
		}
		r := h.Replica(wm.Group)
		if r == nil {
			continue // not created here yet; Raft will resend
		}
		m, err := decodeMessage(wm.Data)
		if err != nil {
			h.reject(from, wm.Group, &pb.Message{}, "undecodable: "+err.Error())
			continue
		}
		if why := checkPeerMessage(from, h.id, m, r.cfg.ForwardProposals); why != "" {
			h.reject(from, wm.Group, m, why)
			continue
		}
		if r.nWatching.Load() > 0 {
			r.watchLeaderMsg(m)
		}
		r.inMu.Lock()
		if len(r.inMsgs) == 0 {
			r.inMsgsAt = time.Now()
		}
		r.inMsgs = append(r.inMsgs, m)
		r.inMu.Unlock()
		switch m.GetType() {
		case pb.MsgVote, pb.MsgVoteResp, pb.MsgPreVote, pb.MsgPreVoteResp, pb.MsgTimeoutNow:
			h.scheduleUrgent(r)
		default:
			h.schedule(r)
		}
	}
}

// PeerDown implements TransportHandler.
func (h *Host) PeerDown(id uint64, graceful bool) {
	h.peerMu.Lock()
	h.alive[id] = false
	h.peerMu.Unlock()
	if graceful {
		h.logger.Info("peer left", "node", id)
	} else {
		h.logger.Warn("peer connection lost", "node", id)
	}
	for _, r := range h.Replicas() {
		r.enqueue(func() { r.inOps = append(r.inOps, func() { r.peerDown(id) }) })
	}
	if h.cfg.OnPeer != nil {
		h.cfg.OnPeer(id, false)
	}
}

// PeerUp implements TransportHandler.
func (h *Host) PeerUp(id uint64) {
	h.peerMu.Lock()
	h.alive[id] = true
	delete(h.leaving, id)
	h.peerMu.Unlock()
	h.heardMu.Lock()
	h.lastHeard[id] = time.Now()
	h.heardMu.Unlock()
	h.wakeAll()
	if h.cfg.OnPeer != nil {
		h.cfg.OnPeer(id, true)
	}
}

// sendRaft sends m; bulk marks catch-up data (WireMsg.Bulk).
func (h *Host) sendRaft(r *Replica, m *pb.Message, bulk bool) {
	data, err := encodeMessage(m)
	if err != nil {
		h.logger.Error("marshal raft message", "err", err)
		return
	}
	h.tr.Send(m.GetTo(), []WireMsg{{Group: r.cfg.Group, Data: data, Bulk: bulk}})
}
