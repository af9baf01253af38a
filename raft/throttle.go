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
// together, with one token bucket. A message to a learner that finds the
// bucket in debt is not sent and etcd raft is told the learner is
// unreachable, which puts its progress into probing: the leader sends it
// one append per heartbeat answer until it is acknowledged, and so waits
// for tokens without the worker waiting and without a pile of appends
// the learner would reject for a gap. A message that finds the bucket
// not in debt goes whole and may drive it into debt (etcd raft sizes
// messages; at most MaxSizePerMsg), so the rate holds on average. Voters'
// messages never pass through here, and neither do appends without
// entries (heartbeat-driven probes and commit updates).

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

// take reports whether n bytes may go to a learner now, and takes them.
func (b *learnerBucket) take(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate == 0 {
		b.sent.Add(uint64(n))
		return true
	}
	now := time.Now()
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*float64(b.rate), float64(b.rate)*learnerBurst)
	b.last = now
	if b.tokens < 0 {
		b.held.Add(1)
		return false
	}
	b.tokens -= float64(n)
	b.sent.Add(uint64(n))
	return true
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

// throttled reports whether m, about to leave the leader r, must be held
// back for the learner rate; it then tells Raft the learner missed it.
func (r *Replica) throttled(m *pb.Message) bool {
	t := m.GetType()
	if t != pb.MsgApp && t != pb.MsgSnap {
		return false
	}
	if !slices.Contains(r.st.cs.GetLearners(), m.GetTo()) {
		return false
	}
	n := len(m.GetSnapshot().GetData())
	for _, e := range m.GetEntries() {
		n += len(e.GetData())
	}
	if t == pb.MsgApp && n == 0 {
		return false
	}
	if r.host.learners.take(n) {
		return false
	}
	r.rn.ReportUnreachable(m.GetTo())
	return true
}
