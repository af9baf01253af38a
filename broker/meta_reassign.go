package broker

import (
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Replica movement in the metadata (KIP-455). A partition's Replicas is
// the set of nodes that hold (or must keep) a replica of its group: during
// a move the target followed by every node that may still be in the
// group's Raft configuration, as Kafka lists it. Target is the replica set
// being moved to (nil: no move), Prior the replicas before the move (what
// a cancel returns to), Origin the voters the group was bootstrapped with
// (a replica that joins later starts its Raft configuration from them and
// replays the log from there). The leader of the group drives the move
// (mover.go) and reports it with reassign_done.

// partitionMove is one partition of a reassign or reassign_done command.
type partitionMove struct {
	Partition int32   `json:"p"`
	Group     uint64  `json:"g,omitempty"` // reassign_done: the group that reached Replicas
	Replicas  []int32 `json:"r"`           // nil in a reassign: cancel the move
}

// moving reports whether a reassignment of the partition is in progress.
func (p *partitionMeta) moving() bool { return p.Target != nil }

// origin is the group's bootstrap voters: absent in metadata written before
// anything moved, when they are the replicas.
func (p *partitionMeta) origin() []int32 {
	if p.Origin != nil {
		return p.Origin
	}
	return p.Replicas
}

// adding is KIP-455's adding replicas: in the target, not in the prior set.
func (p *partitionMeta) adding() []int32 {
	if !p.moving() {
		return nil
	}
	return minus(p.Target, p.Prior)
}

// removing is KIP-455's removing replicas: listed, but not in the target.
func (p *partitionMeta) removing() []int32 {
	if !p.moving() {
		return nil
	}
	return minus(p.Replicas, p.Target)
}

func (p *partitionMeta) clone() partitionMeta {
	return partitionMeta{Group: p.Group, Replicas: slices.Clone(p.Replicas), Origin: slices.Clone(p.Origin),
		Target: slices.Clone(p.Target), Prior: slices.Clone(p.Prior), Queue: p.Queue}
}

// minus is a without the members of b, in a's order.
func minus(a, b []int32) []int32 {
	out := []int32{}
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// validReplicaList checks the shape of a replica list (deterministic: the
// apply step runs it too); which brokers exist is checked on proposal.
func validReplicaList(reps []int32) string {
	if len(reps) == 0 {
		return "empty replica list"
	}
	for i, r := range reps {
		if r < 0 {
			return "replica ids must not be negative"
		}
		if slices.Contains(reps[:i], r) {
			return "replica " + strconv.Itoa(int(r)) + " is listed twice"
		}
	}
	return ""
}

// applyReassign starts, queues, replaces or cancels the moves of one
// topic's partitions; Codes answers each partition in order. With a limit
// (cmd.Limit, move_queue.go) a new move joins the queue and the queue's
// head is admitted while a slot is free, so earlier submissions go first.
func (m *metaSM) applyReassign(cmd *metaCmd) metaResult {
	t, ok := m.st.Topics[cmd.Name]
	if !ok {
		return metaResult{Err: kerr.UnknownTopicOrPartition.Code, Msg: "topic " + cmd.Name + " does not exist"}
	}
	res := metaResult{Codes: make([]int16, len(cmd.Moves))}
	var enqueue func() uint64
	if cmd.Limit != 0 {
		enqueue = func() uint64 { m.st.NextQueue++; return m.st.NextQueue }
	}
	for i, mv := range cmd.Moves {
		if mv.Partition < 0 || int(mv.Partition) >= len(t.Partitions) {
			res.Codes[i] = kerr.UnknownTopicOrPartition.Code
			continue
		}
		res.Codes[i] = reassignPartition(&t.Partitions[mv.Partition], mv.Replicas, enqueue)
	}
	m.admitMoves(cmd.Limit)
	return res
}

// reassignPartition applies one partition's reassignment (nil: cancel).
// enqueue, when not nil, numbers a new move that must wait in the queue.
func reassignPartition(p *partitionMeta, target []int32, enqueue func() uint64) int16 {
	if p.Queue != 0 {
		return requeue(p, target)
	}
	if target == nil {
		if !p.moving() {
			return kerr.NoReassignmentInProgress.Code
		}
		// Back to the replicas before the move. Nodes the move added may
		// be in the group already: they stay listed (removing) until the
		// leader has taken them out and reports it.
		target = p.Prior
	}
	if validReplicaList(target) != "" {
		return kerr.InvalidReplicaAssignment.Code
	}
	if !p.moving() {
		if slices.Equal(target, p.Replicas) {
			return 0
		}
		if sameSet(target, p.Replicas) {
			p.Replicas = slices.Clone(target) // a new preferred order only
			return 0
		}
		p.Prior = slices.Clone(p.Replicas)
		p.Target = slices.Clone(target)
		if enqueue != nil {
			p.Queue = enqueue()
			return 0
		}
		p.start()
		return 0
	}
	p.Target = slices.Clone(target)
	p.Replicas = append(slices.Clone(target), minus(p.Replicas, target)...)
	return 0
}

// applyReassignDone ends the moves whose group reached its target: the
// replicas become the target. A report for a target that has changed
// since (replaced or cancelled) is stale and changes nothing.
func (m *metaSM) applyReassignDone(cmd *metaCmd) metaResult {
	res := metaResult{Codes: make([]int16, len(cmd.Moves))}
	for i, mv := range cmd.Moves {
		ref, ok := m.byGroup[mv.Group]
		if !ok {
			res.Codes[i] = kerr.UnknownTopicOrPartition.Code
			continue
		}
		p := &m.st.Topics[ref.topic].Partitions[ref.partition]
		if !p.running() || !slices.Equal(p.Target, mv.Replicas) {
			res.Codes[i] = kerr.NoReassignmentInProgress.Code
			continue
		}
		p.Replicas, p.Target, p.Prior = p.Target, nil, nil
	}
	m.admitMoves(cmd.Limit)
	return res
}

func sameSet(a, b []int32) bool {
	return len(a) == len(b) && len(minus(a, b)) == 0
}
