package log

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash tests run the workload below in a child process (this test
// binary, re-executed) whose test hook SIGKILLs it at the n-th time it
// reaches a chosen point. The parent then opens the directory and checks
// that nothing the child had synced is lost and that every entry is one
// the child wrote.

const (
	crashEnvDir   = "CHRONIK_LOG_CRASH_DIR"
	crashEnvPoint = "CHRONIK_LOG_CRASH_POINT"
	crashEnvHit   = "CHRONIK_LOG_CRASH_HIT"
)

// crashTerm is the term the workload gives entry i in its first history;
// the rewrite from crashRewriteAt on uses term crashNewTerm.
func crashTerm(i uint64) uint64 { return 1 + (i-1)/50 }

const (
	crashFirstLast = 120
	crashRewriteAt = 90
	crashNewTerm   = 9
	crashLast      = 140
)

func crashPayload(i, term uint64) []byte {
	return testBatch(1, int64(i), fmt.Sprintf("i%d t%d", i, term))
}

// runCrashWorkload appends entries 1..120 in one history, syncing every few
// entries, then overwrites from 90 on with a new term (a conflict
// truncation) up to 140. After each Sync it records in progress what is
// durable: "<last synced index> <rewritten>".
func runCrashWorkload(dir string, hook func(string) error) error {
	l, err := Open(Options{Dir: dir, SegmentBytes: 2048, IndexInterval: 256, hook: hook})
	if err != nil {
		return err
	}
	defer l.Close()
	progress := filepath.Join(dir, "..", "progress")
	synced := func(i uint64, rewritten bool) error {
		if err := l.Sync(); err != nil {
			return err
		}
		return os.WriteFile(progress, fmt.Appendf(nil, "%d %v\n", i, rewritten), 0o600)
	}
	for i := uint64(1); i <= crashFirstLast; i++ {
		if err := l.Append([]Entry{{Index: i, Term: crashTerm(i), Kind: KindBatch, Payload: crashPayload(i, crashTerm(i))}}); err != nil {
			return err
		}
		if i%5 == 0 {
			if err := synced(i, false); err != nil {
				return err
			}
		}
	}
	// From here on Raft may drop what was synced after crashRewriteAt-1.
	if err := os.WriteFile(progress, fmt.Appendf(nil, "%d %v\n", crashRewriteAt-1, true), 0o600); err != nil {
		return err
	}
	for i := uint64(crashRewriteAt); i <= crashLast; i += 3 {
		var es []Entry
		for j := i; j < i+3; j++ {
			es = append(es, Entry{Index: j, Term: crashNewTerm, Kind: KindBatch, Payload: crashPayload(j, crashNewTerm)})
		}
		if err := l.Append(es); err != nil {
			return err
		}
		if err := synced(i+2, true); err != nil {
			return err
		}
	}
	return nil
}

// TestCrashChild is the child side; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("run by TestCrashRecovery")
	}
	point := os.Getenv(crashEnvPoint)
	hit, _ := strconv.Atoi(os.Getenv(crashEnvHit))
	n := 0
	err := runCrashWorkload(dir, func(p string) error {
		if p == point {
			if n++; n == hit {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCrashRecovery(t *testing.T) {
	for _, tc := range []struct {
		point string
		hit   int
	}{
		{pointWritten, 37},      // frames written, not fsynced, first history
		{pointWritten, 128},     // the same during the rewrite
		{pointSync, 9},          // just before an fsync
		{pointRollCreated, 3},   // mid-roll: new segment created, directory not fsynced
		{pointTruncRemoved, 1},  // later segments unlinked, directory not fsynced
		{pointTruncCut, 1},      // segment cut, not fsynced
		{pointWrite, 125},       // before the first frames of the new history
		{pointRollCreated, 200}, // never reached: the workload runs to its end
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.point, tc.hit), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "p")
			killed := runCrashChild(t, dir, tc.point, tc.hit)
			if !killed && tc.hit < 200 {
				t.Fatal("the child was not killed: crash point not reached")
			}
			checkCrashedLog(t, dir)
		})
	}
}

// runCrashChild runs the workload in a child process and reports whether
// it died of SIGKILL.
func runCrashChild(t *testing.T, dir, point string, hit int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvPoint+"="+point, crashEnvHit+"="+strconv.Itoa(hit))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	return false
}

// checkCrashedLog opens what the child left: everything it synced is there,
// every entry is one it wrote, and the log takes appends.
func checkCrashedLog(t *testing.T, dir string) {
	t.Helper()
	var synced uint64
	var rewritten bool
	if b, err := os.ReadFile(filepath.Join(dir, "..", "progress")); err == nil {
		fmt.Sscanf(strings.TrimSpace(string(b)), "%d %v", &synced, &rewritten)
	}
	l, err := Open(Options{Dir: dir, SegmentBytes: 2048, IndexInterval: 256})
	if err != nil {
		t.Fatalf("open after the crash: %v", err)
	}
	defer l.Close()
	last := l.LastIndex()
	if last < synced {
		t.Fatalf("last index %d, but %d was synced", last, synced)
	}
	es, err := l.Entries(1, last+1, 1<<30)
	if err != nil || uint64(len(es)) != last {
		t.Fatalf("read back %d of %d: %v", len(es), last, err)
	}
	prevTerm := uint64(0)
	for _, e := range es {
		newer := e.Index >= crashRewriteAt && e.Term == crashNewTerm
		if e.Term != crashTerm(e.Index) && !newer {
			t.Fatalf("entry %d has term %d", e.Index, e.Term)
		}
		if rewritten && e.Index >= crashRewriteAt && e.Index <= synced && !newer {
			t.Fatalf("entry %d is from the old history, but the rewrite was synced to %d", e.Index, synced)
		}
		if e.Term < prevTerm {
			t.Fatalf("entry %d: term %d after term %d", e.Index, e.Term, prevTerm)
		}
		prevTerm = e.Term
		if want := fmt.Sprintf("i%d t%d", e.Index, e.Term); !strings.Contains(string(e.Payload), want) {
			t.Fatalf("entry %d: payload does not hold %q", e.Index, want)
		}
		if term, _ := l.Term(e.Index); term != e.Term {
			t.Fatalf("Term(%d) = %d, frame says %d", e.Index, term, e.Term)
		}
	}
	if err := l.Append([]Entry{{Index: last + 1, Term: crashNewTerm + 1, Kind: KindNoop}}); err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
}
