package raft

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	clog "github.com/chronik-dev/chronik/log"
)

// Crash tests: the test binary runs itself again as a child that works on
// real files and SIGKILLs itself at a named point of the hard-state log
// (hardStateLog.hook), on the point's n-th visit. The child prints each
// state it was told is durable; the parent reopens the files and checks
// that no acknowledged term or vote went backwards.

const (
	crashEnvPoint = "CHRONIK_HS_CRASH_POINT" // point:n
	crashEnvDir   = "CHRONIK_HS_CRASH_DIR"
)

// crashHook kills the process on the n-th visit of point.
func crashHook(spec string) func(string) error {
	point, nstr, _ := strings.Cut(spec, ":")
	n, _ := strconv.Atoi(nstr)
	var mu sync.Mutex
	seen := 0
	return func(p string) error {
		if p != point {
			return nil
		}
		mu.Lock()
		seen++
		hit := seen == n
		mu.Unlock()
		if hit {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		return nil
	}
}

// runCrashChild runs the named child test until it kills itself and
// returns its acknowledgements, one "ack ..." line each.
func runCrashChild(t *testing.T, test, dir, spec string) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvPoint+"="+spec, crashEnvDir+"="+dir)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatalf("child %s did not crash in time: %s", spec, out.String())
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child %s ended with %v, not at the kill point:\n%s", spec, cmd.ProcessState, out.String())
	}
	var acks []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "ack ") {
			acks = append(acks, l)
		}
	}
	return acks
}

// TestHardStateLogCrash: writers in several goroutines raise the terms and
// votes of 64 groups, compacting often; the process dies at each point of a
// write. Everything acknowledged is there after the restart, and the store
// takes writes again.
func TestHardStateLogCrash(t *testing.T) {
	for _, spec := range []string{
		"hardstate-write:40", "hardstate-fsync:40", "hardstate-synced:40",
		"hardstate-compact-written:3", "hardstate-compact-renamed:3",
	} {
		t.Run(spec, func(t *testing.T) {
			dir := t.TempDir()
			acks := runCrashChild(t, "TestHardStateLogCrashChild", dir, spec)
			if len(acks) == 0 {
				t.Fatal("the child acknowledged nothing")
			}
			s := openTestStates(t, dir)
			want := map[uint64][2]uint64{}
			for _, a := range acks {
				var g, term, vote uint64
				if _, err := fmt.Sscanf(a, "ack %d %d %d", &g, &term, &vote); err != nil {
					t.Fatalf("%q: %v", a, err)
				}
				want[g] = [2]uint64{term, vote}
			}
			for g, tv := range want {
				term, vote, found := termVote(t, s, g)
				if !found || term < tv[0] || (term == tv[0] && vote != tv[1]) {
					t.Fatalf("group %d after the crash: term %d vote %d (found %v); acknowledged term %d vote %d",
						g, term, vote, found, tv[0], tv[1])
				}
			}
			putState(t, s, 1000, 1, 1)
			s.close()
			s2 := openTestStates(t, dir)
			if term, _, _ := termVote(t, s2, 1000); term != 1 {
				t.Fatalf("write after the restart lost: term %d", term)
			}
			t.Logf("%d acknowledgements held", len(acks))
		})
	}
}

// TestHardStateLogCrashChild is the child of TestHardStateLogCrash.
func TestHardStateLogCrashChild(t *testing.T) {
	spec, dir := os.Getenv(crashEnvPoint), os.Getenv(crashEnvDir)
	if spec == "" {
		t.Skip("runs as the child of TestHardStateLogCrash")
	}
	s, err := openHardStateLog(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.compactFloor = 2048
	s.hook = crashHook(spec)
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := uint64(0); w < 8; w++ {
		wg.Go(func() {
			for i := uint64(1); i <= 2000; i++ {
				g := w + 8*(i%8) // groups w, w+8, ..., each of one writer
				term, vote := i, 1+i%3
				rec, err := stateRecord(g, &pb.HardState{Term: new(term), Vote: new(vote)}, &pb.ConfState{Voters: []uint64{1, 2, 3}})
				if err != nil {
					panic(err)
				}
				if err := s.commit(rec); err != nil {
					panic(err)
				}
				out.Lock()
				fmt.Printf("ack %d %d %d\n", g, term, vote)
				out.Unlock()
			}
		})
	}
	wg.Wait()
	t.Fatal("never reached the kill point")
}

// TestHostCrashKeepsTerm: a one-voter group on a host with the node's
// hard-state file campaigns again and again; the host dies right after a
// term is fsynced (before the leader it makes acts), and at other points.
// The reopened replica never has a lower term than one it led in.
func TestHostCrashKeepsTerm(t *testing.T) {
	for _, spec := range []string{"hardstate-synced:12", "hardstate-write:12", "hardstate-migrated:1"} {
		t.Run(spec, func(t *testing.T) {
			root := t.TempDir()
			var led uint64
			if spec == "hardstate-migrated:1" {
				// A directory of the per-replica format, to be moved.
				n, err := openSolo(t, filepath.Join(root, "g7"))
				if err != nil {
					t.Fatal(err)
				}
				n.propose("a")
				led = n.rep.Status().Term
				n.close()
			}
			acks := runCrashChild(t, "TestHostCrashKeepsTermChild", root, spec)
			for _, a := range acks {
				var term uint64
				if _, err := fmt.Sscanf(a, "ack term %d", &term); err != nil {
					t.Fatalf("%q: %v", a, err)
				}
				led = max(led, term)
			}
			n := openSoloNodeHook(t, root, nil)
			if got := n.rep.st.hs.GetTerm(); got < led || got == 0 {
				t.Fatalf("term after the crash %d, led in term %d", got, led)
			}
			n.propose("b")
			t.Logf("led up to term %d; restarted in term %d", led, n.rep.Status().Term)
		})
	}
}

// TestHostCrashKeepsTermChild is the child of TestHostCrashKeepsTerm.
func TestHostCrashKeepsTermChild(t *testing.T) {
	spec, root := os.Getenv(crashEnvPoint), os.Getenv(crashEnvDir)
	if spec == "" {
		t.Skip("runs as the child of TestHostCrashKeepsTerm")
	}
	hook := crashHook(spec)
	n := openSoloNodeHook(t, root, hook)
	for i := 0; i < 200; i++ {
		n.rep.Campaign()
		waitFor(t, 5*time.Second, "leader", func() bool { s := n.rep.Status(); return s.IsLeader() && s.LeaderReady })
		fmt.Printf("ack term %d\n", n.rep.Status().Term)
		n.stepDown()
		waitFor(t, 5*time.Second, "follower", func() bool { return !n.rep.Status().IsLeader() })
	}
	t.Fatal("never reached the kill point")
}

// openSoloNodeHook is openSolo with the node's hard-state file in root and
// the replica in root/g7; hook (if any) is the store's crash hook.
func openSoloNodeHook(t *testing.T, root string, hook func(string) error) *soloNode {
	t.Helper()
	h, err := NewHost(Config{ID: 1, Transport: NewMemNetwork().Transport(1), TickInterval: 10 * time.Millisecond,
		ElectionTicks: 10, HeartbeatTicks: 1, Fsync: FsyncAlways, LagTime: time.Second, StateDir: root})
	if err != nil {
		t.Fatal(err)
	}
	h.states.hook = hook
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	sm := &listSM{}
	dir := filepath.Join(root, "g7")
	r, err := h.AddReplica(ReplicaConfig{Group: 7, Name: "g7", Dir: dir, Peers: []uint64{1}, SM: sm,
		SnapshotEntries: 1 << 20, Log: clog.Options{SegmentBytes: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	return &soloNode{t: t, dir: dir, host: h, rep: r, sm: sm}
}

// stepDown makes a solo leader follow a higher term (from a node outside
// the group), so that its next campaign takes a new term again.
func (n *soloNode) stepDown() {
	n.rep.enqueue(func() {
		n.rep.inOps = append(n.rep.inOps, func() {
			n.rep.rn.Step(&pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(uint64(9)), To: new(uint64(1)), Term: new(n.rep.term + 1)})
		})
	})
}
