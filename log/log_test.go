package log

import (
	"bytes"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// testBatch builds a valid uncompressed v2 record batch of n records with
// timestamps starting at ts.
func testBatch(n int, ts int64, value string) []byte {
	var recs []byte
	for i := 0; i < n; i++ {
		r := kmsg.Record{TimestampDelta64: int64(i), OffsetDelta: int32(i), Value: []byte(value)}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		recs = r.AppendTo(recs)
	}
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(n - 1),
		FirstTimestamp: ts, MaxTimestamp: ts + int64(n-1), ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(n), Records: recs,
	}
	raw := b.AppendTo(nil)
	// Length and CRC are computed here as a client would.
	raw[8], raw[9], raw[10], raw[11] = byte((len(raw)-12)>>24), byte((len(raw)-12)>>16), byte((len(raw)-12)>>8), byte(len(raw)-12)
	crc := crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli))
	raw[17], raw[18], raw[19], raw[20] = byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc)
	return raw
}

func openTest(t *testing.T, dir string, segBytes int64) *Log {
	t.Helper()
	l, err := Open(Options{Dir: dir, SegmentBytes: segBytes, IndexInterval: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendBatches(t *testing.T, l *Log, from uint64, term uint64, count int, recs int) {
	t.Helper()
	var es []Entry
	for i := 0; i < count; i++ {
		es = append(es, Entry{Index: from + uint64(i), Term: term, Kind: KindBatch, Payload: testBatch(recs, 1000+int64(from)+int64(i), "v")})
	}
	if err := l.Append(es); err != nil {
		t.Fatal(err)
	}
}

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 4096)
	if err := l.Append([]Entry{{Index: 1, Term: 1, Kind: KindNoop}}); err != nil {
		t.Fatal(err)
	}
	appendBatches(t, l, 2, 1, 200, 3) // offsets 0..599, many segments
	if got := l.NextOffset(); got != 600 {
		t.Fatalf("next offset %d", got)
	}
	if l.Segments() < 5 {
		t.Fatalf("expected rolls, have %d segments", l.Segments())
	}
	es, err := l.Entries(50, 60, 1<<20)
	if err != nil || len(es) != 10 || es[0].Index != 50 || es[0].BaseOffset != 48*3 {
		t.Fatalf("entries: %v %d %+v", err, len(es), es)
	}
	// The stored batch carries its assigned offset and epoch.
	bi, _ := ParseBatch(es[0].Payload)
	if int64(be64(es[0].Payload)) != es[0].BaseOffset || bi.NumRecords != 3 || !BatchCRCValid(es[0].Payload) {
		t.Fatal("stored batch header not rewritten or CRC broken")
	}
	b, err := l.ReadBatches(301, 600, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	if first := int64(be64(b)); first != 300 {
		t.Fatalf("fetch from 301 starts at batch %d", first)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()

	l2 := openTest(t, dir, 4096)
	if l2.LastIndex() != 201 || l2.NextOffset() != 600 {
		t.Fatalf("after reopen last %d next %d", l2.LastIndex(), l2.NextOffset())
	}
	appendBatches(t, l2, 202, 2, 1, 1)
	if term, _ := l2.Term(202); term != 2 {
		t.Fatalf("term %d", term)
	}
	if term, _ := l2.Term(201); term != 1 {
		t.Fatalf("term %d", term)
	}
	if e, end, ok := l2.EpochEndOffset(1, l2.NextOffset()); !ok || e != 1 || end != 600 {
		t.Fatalf("epoch end %d %d %v", e, end, ok)
	}
}

func be64(b []byte) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func TestTruncateConflict(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 2048)
	appendBatches(t, l, 1, 1, 40, 2)
	// A new leader overwrites from index 21 on.
	appendBatches(t, l, 21, 3, 5, 1)
	if l.LastIndex() != 25 || l.NextOffset() != 40+5 {
		t.Fatalf("last %d next %d", l.LastIndex(), l.NextOffset())
	}
	if term, _ := l.Term(20); term != 1 {
		t.Fatal("term 20")
	}
	if term, _ := l.Term(21); term != 3 {
		t.Fatal("term 21")
	}
	l.Close()
	l2 := openTest(t, dir, 2048)
	if l2.LastIndex() != 25 || l2.NextOffset() != 45 {
		t.Fatalf("reopen last %d next %d", l2.LastIndex(), l2.NextOffset())
	}
	es, err := l2.Entries(21, 26, 1<<20)
	if err != nil || len(es) != 5 || es[4].BaseOffset != 44 {
		t.Fatalf("%v %+v", err, es)
	}
}

func TestTornTailRecovery(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 1<<20)
	appendBatches(t, l, 1, 1, 100, 2)
	l.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	f := segs[len(segs)-1]
	st, _ := os.Stat(f)
	// Tear the last frame in half, then add garbage.
	if err := os.Truncate(f, st.Size()-30); err != nil {
		t.Fatal(err)
	}
	fh, _ := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	fh.Write(bytes.Repeat([]byte{0xAB}, 100))
	fh.Close()

	l2 := openTest(t, dir, 1<<20)
	if l2.LastIndex() != 99 || l2.NextOffset() != 198 {
		t.Fatalf("recovered last %d next %d", l2.LastIndex(), l2.NextOffset())
	}
	appendBatches(t, l2, 100, 1, 1, 2)
	es, err := l2.Entries(95, 101, 1<<20)
	if err != nil || len(es) != 6 {
		t.Fatalf("%v %d", err, len(es))
	}
}

func TestCorruptMiddleFrameTruncatesActiveTail(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 1<<20)
	appendBatches(t, l, 1, 1, 50, 1)
	l.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	f := segs[0]
	data, _ := os.ReadFile(f)
	data[len(data)-10] ^= 0xFF // flip a byte in the last frame's payload
	os.WriteFile(f, data, 0o644)
	l2 := openTest(t, dir, 1<<20)
	if l2.LastIndex() != 49 {
		t.Fatalf("last %d", l2.LastIndex())
	}
}

func TestRetentionAndReset(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, 1024)
	appendBatches(t, l, 1, 1, 100, 1)
	appendBatches(t, l, 101, 2, 100, 1)
	n, err := l.Retain(Retention{MaxIndex: 150, Bytes: 4096}, time.Now())
	if err != nil || n == 0 {
		t.Fatalf("retain %d %v", n, err)
	}
	first := l.FirstIndex()
	if first > 151 {
		t.Fatalf("retention passed the applied index: first %d", first)
	}
	if _, err := l.Entries(first-1, first, 1<<20); !errors.Is(err, ErrCompacted) {
		t.Fatalf("want compacted, got %v", err)
	}
	if term, err := l.Term(first - 1); err != nil || term == 0 {
		t.Fatalf("term of base: %d %v", term, err)
	}
	if l.StartOffset() != int64(first-1) {
		t.Fatalf("start offset %d first %d", l.StartOffset(), first)
	}
	l.Close()
	l2 := openTest(t, dir, 1024)
	if l2.FirstIndex() != first || l2.LastIndex() != 200 || l2.NextOffset() != 200 {
		t.Fatalf("reopen: first %d last %d next %d", l2.FirstIndex(), l2.LastIndex(), l2.NextOffset())
	}
	if err := l2.Reset(500, 7, 9000); err != nil {
		t.Fatal(err)
	}
	appendBatches(t, l2, 501, 7, 1, 4)
	if l2.NextOffset() != 9004 || l2.StartOffset() != 9000 {
		t.Fatalf("after reset next %d", l2.NextOffset())
	}
	if term, _ := l2.Term(500); term != 7 {
		t.Fatal("base term")
	}
}

func TestOffsetForTime(t *testing.T) {
	l := openTest(t, t.TempDir(), 2048)
	for i := 0; i < 50; i++ {
		if err := l.Append([]Entry{{Index: uint64(i + 1), Term: 1, Kind: KindBatch, Payload: testBatch(2, int64(1000+i*10), "x")}}); err != nil {
			t.Fatal(err)
		}
	}
	off, _, ok, err := l.OffsetForTime(1205)
	if err != nil || !ok || off != 42 {
		t.Fatalf("offset for time: %d %v %v", off, ok, err)
	}
	if _, _, ok, _ := l.OffsetForTime(99999); ok {
		t.Fatal("found a time past the end")
	}
	ts, off, ok, _ := l.MaxTimestamp()
	if !ok || ts != 1491 || off != 98 {
		t.Fatalf("max ts %d %d", ts, off)
	}
}
