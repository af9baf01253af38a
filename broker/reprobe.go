package broker

import (
	"context"
	"encoding/binary"
	"slices"
	"sync"
	"time"
)

// Reprobe. A replica that rejoins with an empty disk can be left without
// anything from its leader: the leader's Raft progress for the node still
// holds the old disk's match index, and etcd raft never lowers it, so the
// leader sends heartbeats and no entries (raft's lost-tail report moves
// leadership only when a fully caught-up voter exists at that instant).
// A new leader starts its progress tracking afresh and probes the node.
// So a gagged replica that has a leader and has applied nothing for
// reprobeAfter asks that leader, on noticeReprobe, to hand leadership to
// another in-sync voter. Raft-side fix requested (requests-raft.md 11).
const noticeReprobe uint16 = 8

// reprobeAfter is how long a fresh gagged replica waits for its first
// entry before it asks; reprobeEvery spaces repeated asks (and transfers
// of one group on the leader side).
const (
	reprobeAfter = 3 * time.Second
	reprobeEvery = 5 * time.Second
)

// reprobeState remembers, on the asking side, since when each fresh
// gagged replica has waited and when it last asked; on the leader side,
// when each group last moved for a reprobe.
type reprobeState struct {
	mu      sync.Mutex
	waiting map[uint64]time.Time
	asked   map[uint64]time.Time
	moved   map[uint64]time.Time
}

// checkStarved runs on the rejoin loop of every node: a local replica
// that is gagged, knows its leader and has applied nothing for
// reprobeAfter asks the leader to step aside. It reports whether one is
// waiting (the loop then looks again).
func (b *Broker) checkStarved() (waiting bool) {
	now := time.Now()
	b.reprobe.mu.Lock()
	defer b.reprobe.mu.Unlock()
	if b.reprobe.waiting == nil {
		b.reprobe.waiting, b.reprobe.asked = map[uint64]time.Time{}, map[uint64]time.Time{}
	}
	seen := map[uint64]bool{}
	for _, r := range b.host.Replicas() {
		st := r.Status()
		g := r.Group()
		if !st.Gagged || st.Applied > 0 || st.Leader == 0 || st.Leader == uint64(b.cfg.NodeID) {
			continue
		}
		seen[g] = true
		waiting = true
		since, ok := b.reprobe.waiting[g]
		if !ok {
			b.reprobe.waiting[g] = now
			continue
		}
		if now.Sub(since) < reprobeAfter || now.Sub(b.reprobe.asked[g]) < reprobeEvery {
			continue
		}
		b.reprobe.asked[g] = now
		b.logger.Warn("rejoining replica got nothing from its leader; asking it to hand leadership over so the next leader probes this node",
			"partition", r.Name(), "leader", st.Leader, "waited", fmtDur(now.Sub(since)))
		b.host.SendNotice(st.Leader, noticeReprobe, binary.BigEndian.AppendUint64(nil, g))
	}
	for g := range b.reprobe.waiting {
		if !seen[g] {
			delete(b.reprobe.waiting, g)
			delete(b.reprobe.asked, g)
		}
	}
	return waiting
}

// reprobeAsk is a peer's noticeReprobe for a group.
type reprobeAsk struct{ from, group uint64 }

// onReprobeNotice hands a peer's request to the rejoin loop. Runs on a
// transport goroutine: never blocks.
func (b *Broker) onReprobeNotice(from uint64, data []byte) {
	if len(data) != 8 {
		return
	}
	select {
	case b.reprobeCh <- reprobeAsk{from: from, group: binary.BigEndian.Uint64(data)}:
	default: // busy: the asker asks again
	}
}

// handleReprobe, on a group's leader, hands leadership to an in-sync
// voter other than the asker, at most once per reprobeEvery per group.
// Runs on the rejoin loop.
func (b *Broker) handleReprobe(ask reprobeAsk) {
	r := b.host.Replica(ask.group)
	if r == nil || b.host.Stopping() {
		return
	}
	st := r.Status()
	if !st.IsLeader() || !slices.Contains(st.Voters, ask.from) && !slices.Contains(st.Learners, ask.from) {
		return
	}
	var to uint64
	for _, id := range st.ISR {
		if id != uint64(b.cfg.NodeID) && id != ask.from && b.host.PeerAlive(id) && !b.host.PeerLeaving(id) {
			to = id
			break
		}
	}
	if to == 0 {
		return
	}
	b.reprobe.mu.Lock()
	if b.reprobe.moved == nil {
		b.reprobe.moved = map[uint64]time.Time{}
	}
	recent := time.Since(b.reprobe.moved[ask.group]) < reprobeEvery
	if !recent {
		b.reprobe.moved[ask.group] = time.Now()
	}
	b.reprobe.mu.Unlock()
	if recent {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	err := r.TransferLeadership(ctx, to)
	b.logger.Info("handed leadership over so a rejoining node is probed afresh", "partition", r.Name(), "node", ask.from, "to", to, "err", err)
}
