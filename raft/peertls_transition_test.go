package raft

import (
	"testing"
	"time"

	"github.com/chronik-dev/chronik/internal/testpki"
)

// TestPeerTLSTransition: a node in the transition mode (AcceptPlaintext)
// exchanges messages both ways with a plaintext node and with a TLS-only
// node, as during a rolling switch to TLS; a TLS-only node still refuses
// the plaintext one.
func TestPeerTLSTransition(t *testing.T) {
	ca, err := testpki.NewCA("peers")
	if err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 3)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	mixed, r1 := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1", TLS: peerTLS(t, ca, 1), AcceptPlaintext: true})
	plain, r2 := startTransport(t, 2, peers, PeerSecurity{ClusterID: "c1"})
	strict, r3 := startTransport(t, 3, peers, PeerSecurity{ClusterID: "c1", TLS: peerTLS(t, ca, 3)})

	sendUntilArrives(t, mixed, 2, r2) // TLS refused by the plaintext node, then plaintext
	sendUntilArrives(t, plain, 1, r1) // a plaintext hello to the mixed node
	sendUntilArrives(t, mixed, 3, r3) // TLS
	sendUntilArrives(t, strict, 1, r1)

	refusedBefore, delivered := strict.RefusedPeers()[RefusedTLS], r3.count()
	for i := 0; strict.RefusedPeers()[RefusedTLS] == refusedBefore; i++ {
		if i == 50 {
			t.Fatal("the TLS-only node did not refuse the plaintext one")
		}
		plain.Send(3, []WireMsg{{Group: 1, Channel: 3, Data: []byte("x")}})
		time.Sleep(100 * time.Millisecond)
	}
	if r3.count() != delivered {
		t.Fatal("a plaintext message reached the TLS-only node")
	}
	if plain.RefusedPeers()[RefusedHello] == 0 {
		t.Error("the plaintext node counted no refused TLS hello from the mixed one")
	}
}
