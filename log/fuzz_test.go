package log

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzRecovery writes arbitrary bytes after a valid log prefix and opens
// the log: recovery must never panic, must keep every whole frame of the
// prefix, and must leave a log that takes appends.
func FuzzRecovery(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 41, 1, 2, 3, 4})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(testBatch(2, 5, "tail"))
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		l, err := Open(Options{Dir: dir, IndexInterval: 64})
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(1); i <= 5; i++ {
			if err := l.Append([]Entry{{Index: i, Term: 1, Kind: KindBatch, Payload: testBatch(1, int64(i), "v")}}); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
		seg := filepath.Join(dir, "00000000000000000001.log")
		fh, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.Write(tail)
		fh.Close()
		l2, err := Open(Options{Dir: dir, IndexInterval: 64})
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Close()
		if l2.LastIndex() < 5 || l2.NextOffset() < 5 {
			t.Fatalf("lost the valid prefix: last %d next %d", l2.LastIndex(), l2.NextOffset())
		}
		next := l2.LastIndex() + 1
		if err := l2.Append([]Entry{{Index: next, Term: 1, Kind: KindNoop}}); err != nil {
			t.Fatalf("append after recovery: %v", err)
		}
		if _, err := l2.Entries(1, next+1, 1<<20); err != nil {
			t.Fatalf("read after recovery: %v", err)
		}
	})
}
