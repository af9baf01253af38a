package broker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/chronik-dev/chronik/raft"
)

// Preferred leaders. A group's preferred leader is the first of its
// replicas in the metadata (the target's first once a move is done, the
// first node of cluster.toml for the metadata group), and leadership goes
// back to it once it has been in sync for RebalanceDelay
// (--auto-leader-rebalance). The broker decides this rather than Raft's
// own rebalancer, which knows only the order a replica was opened with:
// after a move that is the old one, and it would hand leadership to
// another replica of the target.

// rebalanceEvery is how often leaders look for a preferred replica that
// should lead instead.
const rebalanceEvery = 250 * time.Millisecond

// rebalancer hands leadership of the groups this node leads to their
// preferred replicas (owned by the broker; stopped with it).
type rebalancer struct {
	b    *Broker
	mu   sync.Mutex
	busy map[uint64]bool // groups with a transfer in flight
}

func (rb *rebalancer) loop(ctx context.Context) {
	defer rb.b.wg.Done()
	t := time.NewTicker(rebalanceEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if !rb.b.host.Stopping() {
				rb.round(ctx)
			}
		case <-ctx.Done():
			return
		}
	}
}

// preferences maps each group to its replicas in preference order.
func (b *Broker) preferences() map[uint64][]int32 {
	// The metadata group prefers its intended voters: a voter whose vote
	// is moving away must not be handed leadership back.
	intended := b.intendedMetaVoters()
	out := map[uint64][]int32{metaGroup: slices.DeleteFunc(b.nodeIDs(), func(id int32) bool { return !slices.Contains(intended, id) })}
	for _, t := range b.metaSM.topics() {
		for _, pm := range t.Partitions {
			order := pm.Replicas
			if pm.running() {
				order = pm.Target
			}
			out[pm.Group] = order
		}
	}
	return out
}

// preferredVoter is the replica leadership should move to from leader:
// order's first if it is a voter. While it is not (a move whose first
// target replica is still a learner), a leader that stays in order keeps
// leadership: handing it to the next voter of order would move it twice,
// once now and again when the first is promoted. A leader leaving order
// (being moved off) hands over to order's first voter.
func preferredVoter(order []int32, voters []uint64, leader uint64) uint64 {
	if len(order) > 0 && slices.Contains(voters, uint64(order[0])) {
		return uint64(order[0])
	}
	if slices.Contains(order, int32(leader)) {
		return 0
	}
	for _, id := range order {
		if slices.Contains(voters, uint64(id)) {
			return uint64(id)
		}
	}
	return 0
}

// round starts a transfer for every local leader whose preferred replica
// is another voter, connected, not leaving, not still rejoining after a
// wiped disk, in sync for RebalanceDelay and at the leader's log end, and
// whose leadership is RebalanceDelay old.
func (rb *rebalancer) round(ctx context.Context) {
	b := rb.b
	var prefs map[uint64][]int32
	delay := b.cfg.RebalanceDelay
	for _, r := range b.host.Replicas() {
		s := r.Status()
		if s == nil || !s.IsLeader() || s.Transferee != 0 {
			continue
		}
		if prefs == nil {
			prefs = b.preferences()
		}
		pref := preferredVoter(prefs[r.Group()], s.Voters, s.ID)
		if pref == 0 || pref == s.ID {
			continue
		}
		if !b.host.PeerAlive(pref) || b.host.PeerLeaving(pref) || !slices.Contains(s.ISR, pref) || s.Match[pref] < s.LastIndex ||
			slices.Contains(s.GaggedPeers, pref) {
			continue
		}
		if time.Since(s.LeaderChange) < delay || catchingUp(b, s) || b.stillRejoining(pref) {
			continue
		}
		if up := s.InSyncSince[pref]; up.IsZero() || time.Since(up) < delay {
			continue
		}
		rb.mu.Lock()
		if rb.busy[r.Group()] {
			rb.mu.Unlock()
			continue
		}
		rb.busy[r.Group()] = true
		rb.mu.Unlock()
		b.wg.Add(1)
		go rb.transfer(ctx, r, pref)
	}
}

// catchingUp reports whether a voter of the group is connected but not in
// its ISR: a node that just restarted and is still catching up. A hand-over
// then is one more pause for the group's clients while it has a single
// spare in-sync replica and the machine is busy with the catch-up; in a
// fast roll such a move back to a node restarted a step earlier took
// 110-350 ms and left two partitions 0.8 s without an ack. It waits until
// the group is whole again (a voter that is down does not hold it).
//
// A learner behind the log end or a member being refilled (a wiped node
// rejoining) holds it too: a new leader starts their catch-up afresh, and
// in a full-size replace, moves back to a preferred leader that a
// CheckQuorum step-down had moved took 1.5-4.9 s each.
func catchingUp(b *Broker, s *raft.Status) bool {
	if len(s.Refilling) > 0 || slices.ContainsFunc(s.Learners, func(l uint64) bool {
		return b.host.PeerAlive(l) && s.Match[l] < s.LastIndex
	}) {
		return true
	}
	return slices.ContainsFunc(s.Voters, func(v uint64) bool {
		return v != s.ID && b.host.PeerAlive(v) && !slices.Contains(s.ISR, v)
	})
}

// stillRejoining reports whether node id came back with an empty data
// directory and has groups left to rejoin. Leadership waits until it has
// them all: while it catches up on gigabytes for the others, every group
// it led would commit at the pace of its busy disk and workers, and each
// hand-over costs clients a metadata refresh (franz-go waits up to 5 s).
func (b *Broker) stillRejoining(id uint64) bool {
	reg, ok := b.metaSM.broker(int32(id))
	return ok && len(reg.Rejoin) > 0
}

func (rb *rebalancer) transfer(ctx context.Context, r *raft.Replica, to uint64) {
	defer rb.b.wg.Done()
	defer func() {
		rb.mu.Lock()
		delete(rb.busy, r.Group())
		rb.mu.Unlock()
	}()
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := r.TransferLeadership(tctx, to); err != nil {
		rb.b.logger.Debug("preferred leader election failed", "partition", r.Name(), "to", to, "err", err)
		return
	}
	rb.b.logger.Info("moved leadership back to preferred replica", "partition", r.Name(), "node", to, "took", time.Since(start).Round(time.Microsecond))
}
