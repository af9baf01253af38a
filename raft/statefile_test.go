package raft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clog "github.com/chronik-dev/chronik/log"
)

// soloNode is a one-voter group on a host of its own, on real files.
type soloNode struct {
	t    *testing.T
	dir  string
	host *Host
	rep  *Replica
	sm   *listSM
}

func openSolo(t *testing.T, dir string) (*soloNode, error) {
	t.Helper()
	h, err := NewHost(Config{ID: 1, Transport: NewMemNetwork().Transport(1), TickInterval: 10 * time.Millisecond,
		ElectionTicks: 10, HeartbeatTicks: 1, Fsync: FsyncAlways, LagTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	sm := &listSM{}
	r, err := h.AddReplica(ReplicaConfig{Group: 7, Name: "g7", Dir: dir, Peers: []uint64{1}, SM: sm,
		SnapshotEntries: 1 << 20, Log: clog.Options{SegmentBytes: 1 << 20}})
	if err != nil {
		h.Close()
		return nil, err
	}
	n := &soloNode{t: t, dir: dir, host: h, rep: r, sm: sm}
	t.Cleanup(func() { h.Close() })
	return n, nil
}

// lead waits until the node leads and proposes cmds, committed.
func (n *soloNode) propose(cmds ...string) {
	n.t.Helper()
	n.rep.Campaign()
	waitFor(n.t, 5*time.Second, "solo leader", func() bool { s := n.rep.Status(); return s.IsLeader() && s.LeaderReady })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range cmds {
		if _, err := n.rep.Propose(ctx, clog.KindCommand, []byte(c), true); err != nil {
			n.t.Fatal(err)
		}
	}
}

func (n *soloNode) close() {
	n.t.Helper()
	if err := n.host.Close(); err != nil {
		n.t.Fatal(err)
	}
}

// TestDamagedStateRefusesToStart: a state file with no valid slot, or none
// at all next to a log with entries, stops the replica with an error that
// says what to do; it is never taken for a new replica (term 0, no vote).
func TestDamagedStateRefusesToStart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for i := range b {
				b[i] ^= 0x5a
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"missing", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "g7")
			n, err := openSolo(t, dir)
			if err != nil {
				t.Fatal(err)
			}
			n.propose("a", "b", "c")
			n.close()
			tc.damage(t, filepath.Join(dir, stateFile))
			_, err = openSolo(t, dir)
			if !errors.Is(err, ErrStateDamaged) {
				t.Fatalf("reopen after damage: %v, want ErrStateDamaged", err)
			}
			if !strings.Contains(err.Error(), "delete the directory") {
				t.Fatalf("error does not say what to do: %v", err)
			}
		})
	}
}

// TestTornStateSlotFallsBack: a torn write of the newer slot leaves the
// older one, whose term is kept.
func TestTornStateSlotFallsBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g7")
	n, err := openSolo(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	n.propose("a")
	term := n.rep.Status().Term
	seq := n.rep.st.seq
	n.close()
	path := filepath.Join(dir, stateFile)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Tear the slot written last: its checksum no longer matches.
	if _, err := f.WriteAt([]byte("torn"), int64(seq%2)*stateSlot+20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n2, err := openSolo(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := n2.rep.st.hs.GetTerm(); got == 0 || got > term {
		t.Fatalf("term after a torn slot: %d (was %d)", got, term)
	}
	n2.propose("b")
	if got := n2.sm.list(); fmt.Sprint(got) != "[a b]" {
		t.Fatalf("state after restart: %v", got)
	}
}

// TestStateFilesPrivate: state, snapshot and directory are owner-only.
func TestStateFilesPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g7")
	n, err := openSolo(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	n.propose("a")
	n.rep.enqueue(func() {
		n.rep.inOps = append(n.rep.inOps, func() {
			if err := n.rep.snapshotNow(); err != nil {
				t.Error(err)
			}
		})
	})
	waitFor(t, 5*time.Second, "snapshot", func() bool { _, err := os.Stat(filepath.Join(dir, "snapshot")); return err == nil })
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, stateFile): 0o600, filepath.Join(dir, "snapshot"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
}

// tearLogTail cuts the last bytes off the newest segment, as a crash in
// the middle of a write leaves it.
func tearLogTail(t *testing.T, dir string, n int64) {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segments in %s: %v", dir, err)
	}
	last := segs[len(segs)-1]
	st, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, st.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// TestCommitBeyondTornTail: the stored commit index covers an entry whose
// frame a crash tore; startup cuts the frame, and the replica must start
// (etcd raft panics on a commit beyond the log) with everything before it.
func TestCommitBeyondTornTail(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g7")
	n, err := openSolo(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	n.propose("a", "b", "c")
	last := n.rep.Status().LastIndex
	n.close()
	tearLogTail(t, dir, 3)
	n2, err := openSolo(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	s := n2.rep.Status()
	if s.LastIndex != last-1 || s.Commit > s.LastIndex {
		t.Fatalf("after a torn tail: last %d commit %d (last before %d)", s.LastIndex, s.Commit, last)
	}
	// Everything before the torn entry is applied again; the group goes on.
	waitFor(t, 5*time.Second, "replay", func() bool { return len(n2.sm.list()) == 2 })
	n2.propose("d")
	if got := n2.sm.list(); fmt.Sprint(got) != "[a b d]" {
		t.Fatalf("state after restart: %v", got)
	}
}
