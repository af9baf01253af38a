package kafka

import "context"

// Reassignments is the part of the Backend that moves replicas (KIP-455,
// keys 45 and 46).
type Reassignments interface {
	// AlterReassignments starts, replaces or (Replicas nil) cancels the
	// moves of one topic's partitions and answers each in order. With
	// allowRFChange false, a target of another length than the current
	// replicas is refused (KIP-860).
	AlterReassignments(ctx context.Context, topic string, parts []ReassignPartition, allowRFChange bool) []ReassignResult
	// ListReassignments lists the moves in progress: all of them when
	// topics is nil, else those of the partitions it names.
	ListReassignments(topics map[string][]int32) []ReassignmentInfo
}

// ReassignPartition is one partition of AlterPartitionAssignments.
type ReassignPartition struct {
	Partition int32
	Replicas  []int32 // nil: cancel the move in progress
}

// ReassignResult is one partition's outcome.
type ReassignResult struct {
	Err     int16
	Message string
}

// ReassignmentInfo is a move in progress (ListPartitionReassignments).
type ReassignmentInfo struct {
	Topic     string
	Partition int32
	Replicas  []int32 // the target followed by the replicas being removed
	Adding    []int32
	Removing  []int32
}
