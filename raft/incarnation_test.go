package raft

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// TestRetiredIncarnation runs a two-voter group over real TCP, retires
// node 2's incarnation on node 1: its messages are dropped and counted,
// and a restart with the same incarnation is refused; node 2 with a new
// disk (incarnation) is taken, and the group commits again.
func TestRetiredIncarnation(t *testing.T) {
	root := t.TempDir()
	addrs := freeAddrs(t, 2)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1]}
	var mu sync.Mutex
	stated := map[uint64]uint64{}
	start := func(id, inc uint64, dir string, joining bool) (*Host, *TCPTransport, *Replica) {
		tr := NewTCPTransport(id, peers[id], peers, nil)
		h, err := NewHost(Config{ID: id, Transport: tr, TickInterval: 10 * time.Millisecond, ElectionTicks: 10,
			HeartbeatTicks: 1, Incarnation: inc, StateDir: filepath.Join(dir, "state"),
			OnPeerIncarnation: func(peer, inc uint64) {
				mu.Lock()
				stated[peer] = inc
				mu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		r, err := h.AddReplica(ReplicaConfig{Group: 5, Name: "g5", Dir: filepath.Join(dir, "g5"), Peers: []uint64{1, 2}, SM: &listSM{}, Joining: joining})
		if err != nil {
			t.Fatal(err)
		}
		return h, tr, r
	}
	h1, tr1, r1 := start(1, 11, filepath.Join(root, "1"), false)
	defer h1.Close()
	h2, _, _ := start(2, 22, filepath.Join(root, "2a"), false)
	r1.Campaign()
	propose := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, err := r1.Propose(ctx, clog.KindCommand, []byte("x"), true)
		return err
	}
	waitFor(t, 10*time.Second, "node 1 to lead and commit", func() bool { return r1.Status().IsLeader() && propose(time.Second) == nil })
	if got := h1.PeerIncarnation(2); got != 22 {
		t.Fatalf("node 1 sees incarnation %d of node 2, want 22", got)
	}
	mu.Lock()
	if stated[2] != 22 {
		t.Fatalf("OnPeerIncarnation told %d", stated[2])
	}
	mu.Unlock()

	h1.SetRetiredIncarnation(2, 22)
	waitFor(t, 5*time.Second, "messages from the retired incarnation dropped", func() bool { return h1.RetiredMessages() > 0 })
	if err := propose(300 * time.Millisecond); err == nil {
		t.Fatal("committed with the acks of a retired incarnation")
	}
	h2.Close()
	h2, _, _ = start(2, 22, filepath.Join(root, "2a"), false)
	waitFor(t, 5*time.Second, "the retired incarnation refused", func() bool { return tr1.RefusedPeers()[RefusedIncarnation] > 0 })
	h2.Close()

	// Node 2 with a new disk: joining, a new incarnation.
	h2, _, r2 := start(2, 33, filepath.Join(root, "2b"), true)
	defer h2.Close()
	waitFor(t, 5*time.Second, "the new incarnation stated", func() bool { return h1.PeerIncarnation(2) == 33 })
	waitFor(t, 5*time.Second, "the new node 2 up at node 1", func() bool { return h1.PeerAlive(2) })
	if !r2.Status().Gagged {
		t.Fatal("the new node 2 is not gagged")
	}
	// Node 1 stepped down without node 2's acks, and a gagged node 2
	// votes for nobody: in a group of two only the broker's word
	// (Ungag) brings a leader back. Node 1, holding the log, wins.
	if err := r2.Ungag(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a commit with the new incarnation", func() bool {
		return r1.Status().IsLeader() && propose(time.Second) == nil
	})
	t.Logf("dropped %d messages of the retired incarnation; refused %d connections", h1.RetiredMessages(), tr1.RefusedPeers()[RefusedIncarnation])
}

// TestTransportSetPeer adds a peer to a running transport (its hello is
// refused before and taken after), then removes it.
func TestTransportSetPeer(t *testing.T) {
	addrs := freeAddrs(t, 2)
	tr1, rec1 := startTransport(t, 1, map[uint64]string{1: addrs[0]}, PeerSecurity{ClusterID: "c1"})
	tr2, rec2 := startTransport(t, 2, map[uint64]string{1: addrs[0], 2: addrs[1]}, PeerSecurity{ClusterID: "c1"})
	// Node 2 redials when a write fails on the refused connection, as
	// its pings would make it.
	ping := func() bool { tr2.Send(1, []WireMsg{{Channel: 7, Data: []byte("ping")}}); return false }
	waitFor(t, 5*time.Second, "the unknown node refused", func() bool { ping(); return tr1.RefusedPeers()[RefusedUnknownNode] > 0 })
	tr1.SetPeer(2, addrs[1])
	waitFor(t, 10*time.Second, "node 2 taken after SetPeer", func() bool {
		ping()
		rec1.mu.Lock()
		defer rec1.mu.Unlock()
		return rec1.up[2]
	})
	tr1.Send(2, []WireMsg{{Channel: 7, Data: []byte("hi")}})
	waitFor(t, 5*time.Second, "node 1's message at node 2", func() bool { return rec2.count() > 0 })
	tr1.RemovePeer(2)
	refused := tr1.RefusedPeers()[RefusedUnknownNode]
	waitFor(t, 10*time.Second, "node 2 refused again", func() bool { ping(); return tr1.RefusedPeers()[RefusedUnknownNode] > refused })
	n := rec2.count()
	tr1.Send(2, []WireMsg{{Channel: 7, Data: []byte("gone")}})
	time.Sleep(100 * time.Millisecond)
	if rec2.count() != n {
		t.Fatal("a removed peer still gets messages")
	}
}
