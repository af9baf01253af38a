package raft

import (
	"slices"
	"testing"
)

// Catch-up data waits behind everything else for the peer, one bulk
// message per frame, whatever the order it was queued in.
func TestPeerSenderBulkLane(t *testing.T) {
	s := &peerSender{wake: make(chan struct{}, 1)}
	msg := func(group uint64, bulk bool) WireMsg {
		return WireMsg{Group: group, Data: make([]byte, 100), Bulk: bulk}
	}
	groups := func(ms []WireMsg) []uint64 {
		var out []uint64
		for _, m := range ms {
			out = append(out, m.Group)
		}
		return out
	}
	s.enqueue([]WireMsg{msg(1, true), msg(2, true), msg(3, false), msg(4, true)})
	s.enqueue([]WireMsg{msg(5, false)})
	for i, want := range [][]uint64{{3, 5, 1}, {2}, {6, 4}, nil} {
		if i == 2 {
			s.enqueue([]WireMsg{msg(6, false)})
		}
		if got := groups(s.next()); !slices.Equal(got, want) {
			t.Fatalf("frame %d: groups %v, want %v", i, got, want)
		}
	}
	if s.qbytes != 0 || s.bbytes != 0 {
		t.Fatalf("queued bytes left: %d + %d bulk", s.qbytes, s.bbytes)
	}
}
