package raft

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// TestSlowFsyncDoesNotHoldWorker: one group's fsync hangs (a slow disk
// under one log); another group on the same node, with the node's only
// worker, still commits. The sync round runs off the worker (worker.go,
// syncAndFinish); before, the worker slept in the hung fsync and every
// group of the node waited for it, a leadership transfer included.
func TestSlowFsyncDoesNotHoldWorker(t *testing.T) {
	root := t.TempDir()
	net := NewMemNetwork()
	h, err := NewHost(Config{ID: 1, Transport: net.Transport(1), TickInterval: 10 * time.Millisecond,
		ElectionTicks: 10, HeartbeatTicks: 1, Fsync: FsyncAlways, Workers: 1, StateDir: filepath.Join(root, "node")})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var released bool
	unblock := func() {
		if !released {
			released = true
			close(release)
		}
	}
	t.Cleanup(func() { unblock(); h.Close() })
	reps := map[uint64]*Replica{}
	for _, g := range []uint64{1, 2} {
		r, err := h.AddReplica(ReplicaConfig{Group: g, Name: fmt.Sprint("g", g), Dir: filepath.Join(root, fmt.Sprint(g)),
			Peers: []uint64{1}, SM: &listSM{}, Log: clog.Options{SegmentBytes: 4096}})
		if err != nil {
			t.Fatal(err)
		}
		reps[g] = r
	}
	waitFor(t, 5*time.Second, "both groups lead", func() bool {
		return reps[1].Status().IsLeader() && reps[2].Status().IsLeader()
	})
	hung := make(chan struct{}, 1)
	fault := func(r *Replica) error {
		if r == reps[1] {
			select {
			case hung <- struct{}{}:
			default:
			}
			<-release
		}
		return nil
	}
	h.syncFault.Store(&fault)
	defer h.syncFault.Store(nil)
	slow := reps[1].Submit(clog.KindCommand, []byte("slow"))
	select {
	case <-hung:
	case <-time.After(5 * time.Second):
		t.Fatal("group 1 never reached its fsync")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := reps[2].Propose(ctx, clog.KindCommand, []byte("fast"), true); err != nil {
		t.Fatalf("group 2 while group 1's fsync hangs: %v", err)
	}
	select {
	case <-Done(slow):
		t.Fatal("group 1's proposal finished before its fsync returned")
	default:
	}
	unblock()
	if _, err := reps[1].Wait(ctx, slow, true); err != nil {
		t.Fatalf("group 1 after its fsync returned: %v", err)
	}
}
