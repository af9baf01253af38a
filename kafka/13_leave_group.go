package kafka

// LeaveGroup: members leave at once instead of timing out. v3 leaves a
// batch of members (by member or instance id); v4 flexible; v5 a reason.
func init() { registerGroup(13) }
