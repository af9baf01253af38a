package admin

import (
	"fmt"
	"strconv"
)

// Health verdicts, shared by the node as a whole and by single partitions.
const (
	StatusHealthy         = "healthy"
	StatusDegraded        = "degraded"
	StatusUnhealthy       = "unhealthy"
	StatusUnderReplicated = "under_replicated"
	StatusOffline         = "offline"
	StatusFailed          = "failed" // this node's replica stopped on a storage error
)

// Report is the outcome of Evaluate: the health verdict shown by /health
// and the restart-safety verdict shown by /restart-safe.
type Report struct {
	// Status is "healthy", "degraded" or "unhealthy".
	Status string `json:"status"`
	// Partitions is keyed "topic-partition", internal partitions included.
	Partitions map[string]PartitionHealth `json:"partitions"`
	// SafeToRestart says whether stopping this node now keeps every
	// partition available.
	SafeToRestart bool `json:"safe_to_restart"`
	// Rejoining lists the nodes that came back with an empty data
	// directory and are still rejoining their groups (node id -> groups
	// left); the cluster is degraded meanwhile.
	Rejoining map[string]int `json:"rejoining,omitempty"`
	// Reasons explains, one line each, why the node is not safe to restart.
	// Every reason the node is not healthy is among them, because an
	// unhealthy or degraded node is never safe to restart.
	Reasons []string `json:"reasons,omitempty"`
	// Reassignments are the moves in progress (nil when there are none).
	Reassignments *Reassignments `json:"reassignments,omitempty"`
}

// Reassignments summarizes the replica moves in progress. A move keeps
// the node healthy as long as each partition has as many in-sync
// replicas as its target: it is planned work, not a fault.
type Reassignments struct {
	Count      int                           `json:"count"`
	Partitions map[string]ReassignmentHealth `json:"partitions"`
}

// ReassignmentHealth is one moving partition; a queued one waits for a
// slot (max_concurrent_moves) and has not changed its replicas yet.
type ReassignmentHealth struct {
	Queued   bool    `json:"queued,omitempty"`
	Target   []int32 `json:"target"`
	Adding   []int32 `json:"adding"`
	Removing []int32 `json:"removing"`
	// EntriesBehind is how many entries the replicas being added trail
	// the leader's log, all together; -1 when this node does not lead it.
	EntriesBehind int64 `json:"entries_behind"`
}

// PartitionHealth is one partition's entry in the /health response.
type PartitionHealth struct {
	Leader         int32   `json:"leader"`
	InSyncReplicas []int32 `json:"in_sync_replicas"`
	Status         string  `json:"status"`
	Failed         string  `json:"failed,omitempty"` // why the local replica failed
}

// snapshot keeps the Source answers that one evaluation was based on, so a
// response never mixes values read at different moments.
type snapshot struct {
	nodeID       int32
	shuttingDown bool
	ready        bool
	readyReason  string
}

// Evaluate computes the health and restart-safety verdicts from src.
func Evaluate(src Source) Report {
	r, _ := evaluate(src)
	return r
}

func evaluate(src Source) (Report, snapshot) {
	var snap snapshot
	snap.nodeID = src.NodeID()
	snap.shuttingDown = src.ShuttingDown()
	snap.ready, snap.readyReason = src.Ready()

	r := Report{Status: StatusHealthy, Partitions: map[string]PartitionHealth{}}
	worsen := func(s string) {
		if rank(s) > rank(r.Status) {
			r.Status = s
		}
	}

	if snap.shuttingDown {
		worsen(StatusUnhealthy)
		r.Reasons = append(r.Reasons, "node is shutting down")
	}
	if !snap.ready {
		worsen(StatusUnhealthy)
		r.Reasons = append(r.Reasons, notReadyReason(snap.readyReason))
	}

	quorumLoss := 0
	for _, p := range src.Partitions() {
		name := partitionKey(p.Topic, p.Partition)
		st := partitionStatus(p)
		r.Partitions[name] = PartitionHealth{
			Leader:         p.Leader,
			InSyncReplicas: nonNil(p.InSyncReplicas),
			Status:         st,
			Failed:         p.Failed,
		}
		if p.Target != nil {
			if r.Reassignments == nil {
				r.Reassignments = &Reassignments{Partitions: map[string]ReassignmentHealth{}}
			}
			r.Reassignments.Count++
			r.Reassignments.Partitions[name] = ReassignmentHealth{Queued: p.Queued, Target: p.Target, Adding: nonNil(p.Adding),
				Removing: nonNil(p.Removing), EntriesBehind: p.EntriesBehind}
		}
		switch st {
		case StatusFailed:
			// Whatever the group does without it, this node lost a replica
			// and cannot get it back without a restart.
			worsen(StatusUnhealthy)
			r.Reasons = append(r.Reasons, name+": replica on node "+strconv.Itoa(int(snap.nodeID))+" failed: "+p.Failed)
		case StatusOffline:
			worsen(StatusUnhealthy)
			r.Reasons = append(r.Reasons, name+": no leader")
		case StatusUnderReplicated:
			worsen(StatusDegraded)
			r.Reasons = append(r.Reasons, fmt.Sprintf("%s: in-sync replicas %v of %v",
				name, nonNil(p.InSyncReplicas), nonNil(p.Replicas)))
		}
		if !contains(p.Replicas, snap.nodeID) {
			continue
		}
		// The partition stays writable while this node is down only if the
		// remaining in-sync replicas still form a majority of the replicas.
		others := 0
		for _, id := range dedupe(p.InSyncReplicas) {
			if id != snap.nodeID && contains(p.Replicas, id) {
				others++
			}
		}
		need := len(p.Replicas)/2 + 1
		if others < need {
			quorumLoss++
			r.Reasons = append(r.Reasons, fmt.Sprintf(
				"%s: stopping node %d leaves %d in-sync replicas, quorum needs %d",
				name, snap.nodeID, others, need))
		}
	}

	// A peer that is down usually means another node is mid-restart;
	// restarting this one as well could take two replicas away at once.
	for _, n := range src.Nodes() {
		if !n.Connected {
			r.Reasons = append(r.Reasons, fmt.Sprintf("node %d (%s) is not connected", n.ID, n.Kafka))
		}
		if n.RejoiningGroups > 0 {
			if r.Rejoining == nil {
				r.Rejoining = map[string]int{}
			}
			r.Rejoining[strconv.Itoa(int(n.ID))] = n.RejoiningGroups
			worsen(StatusDegraded)
			r.Reasons = append(r.Reasons, fmt.Sprintf("node %d is rejoining after losing its data: %d groups left", n.ID, n.RejoiningGroups))
		}
	}

	r.SafeToRestart = len(r.Reasons) == 0
	return r, snap
}

// partitionStatus derives the status from leader and ISR rather than
// trusting PartitionStatus.Status, so every handler agrees on one rule.
func partitionStatus(p PartitionStatus) string {
	if p.Failed != "" {
		return StatusFailed
	}
	if p.Leader == 0 {
		return StatusOffline
	}
	inSync := 0
	for _, id := range dedupe(p.InSyncReplicas) {
		if contains(p.Replicas, id) {
			inSync++
		}
	}
	want := len(p.Replicas)
	if p.Target != nil && !p.Queued {
		want = len(p.Target) // as Kafka counts a moving partition; a queued one has not started
	}
	if inSync < want {
		return StatusUnderReplicated
	}
	return StatusHealthy
}

func rank(status string) int {
	switch status {
	case StatusUnhealthy:
		return 2
	case StatusDegraded:
		return 1
	}
	return 0
}

func notReadyReason(reason string) string {
	if reason == "" {
		return "node is not ready"
	}
	return "node is not ready: " + reason
}

func partitionKey(topic string, partition int32) string {
	return topic + "-" + strconv.FormatInt(int64(partition), 10)
}

func contains(ids []int32, id int32) bool {
	for _, v := range ids {
		if v == id {
			return true
		}
	}
	return false
}

// dedupe guards the counts against a Source that repeats an id.
func dedupe(ids []int32) []int32 {
	out := make([]int32, 0, len(ids))
	for _, id := range ids {
		if !contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// nonNil makes JSON show [] instead of null, which jq filters such as
// `.in_sync_replicas | length` rely on.
func nonNil(ids []int32) []int32 {
	if ids == nil {
		return []int32{}
	}
	return ids
}
