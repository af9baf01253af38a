package kafka

// DeleteGroups: removes empty groups and their committed offsets. v2
// flexible.
func init() { registerGroup(42) }
