package broker

import "testing"

// TestPreferredVoter covers where the rebalancer sends leadership,
// including a move whose first target replica is still a learner.
func TestPreferredVoter(t *testing.T) {
	cases := []struct {
		name   string
		order  []int32
		voters []uint64
		leader uint64
		want   uint64
	}{
		{"settled, leader preferred", []int32{1, 2, 3}, []uint64{1, 2, 3}, 1, 1},
		{"settled, back to first", []int32{1, 2, 3}, []uint64{1, 2, 3}, 2, 1},
		// [2 3 1] -> [4 3 2] with 4 a learner: 2 stays in the target, so it
		// keeps leadership instead of handing it to 3 and then again to 4.
		{"move, first is learner, leader stays", []int32{4, 3, 2}, []uint64{1, 2, 3}, 2, 0},
		{"move, first is learner, leader is later voter", []int32{4, 3, 2}, []uint64{1, 2, 3}, 3, 0},
		{"move, first promoted", []int32{4, 3, 2}, []uint64{1, 2, 3, 4}, 2, 4},
		// The leader is being moved off: the first voter of the target.
		{"move, leader leaving", []int32{4, 3, 2}, []uint64{1, 2, 3}, 1, 3},
		{"move, leader leaving, first promoted", []int32{4, 3, 2}, []uint64{1, 2, 3, 4}, 1, 4},
		{"no voter in order", []int32{4, 5}, []uint64{1, 2, 3}, 1, 0},
		{"empty order", nil, []uint64{1, 2, 3}, 1, 0},
	}
	for _, c := range cases {
		if got := preferredVoter(c.order, c.voters, c.leader); got != c.want {
			t.Errorf("%s: preferredVoter(%v, %v, %d) = %d, want %d", c.name, c.order, c.voters, c.leader, got, c.want)
		}
	}
}
