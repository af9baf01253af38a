package coordinator

import (
	"context"
)

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Offset is a committed consumer position.
type Offset struct {
	Offset      int64
	LeaderEpoch int32 // -1 when unknown
	Metadata    string
	CommitTime  int64 // unix millis when the commit was applied
}

// OffsetStore keeps committed offsets and group membership snapshots
// durably. The broker implements it over the replicated internal offsets
// topic: Commit, Delete and SaveGroup return only once the write is
// replicated (or the context ends), and the read methods see every write
// that has been applied on this node.
type OffsetStore interface {
	// Commit stores offsets for group; it returns once they are durable.
	Commit(ctx context.Context, group string, offsets map[TopicPartition]Offset) error
	// Delete removes the given partitions' offsets for group; an empty tps
	// removes every offset of the group and also its saved snapshot
	// (SaveGroup), deleting the group entirely.
	Delete(ctx context.Context, group string, tps []TopicPartition) error
	// SaveGroup durably stores a group's membership snapshot; data is opaque
	// to the store. It returns once the snapshot is replicated (or ctx ends).
	SaveGroup(ctx context.Context, group string, data []byte) error
	// LoadGroup returns the group's last saved snapshot, or nil.
	LoadGroup(group string) []byte
	// Offsets returns a copy of every committed offset of group.
	Offsets(group string) map[TopicPartition]Offset
	// Groups lists the groups that have committed offsets.
	Groups() []string
}
