package raft

import (
	"errors"
	"fmt"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Refilling a follower that lost entries. etcd raft never lowers a
// follower's Match: a rejection at or below it is taken for a stale one
// (tracker.Progress.MaybeDecrTo), and probing never goes below Match+1. A
// follower that lost entries it acknowledged (its disk was wiped and it
// came back under a new incarnation, or a torn tail was cut after a crash
// without fsync) thus never gets them from this leader: only a fresh
// Progress would probe it anew, which takes a new leader or removing and
// adding the member, and neither works everywhere (a 2-voter group can
// do neither without the wiped voter's ack, which it cannot give).
//
// So the leader refills such a follower itself, beside etcd raft. A
// follower's answer showing that it holds less than its Match (a
// rejection whose hint is below Match) starts a refill; a lost-tail
// report or a new incarnation of the node starts a probe (an empty
// append at Match, which the follower answers with what it holds). The
// leader then sends the follower, one message at a time, appends of its
// own: the entries after what the follower holds, up to Match, or the
// log's base snapshot when those are compacted. The next one leaves when
// the last is answered, or after refillResend. These are the messages
// etcd raft itself would send (this leader's term, its entries and commit
// index), so the follower's etcd raft takes them as they are; the answers
// (an index below Match) change nothing in the leader's etcd raft. Once
// the follower holds Match, etcd raft's own appends succeed and the
// refill ends. Until then the leader counts the follower at what it
// holds, not at Match: in the status, the ISR, quiescence and
// Reconfigure's catch-up rule (effectiveMatch). Worker-owned, leader
// only; a new term starts afresh (etcd raft's progress is fresh too).

// refill is the leader's state of one follower being refilled.
type refill struct {
	// has is what the follower holds (its log matches the leader's up
	// to there); known is false while a probe waits for the first answer.
	has   uint64
	known bool
	// prev and end bound the message in flight (entries prev+1..end);
	// end is 0 when none is.
	prev, end uint64
	sentAt    time.Time
	since     time.Time
	confirmed bool // the follower was seen to hold less than its Match
	// reading is the read in flight (refillread.go), ahead the entries
	// it read, from some index on; waiting: the next message waits for
	// the read.
	reading   *refillRead
	ahead     []*pb.Entry
	aheadData []byte // ahead encoded as the next message, if it fits
	waiting   bool
	// held: the learner rate held the last message back; it is tried
	// again on the next tick, not after refillResend (the bucket fills
	// in a fraction of that, and a copy that waited out refillResend at
	// each hold ran at a fifth of the rate).
	held bool
}

// maxRefillBytes bounds the entries of one refill message (etcd raft's
// MaxSizePerMsg here).
const maxRefillBytes = 4 << 20

// refillResend is how long an unanswered refill message waits before it
// is sent again.
func (r *Replica) refillResend() time.Duration {
	return time.Duration(max(2*r.host.cfg.HeartbeatTicks, r.host.cfg.ElectionTicks/2)) * r.host.cfg.TickInterval
}

// rawMatch is etcd raft's Match for member id; ok is false for a
// non-member.
func (r *Replica) rawMatch(id uint64) (match uint64, ok bool) {
	r.rn.WithProgress(func(pid uint64, _ etcdraft.ProgressType, pr tracker.Progress) {
		if pid == id {
			match, ok = pr.Match, true
		}
	})
	return match, ok
}

// effectiveMatch is what the leader counts member id as holding, given
// etcd raft's Match for it: less while it is refilled.
func (r *Replica) effectiveMatch(id, match uint64) uint64 {
	rf := r.refills[id]
	switch {
	case rf == nil:
		return match
	case !rf.known:
		// An unanswered probe (a new incarnation, a lost tail): until the
		// member says what it holds, it holds nothing, or a node back on
		// an empty disk would count as caught up (and be promoted) on its
		// old disk's Match before its replica even exists.
		return 0
	case rf.has < match:
		return rf.has
	}
	return match
}

// noteAppResp looks at a follower's append answer before etcd raft steps
// it; it starts, advances or ends a refill. Worker only.
func (r *Replica) noteAppResp(m *pb.Message) error {
	from := m.GetFrom()
	rf := r.refills[from]
	if rf == nil && !m.GetReject() {
		return nil // the common case costs one map lookup
	}
	bs := r.rn.BasicStatus()
	if bs.RaftState != etcdraft.StateLeader || m.GetTerm() != bs.GetTerm() {
		return nil
	}
	match, ok := r.rawMatch(from)
	if !ok {
		delete(r.refills, from)
		return nil
	}
	has := m.GetIndex()
	if m.GetReject() {
		has = m.GetRejectHint()
	} else if rf != nil && rf.known && has < rf.has {
		// An ack of an older or smaller append (etcd raft's own probe):
		// the follower still holds what it acked before.
		has = rf.has
	}
	if rf == nil {
		if has >= match {
			return nil // not lost; checkBehind decides after the step
		}
		rf = &refill{since: time.Now()}
		r.refills[from] = rf
	} else if has >= r.refillTarget(match) {
		r.endRefill(from, rf, has)
		return nil
	}
	r.confirmRefill(from, rf, has, match)
	answered := rf.end == 0 || (!m.GetReject() && has >= rf.end) || (m.GetReject() && m.GetIndex() == rf.prev)
	if !answered && time.Since(rf.sentAt) < r.refillResend() {
		return nil
	}
	return r.sendRefill(from, rf, match, bs)
}

// confirmRefill records that follower id holds has, below its Match.
func (r *Replica) confirmRefill(id uint64, rf *refill, has, match uint64) {
	rf.has, rf.known = has, true
	if rf.confirmed || has >= match {
		return // a follower behind the cache (behind.go) lost nothing
	}
	rf.confirmed = true
	// It proves it is caught up afresh (ISR, Reconfigure).
	delete(r.caughtUp, id)
	r.mustPublish = true
	r.host.logger.Warn("follower lacks entries this leader counts as stored there; sending them again",
		"partition", r.cfg.Name, "node", id, "match", match, "holds", has)
}

func (r *Replica) endRefill(id uint64, rf *refill, has uint64) {
	delete(r.refills, id)
	if rf.confirmed {
		r.mustPublish = true
		r.host.logger.Info("follower holds every entry this leader counts there again",
			"partition", r.cfg.Name, "node", id, "index", has, "took", time.Since(rf.since).Round(time.Millisecond))
	}
}

// probeMember starts a probe of member id, which may have lost entries
// (it reported a lost tail, or stated a new incarnation). Worker only.
func (r *Replica) probeMember(id uint64) error {
	bs := r.rn.BasicStatus()
	if bs.RaftState != etcdraft.StateLeader || id == r.id || r.refills[id] != nil {
		return nil
	}
	match, ok := r.rawMatch(id)
	if !ok || match == 0 {
		return nil // etcd raft probes it from the start anyway
	}
	rf := &refill{since: time.Now()}
	r.refills[id] = rf
	return r.sendRefill(id, rf, match, bs)
}

// refillTick resends what a refill's follower did not answer and drops
// refills of members that left. Worker only, on the leader's ticks.
func (r *Replica) refillTick() error {
	if len(r.refills) == 0 {
		return nil
	}
	bs := r.rn.BasicStatus()
	if bs.RaftState != etcdraft.StateLeader {
		clear(r.refills)
		return nil
	}
	for id, rf := range r.refills {
		match, ok := r.rawMatch(id)
		if !ok {
			delete(r.refills, id)
			continue
		}
		if rf.known && rf.has >= r.refillTarget(match) {
			r.endRefill(id, rf, rf.has)
			continue
		}
		if !rf.held && time.Since(rf.sentAt) < r.refillResend() {
			continue
		}
		// An unanswered probe is never dropped (the node is down or has
		// no replica here yet): dropped, the member would count at its
		// old Match again. It costs one empty append per refillResend.
		if err := r.sendRefill(id, rf, match, bs); err != nil {
			return err
		}
	}
	return nil
}

// sendRefill sends follower id the next refill message: a probe at match
// while what it holds is unknown, else the entries after what it holds
// (up to match), or the base snapshot when they are compacted.
func (r *Replica) sendRefill(id uint64, rf *refill, match uint64, bs etcdraft.BasicStatus) error {
	m := &pb.Message{To: new(id), From: new(r.id), Term: new(bs.GetTerm()), Commit: new(bs.GetCommit())}
	if !rf.known {
		t, err := r.st.Term(match)
		switch {
		case err == nil:
			m.Type, m.Index, m.LogTerm = pb.MsgApp.Enum(), new(match), new(t)
			return r.sendRefillMsg(id, rf, m, match, match, match)
		case errors.Is(err, etcdraft.ErrCompacted) || errors.Is(err, etcdraft.ErrUnavailable):
			rf.known = true // send from the start: the base snapshot
		default:
			return fmt.Errorf("refill %d: term at %d: %w", id, match, err)
		}
	}
	rf.waiting = false
	prevTerm, err := r.st.Term(rf.has)
	hi := r.refillTarget(match) + 1
	switch {
	case err == nil && rf.has+1 >= hi:
		return nil // nothing to send: etcd raft's appends take over
	case err == nil:
		// Read off the worker unless cached (refillread.go).
		ents, data, ok := r.refillEntries(id, rf, hi)
		if !ok {
			rf.waiting = true
			return nil
		}
		m.Type, m.Index, m.LogTerm, m.Entries = pb.MsgApp.Enum(), new(rf.has), new(prevTerm), ents
		return r.sendRefillData(id, rf, m, data, rf.has, ents[len(ents)-1].GetIndex(), match)
	case !errors.Is(err, etcdraft.ErrCompacted):
		return fmt.Errorf("refill %d: term at %d: %w", id, rf.has, err)
	}
	snap, err := r.st.Snapshot()
	if err != nil {
		return fmt.Errorf("refill %d: snapshot: %w", id, err)
	}
	m.Type, m.Snapshot = pb.MsgSnap.Enum(), snap
	m.Commit = nil
	return r.sendRefillMsg(id, rf, m, 0, snap.GetMetadata().GetIndex(), match)
}

// sendRefillMsg sends m (entries prev+1..end) unless the learner rate
// holds it back; a message cut short by the rate ends earlier. The
// entries after it are read meanwhile (refillread.go).
func (r *Replica) sendRefillMsg(id uint64, rf *refill, m *pb.Message, prev, end, match uint64) error {
	return r.sendRefillData(id, rf, m, nil, prev, end, match)
}

// sendRefillData is sendRefillMsg with m already encoded as data (nil:
// not), which a message cut short by the rate no longer is.
func (r *Replica) sendRefillData(id uint64, rf *refill, m *pb.Message, data []byte, prev, end, match uint64) error {
	rf.sentAt = time.Now()
	ents := m.Entries
	rf.held = r.throttled(m)
	if rf.held {
		rf.ahead, rf.aheadData = ents, data // kept for the next try, on the next tick
		return nil
	}
	if n := len(m.Entries); n > 0 {
		if n < len(ents) {
			rf.ahead = ents[n:] // cut by the rate: the rest goes next
			data = nil
		}
		end = m.Entries[n-1].GetIndex()
	}
	rf.prev, rf.end = prev, end
	if data != nil {
		r.host.tr.Send(id, []WireMsg{{Group: r.cfg.Group, Data: data, Bulk: true}})
	} else {
		r.host.sendRaft(r, m, true)
	}
	r.host.sentRefills.Add(1)
	if len(m.Entries) > 0 && len(rf.ahead) == 0 {
		r.readAhead(id, rf, end, match)
	}
	return nil
}

// RefillMessages is how many messages leaders on this node sent to
// followers that had lost entries (refill.go;
// chronik_raft_refill_messages_total).
func (h *Host) RefillMessages() uint64 { return h.sentRefills.Load() }
