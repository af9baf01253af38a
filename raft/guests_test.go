package raft

import (
	"testing"
	"time"
)

// TestTransportGuests admits a node that is not known yet as a guest:
// only its node-level messages on the admitted channels arrive, it is
// never reported up, and once SetPeer names it, it redials and is served
// as a peer whose Raft messages arrive too.
func TestTransportGuests(t *testing.T) {
	addrs := freeAddrs(t, 2)
	tr1, rec1 := startTransport(t, 1, map[uint64]string{1: addrs[0]}, PeerSecurity{ClusterID: "c1"})
	tr1.AdmitGuests(6)
	tr2, _ := startTransport(t, 2, map[uint64]string{1: addrs[0], 2: addrs[1]}, PeerSecurity{ClusterID: "c1"})
	has := func(group uint64, channel uint16) bool {
		rec1.mu.Lock()
		defer rec1.mu.Unlock()
		for _, m := range rec1.msgs {
			if m.Group == group && m.Channel == channel {
				return true
			}
		}
		return false
	}
	send := func() {
		tr2.Send(1, []WireMsg{{Channel: 6, Data: []byte("question")}, {Channel: 7, Data: []byte("other")},
			{Group: 5, Data: []byte("raft")}})
	}
	waitFor(t, 5*time.Second, "the guest's admitted notice", func() bool { send(); return has(0, 6) })
	time.Sleep(50 * time.Millisecond)
	if has(0, 7) || has(5, 0) {
		t.Fatal("a guest's message on a channel not admitted, or a Raft message, arrived")
	}
	rec1.mu.Lock()
	up := rec1.up[2]
	rec1.mu.Unlock()
	if up {
		t.Fatal("a guest was reported up")
	}
	tr1.SetPeer(2, addrs[1])
	waitFor(t, 10*time.Second, "node 2 served as a peer after SetPeer", func() bool { send(); return has(5, 0) })
	rec1.mu.Lock()
	up = rec1.up[2]
	rec1.mu.Unlock()
	if !up {
		t.Fatal("node 2 not reported up once it is a peer")
	}

	// Without AdmitGuests (or with an empty list), strangers are refused.
	tr1.AdmitGuests()
	tr3, _ := startTransport(t, 3, map[uint64]string{1: addrs[0], 3: freeAddrs(t, 1)[0]}, PeerSecurity{ClusterID: "c1"})
	refused := tr1.RefusedPeers()[RefusedUnknownNode]
	waitFor(t, 5*time.Second, "a stranger refused once guests are no longer admitted", func() bool {
		tr3.Send(1, []WireMsg{{Channel: 6, Data: []byte("q")}})
		return tr1.RefusedPeers()[RefusedUnknownNode] > refused
	})
}
