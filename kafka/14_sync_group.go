package kafka

// SyncGroup: the leader hands out the assignment, every member receives
// its part. v3 the group instance id; v4 flexible; v5 protocol type and
// name. Followers park until the leader's SyncGroup arrives.
func init() { registerGroup(14) }
