package admin

import "time"

// Source is what the admin server reads from the broker. The broker
// implements it; admin imports no sibling package.
type Source interface {
	// NodeID is this node's id.
	NodeID() int32
	// Partitions describes every partition this node knows of (all topics,
	// including internal ones), sorted by topic then partition.
	Partitions() []PartitionStatus
	// ShuttingDown reports whether a graceful shutdown has begun.
	ShuttingDown() bool
	// Ready reports whether the node serves clients: its listeners are up
	// and it has caught up on cluster metadata.
	Ready() (bool, string)
	// Nodes lists the cluster's nodes and whether this node currently sees
	// each one as connected (itself included, always true).
	Nodes() []NodeStatus
	// Process identifies the running process, so tools can tell that a
	// node restarted (the rolling restart waits for a new start time).
	Process() ProcessInfo
}

// ProcessInfo describes the node's process.
type ProcessInfo struct {
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
}

// PartitionStatus is one partition as /partitions and /health show it.
type PartitionStatus struct {
	Topic          string  `json:"topic"`
	Partition      int32   `json:"partition"`
	Leader         int32   `json:"leader"` // 0 when there is no leader
	Replicas       []int32 `json:"replicas"`
	InSyncReplicas []int32 `json:"in_sync_replicas"`
	LeaderEpoch    int64   `json:"leader_epoch"`
	HighWatermark  int64   `json:"high_watermark"`   // -1 when unknown on this node
	LogStartOffset int64   `json:"log_start_offset"` // -1 when unknown on this node
	AppliedIndex   uint64  `json:"applied_index"`    // this node's applied Raft index, 0 if not a replica
	Status         string  `json:"status"`           // "healthy", "under_replicated", "offline", "failed"
	Internal       bool    `json:"internal"`
	// Failed is set while this node's replica is stopped by a storage error
	// (a failed write or fsync): the error. The node's log has the details.
	Failed string `json:"failed,omitempty"`
	// A reassignment in progress (KIP-455): the target replicas, those
	// being added and removed, the group's learners (known on its leader)
	// and how many entries the learners trail the leader's log in total
	// (-1 when not known on this node). Queued: the move waits for a slot
	// (max_concurrent_moves); Replicas are still the current ones.
	Queued        bool    `json:"queued,omitempty"`
	Target        []int32 `json:"target,omitempty"`
	Adding        []int32 `json:"adding,omitempty"`
	Removing      []int32 `json:"removing,omitempty"`
	Learners      []int32 `json:"learners,omitempty"`
	EntriesBehind int64   `json:"entries_behind,omitempty"`
}

// NodeStatus is one cluster node as seen from here.
type NodeStatus struct {
	ID        int32  `json:"id"`
	Kafka     string `json:"kafka"`
	Admin     string `json:"admin"`
	Connected bool   `json:"connected"`
	// State is the broker registry's: "active", "draining", or "" for a
	// node only cluster.toml knows (not registered yet).
	State string `json:"state,omitempty"`
	// Incarnation is the node's data directory incarnation, as registered.
	Incarnation string `json:"incarnation,omitempty"`
	// RejoiningGroups is how many groups the node, back with an empty
	// data directory, has still to rejoin (left out once it is a full
	// member).
	RejoiningGroups int `json:"rejoining_groups,omitempty"`
	// MetadataVoter is set for the cluster metadata group's voters.
	MetadataVoter bool `json:"metadata_voter,omitempty"`
}
