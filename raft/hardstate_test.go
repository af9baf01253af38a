package raft

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	clog "github.com/chronik-dev/chronik/log"
)

func openTestStates(t *testing.T, dir string) *hardStateLog {
	t.Helper()
	s, err := openHardStateLog(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

func putState(t *testing.T, s *hardStateLog, group, term, vote uint64) {
	t.Helper()
	rec, err := stateRecord(group, &pb.HardState{Term: new(term), Vote: new(vote)}, &pb.ConfState{Voters: []uint64{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.commit(rec); err != nil {
		t.Fatal(err)
	}
}

// termVote returns group's stored term and vote (0, 0 when absent).
func termVote(t *testing.T, s *hardStateLog, group uint64) (term, vote uint64, found bool) {
	t.Helper()
	hs, _, found, err := s.get(group)
	if err != nil {
		t.Fatal(err)
	}
	return hs.GetTerm(), hs.GetVote(), found
}

// TestHardStateLogReopen: what was committed comes back, removed groups
// stay removed, and compaction keeps the file small without losing any.
func TestHardStateLogReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTestStates(t, dir)
	s.compactFloor = 4096
	for term := uint64(1); term <= 50; term++ {
		for g := uint64(1); g <= 20; g++ {
			putState(t, s, g, term, g%3+1)
		}
	}
	if err := s.remove(7); err != nil {
		t.Fatal(err)
	}
	if s.size > 2*s.compactFloor+int64(4*s.live) {
		t.Fatalf("file is %d bytes for %d live bytes: never compacted", s.size, s.live)
	}
	s.close()
	s2 := openTestStates(t, dir)
	for g := uint64(1); g <= 20; g++ {
		term, vote, found := termVote(t, s2, g)
		if g == 7 {
			if found {
				t.Fatalf("removed group 7 came back: term %d", term)
			}
			continue
		}
		if term != 50 || vote != g%3+1 {
			t.Fatalf("group %d: term %d vote %d, want 50 and %d", g, term, vote, g%3+1)
		}
	}
}

// TestHardStateLogGroupCommit: concurrent commits share frames, and each
// caller's records are durable when it returns.
func TestHardStateLogGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s := openTestStates(t, dir)
	var wg sync.WaitGroup
	for w := uint64(0); w < 8; w++ {
		wg.Go(func() {
			for term := uint64(1); term <= 20; term++ {
				putState(t, s, w, term, w)
			}
		})
	}
	wg.Wait()
	if s.seq >= 8*20 {
		t.Logf("no commit shared a frame (%d frames)", s.seq)
	}
	s.close()
	s2 := openTestStates(t, dir)
	for w := uint64(0); w < 8; w++ {
		if term, vote, _ := termVote(t, s2, w); term != 20 || vote != w {
			t.Fatalf("group %d: term %d vote %d", w, term, vote)
		}
	}
}

// writeFrames commits a few frames and returns the file's path and the
// offset where its last frame starts.
func writeFrames(t *testing.T, dir string) (path string, lastAt int64) {
	t.Helper()
	s := openTestStates(t, dir)
	for term := uint64(1); term <= 3; term++ {
		lastAt = s.size
		putState(t, s, 1, term, 2)
	}
	s.close()
	return filepath.Join(dir, hardStateFile), lastAt
}

// TestHardStateLogTornTail: a torn last frame (cut short, or its bytes not
// written) falls back to the frame before it, and is cut off so later
// frames follow good ones.
func TestHardStateLogTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tear func(t *testing.T, path string, lastAt int64)
	}{
		{"cut", func(t *testing.T, path string, lastAt int64) {
			if err := os.Truncate(path, lastAt+15); err != nil {
				t.Fatal(err)
			}
		}},
		{"zeroed", func(t *testing.T, path string, lastAt int64) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			clear(b[lastAt+4:])
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"zeros-appended", func(t *testing.T, path string, lastAt int64) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write(make([]byte, 4096)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path, lastAt := writeFrames(t, dir)
			tc.tear(t, path, lastAt)
			s := openTestStates(t, dir)
			want := uint64(2)
			if tc.name == "zeros-appended" {
				want = 3
			}
			if term, _, _ := termVote(t, s, 1); term != want {
				t.Fatalf("term after a torn tail: %d, want %d", term, want)
			}
			putState(t, s, 1, 9, 3)
			s.close()
			s2 := openTestStates(t, dir)
			if term, vote, _ := termVote(t, s2, 1); term != 9 || vote != 3 {
				t.Fatalf("after writing past a torn tail: term %d vote %d", term, vote)
			}
		})
	}
}

// TestHardStateLogDamage: a bad frame with a good one after it is not a
// torn write: the store refuses to open and says what to do.
func TestHardStateLogDamage(t *testing.T) {
	dir := t.TempDir()
	path, lastAt := writeFrames(t, dir)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[lastAt-3] ^= 0x40 // inside the second frame's records
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = openHardStateLog(dir, slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrStateDamaged) {
		t.Fatalf("open after damage in the middle: %v, want ErrStateDamaged", err)
	}
	if !strings.Contains(err.Error(), "restore its data directory from a backup") {
		t.Fatalf("error does not say what to do: %v", err)
	}
	// And the file is left as it was, for whoever investigates.
	if after, _ := os.ReadFile(path); len(after) != len(b) {
		t.Fatalf("damaged file changed: %d bytes, was %d", len(after), len(b))
	}
}

// TestHardStateLogFilePrivate: the file is owner-only.
func TestHardStateLogFilePrivate(t *testing.T) {
	dir := t.TempDir()
	s := openTestStates(t, dir)
	putState(t, s, 1, 1, 1)
	st, err := os.Stat(filepath.Join(dir, hardStateFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, hardStateFile+".tmp")); err == nil {
		t.Fatal("temporary file left behind")
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

// TestMigrateReplicaStateFile: a replica directory written by the
// per-replica code path (its own raft-state file) opens on a host with the
// node's hard-state file with the same term, vote and configuration; the
// old file goes once the state is in the new one.
func TestMigrateReplicaStateFile(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "g7")
	old, err := openSolo(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	old.propose("a", "b")
	hs, cs := old.rep.st.hs, old.rep.st.cs
	old.close()
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err != nil {
		t.Fatalf("the old code path wrote no raft-state file: %v", err)
	}
	n := openSoloNodeHook(t, root, nil)
	if got := n.rep.st.hs; got.GetTerm() != hs.GetTerm() || got.GetVote() != hs.GetVote() || got.GetVote() == 0 {
		t.Fatalf("after the move: term %d vote %d, was term %d vote %d", got.GetTerm(), got.GetVote(), hs.GetTerm(), hs.GetVote())
	}
	if got := n.rep.st.cs.GetVoters(); fmt.Sprint(got) != fmt.Sprint(cs.GetVoters()) {
		t.Fatalf("voters after the move %v, were %v", got, cs.GetVoters())
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old raft-state file still there: %v", err)
	}
	waitFor(t, 5*time.Second, "replay", func() bool { return len(n.sm.list()) == 2 })
	n.propose("c")
	term := n.rep.Status().Term
	n.close()
	n2 := openSoloNodeHook(t, root, nil)
	if got := n2.rep.st.hs.GetTerm(); got < term {
		t.Fatalf("term after a second restart %d, was %d", got, term)
	}
	waitFor(t, 5*time.Second, "replay", func() bool { return len(n2.sm.list()) == 3 })
	if got := fmt.Sprint(n2.sm.list()); got != "[a b c]" {
		t.Fatalf("state after restarts: %v", got)
	}
}

// TestLostHardStateFileRefusesToStart: with the node's file gone, a
// replica whose log has entries must not start as new (term 0, no vote).
func TestLostHardStateFileRefusesToStart(t *testing.T) {
	root := t.TempDir()
	n := openSoloNodeHook(t, root, nil)
	n.propose("a")
	n.close()
	if err := os.Remove(filepath.Join(root, hardStateFile)); err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(Config{ID: 1, Transport: NewMemNetwork().Transport(1), StateDir: root})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_, err = h.OpenReplica(ReplicaConfig{Group: 7, Name: "g7", Dir: filepath.Join(root, "g7"), Peers: []uint64{1}, SM: &listSM{}})
	if !errors.Is(err, ErrStateDamaged) || !strings.Contains(err.Error(), "delete the directory") {
		t.Fatalf("open without its state: %v, want ErrStateDamaged saying what to do", err)
	}
}

// TestRemoveReplicaForgetsState: deleting a group deletes its hard state
// with its directory; the other groups keep theirs.
func TestRemoveReplicaForgetsState(t *testing.T) {
	root := t.TempDir()
	h, err := NewHost(Config{ID: 1, Transport: NewMemNetwork().Transport(1), TickInterval: 10 * time.Millisecond, StateDir: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for g := uint64(1); g <= 2; g++ {
		r, err := h.AddReplica(ReplicaConfig{Group: g, Name: fmt.Sprint("g", g), Dir: filepath.Join(root, fmt.Sprint("g", g)), Peers: []uint64{1}, SM: &listSM{}})
		if err != nil {
			t.Fatal(err)
		}
		r.Campaign()
		waitFor(t, 5*time.Second, "leader", func() bool { return r.Status().IsLeader() })
	}
	if err := h.RemoveReplica(1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "g1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directory of the removed group: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	s := openTestStates(t, root)
	if _, _, found := termVote(t, s, 1); found {
		t.Fatal("removed group's state still stored")
	}
	if term, vote, found := termVote(t, s, 2); !found || term == 0 || vote != 1 {
		t.Fatalf("other group's state: term %d vote %d found %v", term, vote, found)
	}
}

// TestManyIdleGroupsWriteNothing: a thousand groups that lead and sit idle
// write no hard state, and the file holds one small record each.
func TestManyIdleGroupsWriteNothing(t *testing.T) {
	const groups = 1000
	root := t.TempDir()
	h, err := NewHost(Config{ID: 1, Transport: NewMemNetwork().Transport(1), TickInterval: 10 * time.Millisecond,
		Fsync: FsyncInterval, StateDir: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	start := time.Now()
	var reps []*Replica
	for g := uint64(1); g <= groups; g++ {
		r, err := h.AddReplica(ReplicaConfig{Group: g, Name: fmt.Sprint("g", g), Dir: filepath.Join(root, fmt.Sprint("g", g)),
			Peers: []uint64{1}, SM: &listSM{}, Log: clog.Options{SegmentBytes: 64 << 10}})
		if err != nil {
			t.Fatal(err)
		}
		r.Campaign()
		reps = append(reps, r)
	}
	opened := time.Since(start)
	waitFor(t, 30*time.Second, "every group leading and quiet", func() bool {
		for _, r := range reps {
			if !r.Status().LeaderReady || !r.quiesced.Load() {
				return false
			}
		}
		return true
	})
	h.states.mu.Lock()
	frames, size := h.states.seq, h.states.size
	h.states.mu.Unlock()
	time.Sleep(500 * time.Millisecond) // idle: nothing may be written meanwhile
	h.states.mu.Lock()
	after := h.states.seq
	h.states.mu.Unlock()
	if after != frames {
		t.Fatalf("%d frames written by %d idle groups in 500ms", after-frames, groups)
	}
	if per := size / groups; per > 200 {
		t.Fatalf("hard-state file %d bytes for %d groups", size, groups)
	}
	t.Logf("%d groups: opened in %v, %d frames, file %d bytes", groups, opened, frames, size)
}

// TestHardStateFsyncFailureRecovers: a failed write or fsync of the node's
// file fails the replicas whose records it carried (never ignored); while
// it keeps failing they stay failed, and once it works again a recovery
// rewrites the file and they go on with their terms.
func TestHardStateFsyncFailureRecovers(t *testing.T) {
	root := t.TempDir()
	var failing atomic.Bool
	var failedCalls atomic.Int32
	n := openSoloNodeHook(t, root, func(string) error {
		if failing.Load() {
			failedCalls.Add(1)
			return errInjected
		}
		return nil
	})
	n.propose("a")
	term := n.rep.Status().Term
	failing.Store(true)
	n.stepDown() // a new term: its record's fsync fails
	waitFor(t, 5*time.Second, "the replica to fail", func() bool { return n.rep.Status().Failed })
	seen := failedCalls.Load()
	waitFor(t, 10*time.Second, "a recovery attempt", func() bool { return failedCalls.Load() > seen })
	if !n.rep.Status().Failed {
		t.Fatal("recovered while the file still fails")
	}
	failing.Store(false)
	waitFor(t, 10*time.Second, "recovery", func() bool { return !n.rep.Status().Failed })
	n.propose("b")
	led := n.rep.Status().Term
	if led <= term {
		t.Fatalf("term after recovery %d, was %d", led, term)
	}
	n.close()
	n2 := openSoloNodeHook(t, root, nil)
	if got := n2.rep.st.hs.GetTerm(); got < led {
		t.Fatalf("term after restart %d, led in %d", got, led)
	}
	waitFor(t, 5*time.Second, "replay", func() bool { return len(n2.sm.list()) == 2 })
	if got := fmt.Sprint(n2.sm.list()); got != "[a b]" {
		t.Fatalf("state after restart: %v", got)
	}
}
