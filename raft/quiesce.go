package raft

import (
	"encoding/binary"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Quiescence. A group with nothing to do still costs a heartbeat per
// follower every HeartbeatTicks, and a node with a thousand partitions
// would spend its CPU on them. So a leader whose followers have all of its
// (applied) log for quiesceTicks ticks tells them to go quiet, and stops
// ticking; they stop ticking too. Any proposal, operation or Raft message
// other than a response wakes a replica, and a woken leader's next message
// wakes its followers. A quiet follower cannot notice that its leader died,
// so the host wakes every group when it loses a peer (a dropped connection,
// or no traffic at all from the peer for an election timeout).
const quiesceTicks = 3

// isResponse reports whether a message type only answers earlier traffic.
func isResponse(t pb.MessageType) bool {
	return t == pb.MsgAppResp || t == pb.MsgHeartbeatResp
}

// wake ends quiescence.
func (r *Replica) wake() {
	r.quietTicks = 0
	r.wokeAt = time.Now()
	if r.quiesced.Swap(false) {
		r.mustPublish = true
	}
}

// maybeQuiesce runs on a leader's tick and quiets the group once it has been
// idle and fully replicated for quiesceTicks ticks.
func (r *Replica) maybeQuiesce() {
	if r.quiesced.Load() || r.raftState != etcdraft.StateLeader || r.host.stopping.Load() ||
		len(r.pending) > 0 || len(r.held) > 0 || len(r.waiting) > 0 || len(r.transfers) > 0 {
		r.quietTicks = 0
		return
	}
	bs := r.rn.BasicStatus()
	if bs.LeadTransferee != 0 || bs.GetCommit() != r.lastIndex || r.applied != r.lastIndex {
		r.quietTicks = 0
		return
	}
	// Every follower must hold the whole log and must have answered since
	// the group last woke: the leader's progress for a follower that just
	// restarted still shows its old, complete log.
	// A follower being refilled (refill.go) needs the traffic, and a
	// gagged one reports on its ticks (gagnotice.go).
	caughtUp := len(r.refills) == 0 && len(r.gaggedPeers) == 0
	r.withProgress(func(id, match uint64) {
		if id != r.id && (match != r.lastIndex || !r.host.PeerAlive(id) || r.host.PeerLeaving(id) ||
			!r.heardFrom[id].After(r.wokeAt)) {
			caughtUp = false
		}
	})
	if !caughtUp {
		r.quietTicks = 0
		return
	}
	if r.quietTicks++; r.quietTicks < quiesceTicks {
		return
	}
	r.publish() // the status is frozen while quiet: make it current first
	msg := make([]byte, 24)
	binary.BigEndian.PutUint64(msg, bs.GetTerm())
	binary.BigEndian.PutUint64(msg[8:], r.lastIndex)
	binary.BigEndian.PutUint64(msg[16:], bs.GetCommit())
	for _, v := range confMembers(r.st.cs) {
		if v != r.id {
			r.host.sendGroupNotice(v, r.cfg.Group, chanQuiesce, msg)
		}
	}
	r.quiesced.Store(true)
}

// onQuiesce handles a leader's request to go quiet: a follower of that
// leader in that term, holding and having applied the leader's whole log,
// stops ticking.
func (r *Replica) onQuiesce(from uint64, msg []byte) {
	if len(msg) < 24 || r.raftState == etcdraft.StateLeader || r.lead != from {
		return
	}
	term, last, commit := binary.BigEndian.Uint64(msg), binary.BigEndian.Uint64(msg[8:]), binary.BigEndian.Uint64(msg[16:])
	if term != r.term || r.lastIndex != last || r.applied < commit {
		return
	}
	r.publish()
	r.quiesced.Store(true)
}

// peerDown reacts to a lost peer: it leaves the ISR at once, and if it led
// this group, the lease is given up so a new leader is elected without
// waiting for an election timeout. The first live voter in preference order
// campaigns; the others vote for it.
func (r *Replica) peerDown(id uint64) {
	r.wake()
	delete(r.caughtUp, id)
	r.lapsed[id] = true
	if r.lead != id || r.raftState == etcdraft.StateLeader {
		return
	}
	for i := 0; i < r.host.cfg.ElectionTicks; i++ {
		r.rn.TickQuiesced()
	}
	if r.host.stopping.Load() || r.gagged.Load() {
		return
	}
	for _, v := range r.voters() {
		if v == id || (v != r.id && !r.host.PeerAlive(v)) {
			continue
		}
		if v == r.id {
			r.rn.Campaign()
		}
		return
	}
}
