package kafka

// ListGroups: the groups this node coordinates. v3 flexible; v4 filters
// by state; v5 by type.
func init() { registerGroup(16) }
