package log

import "testing"

// BenchmarkReadBatchesTail is a consumer at the tail: a fetch of the last
// few batches of a log with many segments.
func BenchmarkReadBatchesTail(b *testing.B) {
	l, err := Open(Options{Dir: b.TempDir(), SegmentBytes: 64 << 10, IndexInterval: 4096})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for i := uint64(1); i <= 2000; i++ {
		if err := l.Append([]Entry{{Index: i, Term: 1, Kind: KindBatch, Payload: testBatch(4, int64(i), "benchmark value")}}); err != nil {
			b.Fatal(err)
		}
	}
	next := l.NextOffset()
	b.ReportAllocs()
	for b.Loop() {
		if out, err := l.ReadBatches(next-16, next, 1<<20, true); err != nil || len(out) == 0 {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppend is a replica's write path: small batches of batches,
// no fsync, segments rolling.
func BenchmarkAppend(b *testing.B) {
	l, err := Open(Options{Dir: b.TempDir(), SegmentBytes: 8 << 20, IndexInterval: 4096})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	payload := testBatch(8, 1, "a value of some sixty-four bytes, as a small producer would send")
	es := make([]Entry, 4)
	next := uint64(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(es) * len(payload)))
	for b.Loop() {
		for i := range es {
			es[i] = Entry{Index: next, Term: 1, Kind: KindBatch, Payload: payload}
			next++
		}
		if err := l.Append(es); err != nil {
			b.Fatal(err)
		}
	}
}
