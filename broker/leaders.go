package broker

import (
	"time"

	"github.com/chronik-dev/chronik/kafka"
	"github.com/chronik-dev/chronik/raft"
)

// Who leads a group is known in two places: the local replica's Raft
// status, the truth for groups this node hosts, and the cluster view (see
// view.go), what leaders announced, for groups hosted elsewhere and for
// the ISR, which only a leader knows. leaderOf is the one place that merges
// them; Metadata, FindCoordinator, /partitions and every KIP-951 hint ask it.

// noHint is a KIP-951 CurrentLeader that names no leader.
var noHint = kafka.LeaderHint{Leader: -1, Epoch: -1}

// leadership is a group's leader as this node knows it.
type leadership struct {
	leader, epoch int32   // -1 when no leader is known
	isr           []int32 // nil when not known here
}

// leaderOf answers who leads group g: the local replica's leader when it
// names one, else the leader the view has. With notSelf, this node never
// counts (it is sending a client away, so a status naming itself is
// already stale). The ISR comes from the local status when this node
// leads, else from the view when the view speaks of the same leadership.
func (b *Broker) leaderOf(g uint64, notSelf bool) leadership {
	self := b.cfg.NodeID
	l := leadership{leader: -1, epoch: -1}
	if r := b.host.Replica(g); r != nil {
		if st := r.Status(); st.Leader != 0 && !(notSelf && int32(st.Leader) == self) {
			l.leader, l.epoch = int32(st.Leader), int32(st.Term)
			if st.IsLeader() {
				l.isr = toInt32s(st.ISR)
			}
		}
	}
	li, ok := b.view.get(g)
	if !ok {
		return l
	}
	if l.leader < 0 && li.Leader > 0 && !(notSelf && li.Leader == self) {
		l.leader, l.epoch = li.Leader, li.Epoch
	}
	if l.isr == nil && l.leader >= 0 && li.Leader == l.leader && li.Epoch == l.epoch {
		l.isr = li.ISR
	}
	return l
}

// leaderHint is what a client sent away from group g with NOT_LEADER is
// told (KIP-951 CurrentLeader): the leader leaderOf knows other than this
// node, if its epoch is minTerm or later; -1 when there is none.
func (b *Broker) leaderHint(g uint64, minTerm uint64) kafka.LeaderHint {
	if l := b.leaderOf(g, true); l.leader >= 0 && uint64(l.epoch) >= minTerm {
		return kafka.LeaderHint{Leader: l.leader, Epoch: l.epoch}
	}
	return noHint
}

// awayHint is leaderHint for a local partition, but when no other leader
// is known yet it waits up to d for this replica to learn of one, of term
// minTerm or later. Right after a leadership change the old leader does not
// know the new one for a moment (it stepped down on the new term's vote,
// before the new leader's first append); an answer without a hint would
// make clients wait for a metadata refresh (franz-go: up to 5 s), so a
// brief wait here is far cheaper. If this replica leads again meanwhile,
// the answer has no hint: the client retries here.
func (p *partition) awayHint(minTerm uint64, d time.Duration) kafka.LeaderHint {
	if h := p.b.leaderHint(p.group, minTerm); h.Leader >= 0 {
		return h
	}
	self := uint64(p.b.cfg.NodeID)
	st, ok := p.awaitStatus(d, func(st *raft.Status) bool {
		return st.Term >= minTerm && (st.IsLeader() || st.Leader != 0 && st.Leader != self)
	})
	if ok && st.IsLeader() {
		return noHint
	}
	return p.b.leaderHint(p.group, 0)
}
