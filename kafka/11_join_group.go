package kafka

// JoinGroup: a member enters a rebalance. v1 separated the rebalance
// timeout from the session timeout; v4 answers a new member
// MEMBER_ID_REQUIRED first; v5 static membership; v6 flexible; v7 the
// protocol type in the answer; v8 a reason. The request parks until the
// rebalance settles (see groups.go).
func init() { registerGroup(11) }
