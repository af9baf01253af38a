package kafka

// DescribeGroups: state, protocol and members of groups (admin tools,
// kafka-consumer-groups). v3 authorized operations; v4 instance ids; v5
// flexible.
func init() { registerGroup(15) }
