package broker

import (
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
)

// replicationFactor is the partition's replica count once any move under
// way is done (a queued move has not started: the current count).
func (p *partitionMeta) replicationFactor() int {
	if p.running() {
		return len(p.Target)
	}
	return len(p.Replicas)
}

// AlterReassignments implements kafka.Reassignments: it checks each
// partition's target and proposes the valid ones in one metadata command.
func (b *Broker) AlterReassignments(ctx context.Context, topic string, parts []kafka.ReassignPartition, allowRFChange bool) []kafka.ReassignResult {
	out := make([]kafka.ReassignResult, len(parts))
	if topic == metaTopic {
		for i, p := range parts {
			if p.Partition != 0 {
				out[i] = kafka.ReassignResult{Err: kerr.UnknownTopicOrPartition.Code, Message: fmt.Sprintf("partition %d does not exist", p.Partition)}
				continue
			}
			out[i].Err, out[i].Message = b.reassignMetaVoters(ctx, p.Replicas)
		}
		return out
	}
	t, ok := b.metaSM.topic(topic)
	if !ok {
		for i := range out {
			out[i] = kafka.ReassignResult{Err: kerr.UnknownTopicOrPartition.Code, Message: "topic " + topic + " does not exist"}
		}
		return out
	}
	var moves []partitionMove
	var at []int
	for i, p := range parts {
		if p.Partition < 0 || int(p.Partition) >= len(t.Partitions) {
			out[i] = kafka.ReassignResult{Err: kerr.UnknownTopicOrPartition.Code, Message: fmt.Sprintf("partition %d does not exist", p.Partition)}
			continue
		}
		if p.Replicas != nil {
			if code, msg := b.checkTarget(&t.Partitions[p.Partition], p.Replicas, allowRFChange); code != 0 {
				out[i] = kafka.ReassignResult{Err: code, Message: msg}
				continue
			}
		}
		moves = append(moves, partitionMove{Partition: p.Partition, Replicas: p.Replicas})
		at = append(at, i)
	}
	if len(moves) == 0 {
		return out
	}
	mr, err := b.metaPropose(ctx, metaCmd{Op: "reassign", Name: topic, Moves: moves, Limit: b.moveLimit()})
	for j, i := range at {
		switch {
		case err != nil:
			out[i] = kafka.ReassignResult{Err: kerr.RequestTimedOut.Code, Message: "metadata change did not complete: " + err.Error()}
		case mr.Err != 0:
			out[i] = kafka.ReassignResult{Err: mr.Err, Message: mr.Msg}
		case j < len(mr.Codes):
			out[i] = kafka.ReassignResult{Err: mr.Codes[j]}
			if mr.Codes[j] == kerr.NoReassignmentInProgress.Code {
				out[i].Message = "no reassignment of this partition is in progress"
			}
		}
	}
	b.mover.wake()
	return out
}

// checkTarget refuses a target Kafka would: an empty list, duplicates,
// unknown brokers (INVALID_REPLICA_ASSIGNMENT), and with allowRFChange
// false another replica count (INVALID_REPLICATION_FACTOR).
func (b *Broker) checkTarget(pm *partitionMeta, target []int32, allowRFChange bool) (int16, string) {
	if msg := validReplicaList(target); msg != "" {
		return kerr.InvalidReplicaAssignment.Code, msg
	}
	for _, r := range target {
		if !b.knownBroker(r) {
			return kerr.InvalidReplicaAssignment.Code, fmt.Sprintf("broker %d is not part of the cluster", r)
		}
	}
	cur := pm.Replicas
	if pm.moving() {
		cur = pm.Prior
	}
	if !allowRFChange && len(target) != len(cur) {
		return kerr.InvalidReplicationFactor.Code, fmt.Sprintf("the target has %d replicas, the partition %d; the request does not allow a replication factor change", len(target), len(cur))
	}
	return 0, ""
}

// ListReassignments implements kafka.Reassignments. Queued moves are in
// progress too, listed with the replicas they will have while running;
// a move of the metadata group's votes is __cluster_metadata-0's.
func (b *Broker) ListReassignments(topics map[string][]int32) []kafka.ReassignmentInfo {
	var out []kafka.ReassignmentInfo
	if want, named := topics[metaTopic]; topics == nil || (named && slices.Contains(want, 0)) {
		if pm := b.metaPartition(); pm.moving() {
			out = append(out, kafka.ReassignmentInfo{Topic: metaTopic, Partition: 0, Replicas: pm.Replicas,
				Adding: pm.adding(), Removing: pm.removing()})
		}
	}
	for _, t := range b.metaSM.topics() {
		want, named := topics[t.Name]
		if topics != nil && !named {
			continue
		}
		for i := range t.Partitions {
			pm := &t.Partitions[i]
			if !pm.moving() || (topics != nil && !slices.Contains(want, int32(i))) {
				continue
			}
			reps := pm.Replicas
			if pm.queued() {
				reps = append(slices.Clone(pm.Target), minus(pm.Replicas, pm.Target)...)
			}
			out = append(out, kafka.ReassignmentInfo{Topic: t.Name, Partition: int32(i), Replicas: reps,
				Adding: pm.adding(), Removing: pm.removing()})
		}
	}
	return out
}
