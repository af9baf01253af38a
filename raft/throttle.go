package raft

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Throttling catch-up traffic. Config.LearnerRate bounds the bytes of
// entries and snapshots sent to learners, all groups of the host
// together, with one token bucket holding at most learnerBurst seconds of
// the rate. An append to a learner carries only the entries the tokens
// cover (a prefix of an append is a valid append): at least one while the
// bucket is not in debt, none while it is. An append cut short, or held
// back whole, is followed by telling etcd raft the learner is
// unreachable, which puts its progress into probing: the learner's ack of
// the prefix (or, for one held back, the next heartbeat answer) resumes
// it from where it is, so the worker never waits and no append the
// learner would reject for a gap is sent. Voters' messages never pass
// through here, and neither do appends without entries.

// learnerBucket is the host's token bucket; mu is a leaf.
type learnerBucket struct {
	mu     sync.Mutex
	rate   int64   // bytes per second; 0: unlimited
	tokens float64 // may go below zero: debt
	last   time.Time

	held atomic.Uint64 // messages not sent for want of tokens
	sent atomic.Uint64 // bytes sent to learners
}

// learnerBurst is how many seconds of the rate the bucket holds at most.
const learnerBurst = 0.5

func (b *learnerBucket) setRate(rate int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if rate < 0 {
		rate = 0
	}
	b.rate = rate
	b.tokens = min(b.tokens, float64(rate)*learnerBurst)
	b.last = time.Now()
}

// take grants some of sizes (the entries of one message, in order): how
// many may go now, at least one unless the bucket is in debt.
func (b *learnerBucket) take(sizes []int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate == 0 {
		for _, n := range sizes {
			b.sent.Add(uint64(n))
		}
		return len(sizes)
	}
	now := time.Now()
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*float64(b.rate), float64(b.rate)*learnerBurst)
	b.last = now
	if b.tokens < 0 {
		b.held.Add(1)
		return 0
	}
	k := 0
	for k < len(sizes) && (k == 0 || float64(sizes[k]) <= b.tokens) {
		b.tokens -= float64(sizes[k])
		b.sent.Add(uint64(sizes[k]))
		k++
	}
	return k
}

// SetLearnerRate changes Config.LearnerRate live (bytes per second sent
// to learners, all groups together; 0: unlimited).
func (h *Host) SetLearnerRate(bytesPerSec int64) { h.learners.setRate(bytesPerSec) }

// LearnerBytes is how many bytes of entries and snapshots went to
// learners (chronik_raft_learner_bytes_total).
func (h *Host) LearnerBytes() uint64 { return h.learners.sent.Load() }

// ThrottledLearnerMessages is how many messages to learners were held
// back by Config.LearnerRate (Raft sends them again).
func (h *Host) ThrottledLearnerMessages() uint64 { return h.learners.held.Load() }

// throttled applies the learner rate to m, about to leave the leader r:
// it reports whether m is held back, and may cut m's entries short.
// Either way Raft is told the learner missed the rest.
func (r *Replica) throttled(m *pb.Message) bool {
	t := m.GetType()
	if t != pb.MsgApp && t != pb.MsgSnap {
		return false
	}
	if !slices.Contains(r.st.cs.GetLearners(), m.GetTo()) {
		return false
	}
	var sizes []int
	if t == pb.MsgSnap {
		sizes = []int{len(m.GetSnapshot().GetData())}
	} else {
		if len(m.GetEntries()) == 0 {
			return false
		}
		sizes = make([]int, len(m.GetEntries()))
		for i, e := range m.GetEntries() {
			sizes[i] = len(e.GetData())
		}
	}
	k := r.host.learners.take(sizes)
	if k == len(sizes) {
		return false
	}
	r.rn.ReportUnreachable(m.GetTo())
	if k == 0 {
		return true
	}
	m.Entries = m.Entries[:k]
	return false
}

// catchUp reports whether m, leaving the leader r, is catch-up data: an
// append with entries or a snapshot to a learner or to a follower being
// refilled. It goes in the transport's bulk lane (WireMsg.Bulk), behind
// the messages the group's quorum and the clients wait for. Worker only.
func (r *Replica) catchUp(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgSnap:
	case pb.MsgApp:
		if len(m.GetEntries()) == 0 {
			return false
		}
	default:
		return false
	}
	return r.refills[m.GetTo()] != nil || slices.Contains(r.st.cs.GetLearners(), m.GetTo())
}
