package raft

import (
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Followers far behind the entry cache. etcd raft builds its appends on
// the worker, from Storage.Entries: for a follower that needs old entries
// (a new leader's view of a node back on an empty disk, a learner added by
// a move) that is a multi-MiB disk read and copy per message, up to
// MaxInflightBytes per cycle, while every other group of the batch waits
// (drain and send phases of 0.4-2.2 s were seen at 30 x 30 MiB, and the
// groups' producers waited with them). So a leader's replication read
// that the cache does not serve and that starts more than nearEntries
// before the cache returns no entries at all (etcd raft then sends
// nothing, or an empty probe), and the follower is refilled instead
// (refill.go): its entries are read by the refill readers, off the
// workers, up to where the cache starts; the follower's answers raise
// etcd raft's Match, and etcd raft's own appends take over from the cache.
//
// A replication read is told from the other reads by its size limit
// (MaxSizePerMsg) outside Ready: the apply path reads inside Ready
// (storage.inReady), and the scan for configuration changes uses
// MaxCommittedSizePerReady.

// nearEntries is how far before the cache's first entry (or, with an
// empty cache, before the last index) the worker still reads entries
// itself. None: at 64, a throttled learner whose etcd raft Next sat just
// before the cache had up to 4 MiB read on the worker at every resend
// (over a thousand reads in one leader's 25 s catch-up at 30 x 30 MiB).
const nearEntries = 0

// sendMaxSize is etcd raft's MaxSizePerMsg here.
const sendMaxSize = 4 << 20

// farRead reports whether a read of entries from lo on with limit
// maxSize, not served by the cache, is a replication read to defer to
// a refill.
func (s *storage) farRead(lo, maxSize uint64) bool {
	if s.inReady || maxSize != sendMaxSize || lo < s.log.FirstIndex() {
		return false // compacted: the log says so, and etcd raft sends the snapshot
	}
	return s.refilling || s.farFrom(lo)
}

// uselessAppend reports whether m is an append of etcd raft's that its
// follower, being refilled, cannot take: it starts after what the
// follower is known to hold, so it would be rejected. Encoding and
// sending it (megabytes, on the worker, at every answer of the follower)
// cost a profiled third of a leader's CPU during a wiped node's refill;
// dropped, etcd raft sends again once the refill has ended. Worker only.
func (r *Replica) uselessAppend(m *pb.Message) bool {
	if m.GetType() != pb.MsgApp || len(m.GetEntries()) == 0 {
		return false
	}
	rf := r.refills[m.GetTo()]
	return rf != nil && rf.known && m.GetIndex() > rf.has
}

// farFrom reports whether entries from lo on start far before the cache.
func (s *storage) farFrom(lo uint64) bool {
	if len(s.cache) > 0 {
		return lo+nearEntries < s.cache[0].GetIndex()
	}
	return lo+nearEntries <= s.log.LastIndex()
}

// sendFloor is the last index etcd raft's appends cannot take from the
// cache: a refill goes at least that far.
func (s *storage) sendFloor(last uint64) uint64 {
	if len(s.cache) > 0 {
		return s.cache[0].GetIndex() - 1
	}
	return last
}

// refillTarget is where a refill of a follower whose etcd raft Match is
// match ends: at Match (what it lost) or, beyond it, where the cache
// starts, whichever is later.
func (r *Replica) refillTarget(match uint64) uint64 {
	return min(max(match, r.st.sendFloor(r.lastIndex)), r.lastIndex)
}

// checkBehind starts a refill of follower id when etcd raft's next
// append to it would need entries far before the cache (farRead returned
// none). It starts at etcd raft's Next-1, where etcd raft would go on.
// Worker only, leader only, after a step of the follower's answer.
func (r *Replica) checkBehind(id uint64) error {
	if r.raftState != etcdraft.StateLeader || id == r.id || r.refills[id] != nil {
		return nil
	}
	var next, match uint64
	var found bool
	r.rn.WithProgress(func(pid uint64, _ etcdraft.ProgressType, pr tracker.Progress) {
		if pid == id && pr.State != tracker.StateSnapshot {
			next, match, found = pr.Next, pr.Match, true
		}
	})
	if !found || next == 0 || next > r.lastIndex || next < r.st.log.FirstIndex() || !r.st.farFrom(next) {
		return nil
	}
	bs := r.rn.BasicStatus()
	if bs.RaftState != etcdraft.StateLeader {
		return nil
	}
	rf := &refill{since: time.Now(), known: true, has: next - 1}
	r.refills[id] = rf
	r.host.behindRefills.Add(1)
	return r.sendRefill(id, rf, match, bs)
}

// BehindRefills is how many refills leaders on this node started for
// followers far behind the entry cache (behind.go).
func (h *Host) BehindRefills() uint64 { return h.behindRefills.Load() }
