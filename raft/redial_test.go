package raft

import (
	"testing"
	"time"
)

// recvHandler records when messages and peers arrive.
type recvHandler struct {
	got chan time.Time
	up  chan uint64
}

func (h *recvHandler) Receive(from uint64, msgs []WireMsg) {
	select {
	case h.got <- time.Now():
	default:
	}
}
func (h *recvHandler) PeerDown(uint64, bool) {}
func (h *recvHandler) PeerUp(id uint64) {
	select {
	case h.up <- id:
	default:
	}
}

// A peer that connects to us is up: our redial back-off towards it ends
// at once, instead of leaving what we send it queued for up to a second
// (a restarted node's leaders reached it 0.3 s after it reached them).
func TestInboundHelloEndsRedialBackoff(t *testing.T) {
	addrs := freeAddrs(t, 2)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1]}
	h1 := &recvHandler{got: make(chan time.Time, 1), up: make(chan uint64, 1)}
	tr1 := NewTCPTransport(1, addrs[0], peers, nil)
	if err := tr1.Start(h1); err != nil {
		t.Fatal(err)
	}
	defer tr1.Close()
	// Node 2 is down: node 1's redials back off 20, 40, ... 640 ms (1.26 s
	// in all), then wait a whole second. Node 2 comes back in that second.
	time.Sleep(1350 * time.Millisecond)
	h2 := &recvHandler{got: make(chan time.Time, 1), up: make(chan uint64, 1)}
	tr2 := NewTCPTransport(2, addrs[1], peers, nil)
	if err := tr2.Start(h2); err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	select {
	case <-h1.up: // node 2 dialled node 1
	case <-time.After(5 * time.Second):
		t.Fatal("node 2 never connected to node 1")
	}
	sent := time.Now()
	tr1.Send(2, []WireMsg{{Group: 7, Data: []byte("hello")}})
	select {
	case at := <-h2.got:
		if d := at.Sub(sent); d > 300*time.Millisecond {
			t.Fatalf("node 1's message reached node 2 after %v: its back-off outlived node 2's return", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("node 1's message never reached node 2")
	}
}
