package raft

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Everything a peer sends is hostile until checked. etcd raft trusts its
// input and panics on some malformed messages (an empty MsgProp, a
// heartbeat committing past the log, a snapshot message without a
// snapshot), so Receive checks each message before it is queued, and the
// worker clamps what only it can judge. A panic that still happens inside
// a replica fails that replica, not the node (see safely).

// ErrPanic wraps a panic recovered on a replica; the replica fails.
var ErrPanic = errors.New("raft: panic in replica")

// checkPeerMessage says why a message received from node from must not
// reach etcd raft, or "" when it may. forward is whether the group takes
// forwarded proposals.
func checkPeerMessage(from, self uint64, m *pb.Message, forward bool) string {
	if m.GetFrom() != from {
		return "sender does not match the connection"
	}
	if m.GetTo() != self {
		return "addressed to another node"
	}
	switch m.GetType() {
	case pb.MsgApp:
		if m.GetTerm() == 0 {
			return "no term"
		}
		return checkAppendEntries(m)
	case pb.MsgSnap:
		if m.GetTerm() == 0 {
			return "no term"
		}
		if m.Snapshot == nil || m.Snapshot.Metadata == nil {
			return "snapshot message without a snapshot"
		}
	case pb.MsgAppResp, pb.MsgHeartbeat, pb.MsgHeartbeatResp, pb.MsgVote, pb.MsgVoteResp,
		pb.MsgPreVote, pb.MsgPreVoteResp, pb.MsgTimeoutNow, pb.MsgTransferLeader:
		// etcd raft takes a message without a term for a local one.
		if m.GetTerm() == 0 {
			return "no term"
		}
	case pb.MsgProp:
		if !forward {
			return "forwarded proposal to a group that takes none"
		}
		if len(m.Entries) == 0 {
			return "empty proposal"
		}
		for _, e := range m.Entries {
			if e.GetType() != pb.EntryNormal {
				return "forwarded configuration change"
			}
			if _, _, _, ok := decodeData(e); !ok {
				return "proposal with foreign data"
			}
		}
	default:
		return fmt.Sprintf("unexpected message type %v", m.GetType())
	}
	return ""
}

// checkAppendEntries checks that an append's entries follow its index and
// are data this node can store.
func checkAppendEntries(m *pb.Message) string {
	prevTerm := m.GetLogTerm()
	for i, e := range m.Entries {
		if e.GetIndex() != m.GetIndex()+1+uint64(i) {
			return "entries out of sequence"
		}
		if t := e.GetTerm(); t < prevTerm || t > m.GetTerm() {
			return "entry term out of order"
		}
		prevTerm = e.GetTerm()
		if _, _, _, ok := decodeData(e); !ok {
			return "entry with foreign data"
		}
	}
	return ""
}

// clampCommit lowers a heartbeat's commit index to this replica's last
// index. A leader sends min(its commit, what it believes the follower
// holds); after a torn tail was cut here at startup that belief is stale,
// and etcd raft would panic. A lower commit is always safe: the appends
// that bring the missing entries carry the commit again.
func clampCommit(m *pb.Message, last uint64) bool {
	if m.GetType() != pb.MsgHeartbeat || m.GetCommit() <= last {
		return false
	}
	m.Commit = new(last)
	return true
}

// msgGuard counts and logs rejected messages for one host.
type msgGuard struct {
	rejected atomic.Uint64
	clamped  atomic.Uint64
	lastLog  atomic.Int64 // unix nanos of the last warning
}

// logNow reports whether a warning may be logged now: one a second, so a
// hostile peer cannot flood the log.
func (g *msgGuard) logNow() bool {
	now := time.Now().UnixNano()
	last := g.lastLog.Load()
	return now-last >= int64(time.Second) && g.lastLog.CompareAndSwap(last, now)
}

// RejectedMessages is how many Raft messages from peers were dropped
// before reaching Raft because they were malformed or misaddressed (the
// broker exports it as chronik_raft_rejected_messages_total).
func (h *Host) RejectedMessages() uint64 { return h.guard.rejected.Load() }

// ClampedCommits is how many heartbeats had their commit index lowered to
// this node's log end (after a torn log tail, chronik_raft_clamped_commits_total).
func (h *Host) ClampedCommits() uint64 { return h.guard.clamped.Load() }

func (h *Host) reject(from, group uint64, m *pb.Message, why string) {
	n := h.guard.rejected.Add(1)
	if h.guard.logNow() {
		h.logger.Warn("dropping raft message", "from", from, "group", group, "type", m.GetType().String(), "why", why, "rejected_total", n)
	}
}

// safely runs one phase of a replica's work and turns a panic into an
// error, so that a bug or a malformed message fails one group, not the
// node. etcd raft's state after a panic is unknown: the replica must not
// be driven again (fail stops it).
func (r *Replica) safely(phase string, fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w (%s): %v\n%s", ErrPanic, phase, v, debug.Stack())
		}
	}()
	return fn()
}
