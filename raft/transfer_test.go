package raft

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	etcdraft "go.etcd.io/raft/v3"
)

// TestParallelTransfersUnderLoad moves the leadership of 30 groups at once
// while they take proposals, over real TCP, as a graceful shutdown does:
// with a raft-state file per replica and with the node's one file.
func TestParallelTransfersUnderLoad(t *testing.T) {
	t.Run("replica-files", func(t *testing.T) { parallelTransfers(t, false) })
	t.Run("node-file", func(t *testing.T) { parallelTransfers(t, true) })
}

func parallelTransfers(t *testing.T, nodeFile bool) {
	root := t.TempDir()
	var addrs []string
	for i := 0; i < 3; i++ {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	peers := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	hosts := map[uint64]*Host{}
	reps := map[uint64]map[uint64]*Replica{}
	for id := uint64(1); id <= 3; id++ {
		tr := NewTCPTransport(id, peers[id], peers, nil)
		cfg := Config{ID: id, Transport: tr, Fsync: FsyncInterval}
		if nodeFile {
			cfg.StateDir = filepath.Join(root, fmt.Sprint(id))
		}
		h, err := NewHost(cfg)
		if err != nil {
			t.Fatal(err)
		}
		h.Start()
		hosts[id] = h
		reps[id] = map[uint64]*Replica{}
		for g := uint64(10); g < 40; g++ {
			ps := []uint64{1 + g%3, 1 + (g+1)%3, 1 + (g+2)%3}
			r, err := h.AddReplica(ReplicaConfig{Group: g, Name: fmt.Sprint("g", g), Dir: filepath.Join(root, fmt.Sprint(id), fmt.Sprint(g)), Peers: ps, SM: &listSM{}})
			if err != nil {
				t.Fatal(err)
			}
			reps[id][g] = r
			if ps[0] == id {
				r.Campaign()
			}
		}
	}
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	waitFor(t, 10*time.Second, "leaders", func() bool {
		for g := uint64(10); g < 40; g++ {
			s := reps[1][g].Status()
			if s.Leader == 0 {
				return false
			}
			if rr := reps[s.Leader][g].Status(); !rr.LeaderReady {
				return false
			}
		}
		return true
	})
	// Move every group to node 1 first.
	for g := uint64(10); g < 40; g++ {
		// A loaded machine may have lost a leader since: wait for one.
		var s *Status
		waitFor(t, 10*time.Second, "a leader", func() bool {
			s = reps[1][g].Status()
			return s.Leader != 0
		})
		if s.Leader != 1 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := reps[s.Leader][g].TransferLeadership(ctx, 1); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
	}
	waitFor(t, 10*time.Second, "ready", func() bool {
		for g := uint64(10); g < 40; g++ {
			if !reps[1][g].Status().LeaderReady {
				return false
			}
		}
		return true
	})
	stop := make(chan struct{})
	var lwg sync.WaitGroup
	for g := uint64(10); g < 40; g++ {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				reps[1][g].Propose(ctx, 4, make([]byte, 1000), true)
				cancel()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Second)
	defer func() { close(stop); lwg.Wait() }()
	var mu sync.Mutex
	var ds []time.Duration
	var wg sync.WaitGroup
	for g := uint64(10); g < 40; g++ {
		r := reps[1][g]
		if r.Status().State != etcdraft.StateLeader {
			continue
		}
		to := uint64(2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st := time.Now()
			if err := r.TransferLeadership(ctx, to); err != nil {
				t.Error(err)
			}
			mu.Lock()
			ds = append(ds, time.Since(st))
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	if len(ds) != 30 {
		t.Fatalf("%d transfers completed, want 30", len(ds))
	}
	t.Logf("30 parallel transfers: fastest %v, median %v, slowest %v", ds[0], ds[len(ds)/2], ds[len(ds)-1])
}

// TestVotersSyncWhileCandidateSyncs: a transfer target asks for votes
// while its new term and vote are being fsynced, so the voters' fsyncs run
// alongside its own and a transfer waits on one fsync's time, not two in a
// row. The target's fsync is held until a voter reaches its own; had the
// vote requests waited for the target's fsync, no voter would get there.
func TestVotersSyncWhileCandidateSyncs(t *testing.T) {
	net := NewMemNetwork()
	root := t.TempDir()
	ids := []uint64{1, 2, 3}
	var armed, timedOut atomic.Bool
	var target atomic.Uint64
	voterAt := make(chan struct{})
	var voterOnce, targetOnce sync.Once
	hosts := map[uint64]*Host{}
	reps := map[uint64]*Replica{}
	for _, id := range ids {
		h, err := NewHost(Config{ID: id, Transport: net.Transport(id), TickInterval: 10 * time.Millisecond,
			ElectionTicks: 10, HeartbeatTicks: 1, Fsync: FsyncAlways, StateDir: filepath.Join(root, fmt.Sprint(id))})
		if err != nil {
			t.Fatal(err)
		}
		h.states.hook = func(point string) error {
			if point != "hardstate-fsync" || !armed.Load() {
				return nil
			}
			if id != target.Load() {
				voterOnce.Do(func() { close(voterAt) })
				return nil
			}
			targetOnce.Do(func() {
				select {
				case <-voterAt:
				case <-time.After(3 * time.Second):
					timedOut.Store(true)
				}
			})
			return nil
		}
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { armed.Store(false); h.Close() })
		for _, o := range ids {
			h.PeerUp(o)
		}
		r, err := h.AddReplica(ReplicaConfig{Group: 7, Name: "g7", Dir: filepath.Join(root, fmt.Sprint(id), "g7"), Peers: ids, SM: &listSM{}})
		if err != nil {
			t.Fatal(err)
		}
		hosts[id], reps[id] = h, r
	}
	var lead uint64
	waitFor(t, 5*time.Second, "a ready leader", func() bool {
		for id, r := range reps {
			if s := r.Status(); s.IsLeader() && s.LeaderReady {
				lead = id
				return true
			}
		}
		return false
	})
	to := lead%3 + 1
	target.Store(to)
	armed.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := reps[lead].TransferLeadership(ctx, to); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	armed.Store(false)
	if timedOut.Load() {
		t.Fatalf("no voter fsynced its vote while the target's term and vote were being fsynced (transfer took %v)", took)
	}
	t.Logf("transfer took %v", took)
}

// TestTransferEndsWhileOldLeaderSyncsItsVote: the old leader's fsync of its
// vote for the target is held; the target wins with the third node's vote
// (whose fsync waits until the old leader's is held), and the transfer ends
// when its first append reaches the old leader, not when the old leader's
// replica gets out of its fsync round.
func TestTransferEndsWhileOldLeaderSyncsItsVote(t *testing.T) {
	net := NewMemNetwork()
	root := t.TempDir()
	ids := []uint64{1, 2, 3}
	var old, third atomic.Uint64
	var held atomic.Bool
	heldCh := make(chan struct{})
	var heldOnce sync.Once
	release := make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	reps := map[uint64]*Replica{}
	for _, id := range ids {
		h, err := NewHost(Config{ID: id, Transport: net.Transport(id), TickInterval: 10 * time.Millisecond,
			ElectionTicks: 10, HeartbeatTicks: 1, Fsync: FsyncInterval, StateDir: filepath.Join(root, fmt.Sprint(id))})
		if err != nil {
			t.Fatal(err)
		}
		h.states.hook = func(point string) error {
			if point != "hardstate-fsync" {
				return nil
			}
			switch id {
			case old.Load():
				held.Store(true)
				heldOnce.Do(func() { close(heldCh) })
				select {
				case <-release:
				case <-time.After(5 * time.Second):
				}
			case third.Load():
				select {
				case <-heldCh:
				case <-time.After(5 * time.Second):
				}
			}
			return nil
		}
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			releaseOnce.Do(func() { close(release) })
			h.Close()
		})
		for _, o := range ids {
			h.PeerUp(o)
		}
		r, err := h.AddReplica(ReplicaConfig{Group: 7, Name: "g7", Dir: filepath.Join(root, fmt.Sprint(id), "g7"), Peers: ids, SM: &listSM{}})
		if err != nil {
			t.Fatal(err)
		}
		reps[id] = r
	}
	var lead uint64
	waitFor(t, 5*time.Second, "a ready leader", func() bool {
		for id, r := range reps {
			if s := r.Status(); s.IsLeader() && s.LeaderReady {
				lead = id
				return true
			}
		}
		return false
	})
	to := lead%3 + 1
	third.Store(to%3 + 1)
	old.Store(lead)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := reps[lead].TransferLeadership(ctx, to); err != nil {
		t.Fatalf("transfer while the old leader's vote fsync is held: %v", err)
	}
	took := time.Since(start)
	if !held.Load() {
		t.Fatalf("the old leader never fsynced a vote (transfer took %v)", took)
	}
	if s := reps[to].Status(); !s.IsLeader() {
		t.Fatalf("transfer reported done but node %d is %v", to, s.StateName())
	}
	releaseOnce.Do(func() { close(release) })
	waitFor(t, 5*time.Second, "the old leader to follow the new one", func() bool {
		s := reps[lead].Status()
		return !s.IsLeader() && s.Leader == to
	})
	t.Logf("transfer took %v", took)
}
