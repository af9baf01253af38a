package log

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// segmentFiles returns the log's segment files in order.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segments in %s: %v", dir, err)
	}
	return segs
}

// framePositions returns where each frame of a segment file starts.
func framePositions(t *testing.T, data []byte) []int {
	t.Helper()
	var out []int
	for p := 0; p+frameHeaderSize <= len(data); {
		h, ok := decodeHeader(data[p:])
		if !ok {
			t.Fatalf("bad frame at %d", p)
		}
		out = append(out, p)
		p += int(h.size())
	}
	return out
}

// TestCorruptMiddleOfActiveSegmentRefuses flips a byte in a frame that has
// intact frames after it, in the part of the active segment that startup
// scans: after the last index record, or everything when the index file
// (not fsynced while the segment is active) was lost. The frames after it
// may have been fsynced and acknowledged: Open must refuse and say what to
// do, not cut them off, and leave the file as it was. The documented
// operator action then opens the log.
func TestCorruptMiddleOfActiveSegmentRefuses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		bad       int // entry whose frame is damaged
		lostIndex bool
	}{
		{"at the last index record", 49, false},
		{"after the last index record", 50, false},
		{"lost index file", 31, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testCorruptMiddle(t, tc.bad, tc.lostIndex) })
	}
}

func testCorruptMiddle(t *testing.T, entry int, lostIndex bool) {
	dir := t.TempDir()
	l := openTest(t, dir, 1<<20)
	appendBatches(t, l, 1, 1, 51, 1) // index records at 1, 4, ... 49
	l.Close()
	f := segmentFiles(t, dir)[0]
	data, _ := os.ReadFile(f)
	pos := framePositions(t, data)
	bad := pos[entry-1]
	data[bad+frameHeaderSize+20] ^= 0xFF
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if lostIndex {
		os.Truncate(strings.TrimSuffix(f, ".log")+".index", 0)
	}

	_, err := Open(Options{Dir: dir, SegmentBytes: 1 << 20, IndexInterval: 256})
	var ce *CorruptionError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open: want a CorruptionError, got %v", err)
	}
	if ce.Pos != int64(bad) || ce.After != uint64(entry-1) || ce.Next != uint64(entry+1) {
		t.Fatalf("error says pos %d after %d next %d; want %d %d %d", ce.Pos, ce.After, ce.Next, bad, entry-1, entry+1)
	}
	for _, want := range []string{filepath.Base(f), "truncate -s", "refusing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	if after, _ := os.ReadFile(f); !bytes.Equal(after, data) {
		t.Fatal("a refused open changed the segment")
	}

	// The operator action from the message: cut at the damage.
	if err := os.Truncate(f, ce.Pos); err != nil {
		t.Fatal(err)
	}
	l2 := openTest(t, dir, 1<<20)
	if l2.LastIndex() != uint64(entry-1) || l2.NextOffset() != int64(entry-1) {
		t.Fatalf("after the cut: last %d next %d", l2.LastIndex(), l2.NextOffset())
	}
	appendBatches(t, l2, uint64(entry), 2, 1, 1)
}

// TestTornWriteWithZeroedSectorIsCut: a power cut can leave a multi-page
// write with a middle page never written (zeros) and a later one on disk.
// That write was never fsynced, so it is cut like a torn tail.
func TestTornWriteWithZeroedSectorIsCut(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 1<<20)
	appendBatches(t, l, 1, 1, 10, 1)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	// One write of several large frames: the torn one.
	var es []Entry
	for i := uint64(11); i <= 14; i++ {
		es = append(es, Entry{Index: i, Term: 1, Kind: KindBatch, Payload: testBatch(1, int64(i), strings.Repeat("p", 3000))})
	}
	if err := l.Append(es); err != nil {
		t.Fatal(err)
	}
	l.Close()
	f := segmentFiles(t, dir)[0]
	data, _ := os.ReadFile(f)
	pos := framePositions(t, data)
	// Zero the sectors in the middle of frame 11: frames 12-14 stay intact.
	from := (pos[10] + frameHeaderSize + 600) / sectorSize * sectorSize
	copy(data[from:], make([]byte, 2*sectorSize))
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// The index records of the torn write were not fsynced either.
	os.Truncate(strings.TrimSuffix(f, ".log")+".index", 0)
	l2 := openTest(t, dir, 1<<20)
	if l2.LastIndex() != 10 {
		t.Fatalf("last %d, want the torn write cut after 10", l2.LastIndex())
	}
	appendBatches(t, l2, 11, 1, 1, 1)
}

// TestCorruptSealedSegmentRefuses: a sealed segment was fsynced whole, so
// any bad frame in it is damage, reported as a CorruptionError.
func TestCorruptSealedSegmentRefuses(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 2048)
	appendBatches(t, l, 1, 1, 60, 1)
	l.Close()
	f := segmentFiles(t, dir)[0]
	data, _ := os.ReadFile(f)
	data[len(data)-5] ^= 0xFF
	os.WriteFile(f, data, 0o600)
	_, err := Open(Options{Dir: dir, SegmentBytes: 2048, IndexInterval: 256})
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("open: %v", err)
	}
}

// TestDataFilesArePrivate: files 0600, the directory 0700, also for a
// directory that existed with wider permissions.
func TestDataFilesArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l := openTest(t, dir, 1024)
	appendBatches(t, l, 1, 1, 30, 1)
	appendBatches(t, l, 31, 2, 1, 1)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.Truncate(20); err != nil { // rewrites the epochs file
		t.Fatal(err)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", e.Name(), info.Mode().Perm())
		}
	}
	if len(ents) < 4 {
		t.Fatalf("only %d files", len(ents))
	}
}

// copyFiles copies the named files of dir into a new temporary directory.
func copyFiles(t *testing.T, files []string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = b
	}
	return out
}

// TestStaleSegmentAfterTruncationIsMovedAside: a conflict truncation
// unlinks later segments; if a power cut lost those unlinks while the cut
// segment's new frames were fsynced, the old segment comes back. It does
// not follow on from the one before it, so Open must not load it (its
// entries are from a history Raft overwrote): it is renamed *.stale and
// the log continues the new history.
func TestStaleSegmentAfterTruncationIsMovedAside(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 1024)
	appendBatches(t, l, 1, 1, 40, 1)
	segs := segmentFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	lastBase := strings.TrimSuffix(segs[len(segs)-1], ".log")
	saved := copyFiles(t, []string{lastBase + ".log", lastBase + ".index", lastBase + ".timeindex"})
	// Raft overwrites from entry 5 on: the later segments go.
	appendBatches(t, l, 5, 2, 3, 1)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for f, b := range saved { // the unlink that did not reach the disk
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	l2 := openTest(t, dir, 1024)
	if l2.LastIndex() != 7 || l2.NextOffset() != 7 {
		t.Fatalf("reopen: last %d next %d, want 7 7", l2.LastIndex(), l2.NextOffset())
	}
	if term, _ := l2.Term(7); term != 2 {
		t.Fatalf("term of 7: %d", term)
	}
	if _, err := os.Stat(lastBase + ".log.stale"); err != nil {
		t.Fatalf("stale segment not kept aside: %v", err)
	}
	if _, err := os.Stat(lastBase + ".log"); !os.IsNotExist(err) {
		t.Fatalf("stale segment still in place: %v", err)
	}
	appendBatches(t, l2, 8, 2, 40, 1) // rolls past the stale segment's name
	l2.Close()
	l3 := openTest(t, dir, 1024)
	if l3.LastIndex() != 47 {
		t.Fatalf("last %d", l3.LastIndex())
	}
}

// TestMissingFirstSegmentRefuses: a log whose first segment starts after
// its base has lost entries; Open must say so rather than serve a hole.
func TestMissingFirstSegmentRefuses(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 1024)
	appendBatches(t, l, 1, 1, 40, 1)
	l.Close()
	os.Remove(segmentFiles(t, dir)[0])
	_, err := Open(Options{Dir: dir, SegmentBytes: 1024, IndexInterval: 256})
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("open: %v", err)
	}
}

// TestResetLeftoversAreRemoved: a crash after Reset wrote the new base but
// before its unlinks reached the disk leaves old segments wholly before the
// base (and no new one). Open must drop them and start after the base.
func TestResetLeftoversAreRemoved(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 1024)
	appendBatches(t, l, 1, 1, 30, 1)
	old := segmentFiles(t, dir)
	var files []string
	for _, f := range old {
		b := strings.TrimSuffix(f, ".log")
		files = append(files, b+".log", b+".index", b+".timeindex")
	}
	saved := copyFiles(t, files)
	if err := l.Reset(500, 4, 7000); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for _, f := range segmentFiles(t, dir) { // the new segment was not created yet
		os.Remove(f)
	}
	for f, b := range saved {
		os.WriteFile(f, b, 0o600)
	}
	l2 := openTest(t, dir, 1024)
	if l2.FirstIndex() != 501 || l2.LastIndex() != 500 || l2.NextOffset() != 7000 {
		t.Fatalf("first %d last %d next %d", l2.FirstIndex(), l2.LastIndex(), l2.NextOffset())
	}
	appendBatches(t, l2, 501, 4, 1, 1)
	if got := segmentFiles(t, dir); len(got) != 1 {
		t.Fatalf("segments left: %v", got)
	}
}
