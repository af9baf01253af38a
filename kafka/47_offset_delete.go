package kafka

// OffsetDelete: removes committed offsets of partitions a group no longer
// consumes. v0 only.
func init() { registerGroup(47) }
