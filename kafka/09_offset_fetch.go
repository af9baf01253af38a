package kafka

// OffsetFetch: a consumer reads its group's committed positions. v2 lets
// topics be null (every partition) and adds a top-level error; v5 returns
// the leader epoch; v6 flexible; v7 RequireStable; v8 several groups per
// request. A group that never committed gets offset -1 and no error
// (sarama's offset manager relies on it).
func init() { registerGroup(9) }
