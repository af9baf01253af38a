package kafka

// OffsetCommit: a member stores its group's positions. v1 added member id
// and generation; v2-4 a retention time (gone in v5); v6 a leader epoch per
// partition; v7 the group instance id (static members); v8 flexible. The
// answer waits until the commit is replicated in the offsets topic.
func init() { registerGroup(8) }
