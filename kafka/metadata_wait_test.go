package kafka

import "testing"

// Metadata waits for a leader only where one can come: a partition with no
// known leader and a replica up, not one whose replicas are all down.
func TestAwaitingLeader(t *testing.T) {
	led := PartitionInfo{Leader: 2, Replicas: []int32{1, 2, 3}}
	electing := PartitionInfo{Leader: -1, Replicas: []int32{1, 2, 3}, Offline: []int32{3}}
	allDown := PartitionInfo{Leader: -1, Replicas: []int32{2, 3}, Offline: []int32{2, 3}}
	for _, c := range []struct {
		parts []PartitionInfo
		err   int16
		want  bool
	}{
		{[]PartitionInfo{led}, 0, false},
		{[]PartitionInfo{led, electing}, 0, true},
		{[]PartitionInfo{allDown}, 0, false},
		{[]PartitionInfo{electing}, 3, false}, // the topic itself has an error
	} {
		if got := awaitingLeader([]TopicInfo{{Name: "t", Err: c.err, Partitions: c.parts}}); got != c.want {
			t.Errorf("awaitingLeader(%+v, err %d) = %v, want %v", c.parts, c.err, got, c.want)
		}
	}
}
