package log

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errInjected = errors.New("injected I/O error")

// openHooked opens a log whose test hook calls hook.
func openHooked(t *testing.T, dir string, segBytes int64, hook func(point string) error) *Log {
	t.Helper()
	l, err := Open(Options{Dir: dir, SegmentBytes: segBytes, IndexInterval: 256, hook: hook})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestAppendBadBatchChangesNothing: a malformed batch in the middle of an
// Append must leave the log exactly as it was, not with the entries before
// it counted but never written.
func TestAppendBadBatchChangesNothing(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 1<<20)
	appendBatches(t, l, 1, 1, 5, 2)
	err := l.Append([]Entry{
		{Index: 6, Term: 2, Kind: KindBatch, Payload: testBatch(1, 10, "good")},
		{Index: 7, Term: 2, Kind: KindBatch, Payload: []byte("not a batch")},
	})
	if !errors.Is(err, ErrBadBatch) {
		t.Fatalf("append: %v", err)
	}
	if l.LastIndex() != 5 || l.NextOffset() != 10 {
		t.Fatalf("after a rejected append: last %d next %d, want 5 10", l.LastIndex(), l.NextOffset())
	}
	if term, _ := l.Term(5); term != 1 {
		t.Fatalf("term %d", term)
	}
	appendBatches(t, l, 6, 3, 2, 1)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l2 := openTest(t, dir, 1<<20)
	if l2.LastIndex() != 7 || l2.NextOffset() != 12 {
		t.Fatalf("reopen: last %d next %d", l2.LastIndex(), l2.NextOffset())
	}
	if e, end, ok := l2.EpochEndOffset(2, l2.NextOffset()); !ok || e != 1 || end != 10 {
		t.Fatalf("epoch 2 never had entries: got epoch %d end %d %v", e, end, ok)
	}
}

// TestFailedWriteForgetsItsEpochs: a write that fails after its new term
// reached the epochs file must not leave that term behind on disk.
func TestFailedWriteForgetsItsEpochs(t *testing.T) {
	dir := t.TempDir()
	var fail atomic.Bool
	l := openHooked(t, dir, 1<<20, func(p string) error {
		if p == pointWrite && fail.Load() {
			return errInjected
		}
		return nil
	})
	appendBatches(t, l, 1, 1, 10, 1)
	fail.Store(true)
	err := l.Append([]Entry{{Index: 11, Term: 2, Kind: KindBatch, Payload: testBatch(3, 50, "lost")}})
	if !errors.Is(err, errInjected) {
		t.Fatalf("append: %v", err)
	}
	fail.Store(false)
	if l.LastIndex() != 10 || l.NextOffset() != 10 {
		t.Fatalf("after a failed write: last %d next %d", l.LastIndex(), l.NextOffset())
	}
	// Term 3 takes over at the same index.
	appendBatches(t, l, 11, 3, 1, 1)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	check := func(l *Log, when string) {
		if e, end, ok := l.EpochEndOffset(2, l.NextOffset()); !ok || e != 1 || end != 10 {
			t.Fatalf("%s: epoch 2 never had entries: got epoch %d end %d %v", when, e, end, ok)
		}
		if term, _ := l.Term(11); term != 3 {
			t.Fatalf("%s: term of 11 is %d", when, term)
		}
	}
	check(l, "before reopening")
	l.Close()
	check(openTest(t, dir, 1<<20), "after reopening")
}

// TestFailedSyncIsRetried: a failed fsync must leave the log marked as
// unsynced, so the next Sync does the fsync instead of returning at once.
func TestFailedSyncIsRetried(t *testing.T) {
	var syncs, fail atomic.Int32
	l := openHooked(t, t.TempDir(), 1<<20, func(p string) error {
		if p == pointSync {
			syncs.Add(1)
			if fail.Add(-1) >= 0 {
				return errInjected
			}
		}
		return nil
	})
	appendBatches(t, l, 1, 1, 3, 1)
	fail.Store(1)
	if err := l.Sync(); !errors.Is(err, errInjected) {
		t.Fatalf("sync: %v", err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if n := syncs.Load(); n != 2 {
		t.Fatalf("%d fsyncs, want 2", n)
	}
}

// TestConcurrentSyncWaitsForTheFsync: a Sync that runs while another one
// is inside its fsync must not return before that fsync is done: its
// caller is about to acknowledge entries as durable.
func TestConcurrentSyncWaitsForTheFsync(t *testing.T) {
	inFsync := make(chan struct{})
	release := make(chan struct{})
	var released atomic.Bool
	var first atomic.Bool
	l := openHooked(t, t.TempDir(), 1<<20, func(p string) error {
		if p == pointSync && first.CompareAndSwap(false, true) {
			close(inFsync)
			<-release
		}
		return nil
	})
	var once sync.Once
	unblock := func() { once.Do(func() { released.Store(true); close(release) }) }
	t.Cleanup(unblock) // a failing test must not leave the first Sync blocked
	appendBatches(t, l, 1, 1, 3, 1)
	firstDone := make(chan error, 1)
	go func() { firstDone <- l.Sync() }()
	<-inFsync
	secondDone := make(chan bool, 1)
	go func() {
		err := l.Sync()
		if err != nil {
			t.Error(err)
		}
		secondDone <- released.Load()
	}()
	// Give a wrong Sync time to return early; a right one waits for us.
	select {
	case ok := <-secondDone:
		if !ok {
			t.Fatal("second Sync returned while the first was still in its fsync")
		}
	case <-time.After(300 * time.Millisecond):
	}
	unblock()
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	select {
	case <-secondDone:
	case <-time.After(10 * time.Second):
		t.Fatal("second Sync never returned")
	}
}

// TestFailedTruncationLeavesLogConsistent: an fsync that fails after a
// conflict truncation cut the segment must leave memory agreeing with the
// file, and the log must take the retried append.
func TestFailedTruncationLeavesLogConsistent(t *testing.T) {
	dir := t.TempDir()
	var fail atomic.Bool
	l := openHooked(t, dir, 1<<20, func(p string) error {
		if p == pointTruncCut && fail.CompareAndSwap(true, false) {
			return errInjected
		}
		return nil
	})
	appendBatches(t, l, 1, 1, 10, 1)
	fail.Store(true)
	err := l.Append([]Entry{{Index: 5, Term: 2, Kind: KindBatch, Payload: testBatch(1, 5, "new")}})
	if !errors.Is(err, errInjected) {
		t.Fatalf("append: %v", err)
	}
	if l.LastIndex() != 4 || l.NextOffset() != 4 {
		t.Fatalf("after the failed truncation: last %d next %d", l.LastIndex(), l.NextOffset())
	}
	if es, err := l.Entries(1, 5, 1<<20); err != nil || len(es) != 4 {
		t.Fatalf("entries: %d %v", len(es), err)
	}
	appendBatches(t, l, 5, 2, 2, 1)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l2 := openTest(t, dir, 1<<20)
	if term, _ := l2.Term(6); l2.LastIndex() != 6 || term != 2 {
		t.Fatalf("reopen: last %d term %d", l2.LastIndex(), term)
	}
}
