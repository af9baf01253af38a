package kafka

// Heartbeat: a member keeps its session and learns of a rebalance
// (REBALANCE_IN_PROGRESS). v3 carries the group instance id; v4 flexible.
func init() { registerGroup(12) }
