package broker

import (
	"os"
	"slices"
	"sync"
)

// Replicas of moving partitions. A node the move adds opens its replica
// as a joining one (raft ReplicaConfig.Joining): fresh storage starts from
// the group's original voters (Origin), so replaying the leader's log from
// its start applies every later configuration change in order, and the
// replica never votes until the leader promotes it. A node taken out of a
// group closes and deletes its replica: at once when its Raft replica
// applies its own removal (OnRemoved), else when the metadata no longer
// lists it (reassign_done).

// removedGroups are the groups whose configuration no longer has this
// node although the metadata may still list it (the move is not reported
// done yet); reconcile does not open them again unless the node is in the
// target once more (a cancelled or replaced move).
type removedGroups struct {
	mu sync.Mutex
	gs map[uint64]bool
}

func (r *removedGroups) add(g uint64) {
	r.mu.Lock()
	if r.gs == nil {
		r.gs = map[uint64]bool{}
	}
	r.gs[g] = true
	r.mu.Unlock()
}

func (r *removedGroups) has(g uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gs[g]
}

// keep forgets every group that is not in still (no longer listed, or the
// node is wanted in it again).
func (r *removedGroups) keep(still func(g uint64) bool) {
	r.mu.Lock()
	for g := range r.gs {
		if !still(g) {
			delete(r.gs, g)
		}
	}
	r.mu.Unlock()
}

// onRemoved is raft's Config.OnRemoved: a local replica applied a
// configuration without this node. Raft calls it on a worker with no
// raft lock held; it takes only the metadata's read lock and the note's
// leaf lock, notes the group and wakes the reconcile loop, which closes
// and deletes the replica. A notice for a
// group whose move does not take this node out is ignored: a joining
// replica replaying the log can pass through an old configuration
// without it, and a replica the target names stays.
func (b *Broker) onRemoved(g uint64) {
	if !b.leavingGroup(g, b.metaSM.topics()) {
		return
	}
	b.removed.add(g)
	b.logger.Info("this node was removed from a partition's replicas", "group", g)
	select {
	case b.reconcileCh <- struct{}{}:
	default:
	}
}

// leavingGroup reports whether the metadata moves this node out of
// group g: a move is in progress and its target does not name the node.
func (b *Broker) leavingGroup(g uint64, topics []topicMeta) bool {
	for _, t := range topics {
		for _, pm := range t.Partitions {
			if pm.Group == g {
				return pm.running() && !slices.Contains(pm.Target, b.cfg.NodeID)
			}
		}
	}
	return false
}

// wantsReplica reports whether this node should hold a replica of pm: it
// is listed, and its replica has not applied its removal yet.
func (b *Broker) wantsReplica(pm *partitionMeta) bool {
	return slices.Contains(pm.Replicas, b.cfg.NodeID) && !b.removed.has(pm.Group)
}

// forgetRemoved drops the removal notes that no longer matter: the move
// ended, or names this node again.
func (b *Broker) forgetRemoved(topics []topicMeta) {
	b.removed.keep(func(g uint64) bool { return b.leavingGroup(g, topics) })
}

// replicaPeers is what a replica of w opens with: the voters Raft starts
// from on fresh storage (and its preference order otherwise), and whether
// it joins an existing group. A partition that has ever moved joins: its
// fresh storage starts from Origin and is gagged until promoted. One that
// never moved bootstraps from its replicas, as before moves existed.
func replicaPeers(dir string, w wantedReplica) (peers []uint64, joining bool) {
	if w.origin == nil {
		return toUint64s(w.replicas), false
	}
	if dirFresh(dir) {
		return toUint64s(w.origin), true
	}
	return toUint64s(w.replicas), true
}

// dirFresh reports whether a replica directory holds no Raft data yet (it
// is missing, or has only the broker's markers).
func dirFresh(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return os.IsNotExist(err)
	}
	for _, e := range ents {
		if e.Name() != "group" && e.Name() != metaIndexFile {
			return false
		}
	}
	return true
}
