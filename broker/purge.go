package broker

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

// Replica directories a node no longer hosts. A node that was down while
// it was moved off a partition (or while its topic was deleted) finds the
// replica's directory at its next start, with nothing to open it for.
// Its data is deleted once the metadata proves the node is out:
//   - the group was deleted: its id is below the next group id (so the
//     metadata includes its creation) and no partition has it;
//   - the node is not among the partition's replicas, and the metadata
//     has applied more than it had when the replica was created (the
//     metaIndexFile marker): a restarting node replays the metadata from
//     its snapshot, and until it is past that point it may not know yet
//     of the move that added it.

// metaIndexFile holds the metadata index applied when a replica directory
// was created.
const metaIndexFile = "meta-index"

// writeMetaIndex records the metadata index at a replica's creation.
func (b *Broker) writeMetaIndex(dir string) error {
	path := filepath.Join(dir, metaIndexFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	return clog.WriteFileSync(path, []byte(strconv.FormatUint(b.meta.Status().Applied, 10)+"\n"))
}

// purgeLeftovers deletes the replica directories the metadata no longer
// assigns to this node (reconcile loop only).
func (b *Broker) purgeLeftovers(topics []topicMeta) {
	ents, err := os.ReadDir(b.cfg.DataDir)
	if err != nil {
		return
	}
	hosted := map[uint64][]int32{}
	for _, t := range topics {
		for _, pm := range t.Partitions {
			hosted[pm.Group] = pm.Replicas
		}
	}
	open := map[string]bool{metaName: true}
	for _, r := range b.host.Replicas() {
		open[r.Name()] = true
	}
	next, applied := b.metaSM.nextGroup(), b.meta.Status().Applied
	for _, e := range ents {
		if !e.IsDir() || open[e.Name()] {
			continue // open replicas are most: their markers are not read
		}
		dir := filepath.Join(b.cfg.DataDir, e.Name())
		g, ok := readUint(filepath.Join(dir, "group"))
		if !ok || b.host.Replica(g) != nil {
			continue
		}
		reps, live := hosted[g]
		switch {
		case !live && g < next:
		case live && !slices.Contains(reps, b.cfg.NodeID):
			at, ok := readUint(filepath.Join(dir, metaIndexFile))
			if !ok || applied <= at {
				continue
			}
		default:
			continue
		}
		b.logger.Info("deleting the replica of a partition this node no longer hosts", "dir", dir, "group", g)
		if err := b.purgeReplica(g, e.Name(), dir); err != nil {
			b.logger.Warn("deleting a replica this node no longer hosts failed", "dir", dir, "err", err)
		}
	}
}

// purgeReplica deletes a replica that is not open. Raft's RemoveReplica
// also forgets the group's hard state in the node's file, and works on
// open replicas only, so the replica is opened and removed at once:
// before its first election timeout it can only answer its group, whose
// leader no longer sends to it.
func (b *Broker) purgeReplica(g uint64, name, dir string) error {
	rep, err := b.host.OpenReplica(raft.ReplicaConfig{Group: g, Name: name, Dir: dir,
		Peers: []uint64{uint64(b.cfg.NodeID)}, SM: discardSM{}, Log: clog.Options{Logger: b.logger}})
	if err != nil {
		return err
	}
	if err := b.host.StartReplica(rep); err != nil {
		return err
	}
	return b.host.RemoveReplica(g)
}

func readUint(path string) (uint64, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	return n, err == nil
}

// discardSM is the state machine of a replica opened only to be removed.
type discardSM struct{}

func (discardSM) Apply([]raft.Committed) error { return nil }
func (discardSM) Snapshot() ([]byte, error)    { return nil, nil }
func (discardSM) Restore(uint64, []byte) error { return nil }

// nextGroup is the id the next partition will get.
func (m *metaSM) nextGroup() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st.NextGroup
}
