package broker

import (
	"context"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Bounded concurrent moves. When every learner of a large rebalance
// catches up at once, they share the leaders' disks and links with the
// producers, whose latency suffers for the whole rebalance; the cluster
// therefore runs at most max_concurrent_moves reassignments at once and
// queues the rest. The queue lives in the replicated metadata, so every
// node lists the same moves as queued, a new controller carries on where
// the last one stopped, and a restart replays it.
//
// A queued move has its Target and Prior (it is a reassignment in progress
// for ListPartitionReassignments and can be cancelled or replaced) but
// its Replicas are still the current ones: no node opens a replica for it
// and no leader drives it (running is false). Admission (start) turns it
// into a running move. Every command that can free or fill a slot
// (reassign, reassign_done, admit_moves) carries its proposer's limit and
// admits the queue's head while a slot is free; the metadata leader also
// proposes admit_moves when a slot frees otherwise (a topic deleted, the
// limit raised), see admitLoop.

// defaultMaxMoves is max_concurrent_moves when cluster.toml does not set
// it: measured on a 30-partition grow, 8 keeps the rebalance as fast as
// unlimited moves and the producers' p99 lower (README "Moving replicas").
const defaultMaxMoves = 8

// running reports whether the partition's move is admitted (not queued).
func (p *partitionMeta) running() bool { return p.Target != nil && p.Queue == 0 }

// queued reports whether the partition's move waits for a slot.
func (p *partitionMeta) queued() bool { return p.Target != nil && p.Queue != 0 }

// start admits a move whose Target and Prior are set: the replicas become
// the target followed by those still to be removed, as Kafka lists them.
func (p *partitionMeta) start() {
	if p.Origin == nil {
		p.Origin = slices.Clone(p.Replicas)
	}
	p.Queue = 0
	p.Replicas = append(slices.Clone(p.Target), minus(p.Replicas, p.Target)...)
}

// requeue replaces (or, target nil, cancels) a queued move. It keeps its
// place; a target that is the current replica set ends it at once (with a
// new preferred order if that is all it changes).
func requeue(p *partitionMeta, target []int32) int16 {
	switch {
	case target == nil:
	case validReplicaList(target) != "":
		return kerr.InvalidReplicaAssignment.Code
	case sameSet(target, p.Replicas):
		p.Replicas = slices.Clone(target)
	default:
		p.Target = slices.Clone(target)
		return 0
	}
	p.Target, p.Prior, p.Queue = nil, nil, 0
	return 0
}

// moveCounts counts the running and the queued moves (under m.mu).
func (m *metaSM) moveCounts() (running, queued int) {
	for _, t := range m.st.Topics {
		for i := range t.Partitions {
			switch p := &t.Partitions[i]; {
			case p.running():
				running++
			case p.queued():
				queued++
			}
		}
	}
	return running, queued
}

// admitMoves starts queued moves, oldest first, while fewer than limit run
// (limit < 0: all of them; 0: none, a command that carries no limit).
// It runs in apply, under m.mu, and is deterministic.
func (m *metaSM) admitMoves(limit int) {
	if limit == 0 {
		return
	}
	running, _ := m.moveCounts()
	var waiting []*partitionMeta
	for _, t := range m.st.Topics {
		for i := range t.Partitions {
			if p := &t.Partitions[i]; p.queued() {
				waiting = append(waiting, p)
			}
		}
	}
	sort.Slice(waiting, func(i, j int) bool { return waiting[i].Queue < waiting[j].Queue })
	for _, p := range waiting {
		if limit > 0 && running >= limit {
			return
		}
		p.start()
		running++
	}
}

// canAdmit reports whether queued moves wait although fewer than limit
// moves run.
func (m *metaSM) canAdmit(limit int) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	running, queued := m.moveCounts()
	return queued > 0 && limit != 0 && (limit < 0 || running < limit)
}

// moveLimit is this node's max_concurrent_moves as metadata commands
// carry it: -1 for unlimited.
func (b *Broker) moveLimit() int {
	n := b.cfg.Cluster.MaxConcurrentMoves
	switch {
	case n < 0:
		return -1
	case n == 0:
		return defaultMaxMoves
	}
	return n
}

// admitRetry spaces out admit_moves proposals that failed (no metadata
// leader yet, say); success needs no retry, the next change wakes the loop.
const admitRetry = time.Second

// admitLoop runs on every node; only the metadata leader proposes
// admit_moves, when the metadata shows a free slot and a queued move.
// The broker owns it; it ends with the broker's context.
func (b *Broker) admitLoop(ctx context.Context) {
	defer b.wg.Done()
	retry := time.NewTimer(admitRetry)
	retry.Stop()
	defer retry.Stop()
	for {
		ev := b.leaderEvents.wait() // fired on metadata and leader changes
		limit := b.moveLimit()
		if !b.host.Stopping() && b.meta.Status().IsLeader() && b.metaSM.canAdmit(limit) {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := b.metaPropose(pctx, metaCmd{Op: "admit_moves", Limit: limit})
			cancel()
			if err != nil && ctx.Err() == nil {
				b.logger.Warn("admitting queued reassignments failed; retrying", "err", err)
				retry.Reset(admitRetry)
			}
		}
		select {
		case <-ev:
		case <-retry.C:
		case <-ctx.Done():
			return
		}
	}
}
