package log

import (
	"bytes"
	"errors"
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

// FuzzDamagedSegment overwrites bytes anywhere in a synced active segment
// (and may drop its index file, as a power cut can) and opens the log.
// Open must never panic, and either refuse with a CorruptionError or come
// back with a prefix of what was written: every entry before the damage
// kept, every entry it serves equal to the one written (or reported as
// corrupt when read), and appends working.
func FuzzDamagedSegment(f *testing.F) {
	f.Add(uint16(100), []byte{0xff}, false)
	f.Add(uint16(2000), []byte{0, 0, 0, 0}, true)
	f.Add(uint16(0), make([]byte, 600), false)
	f.Fuzz(checkDamagedSegment)
}

func checkDamagedSegment(t *testing.T, at uint16, junk []byte, dropIndex bool) {
	dir := t.TempDir()
	l, err := Open(Options{Dir: dir, IndexInterval: 256})
	if err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for i := uint64(1); i <= 40; i++ {
		es := []Entry{{Index: i, Term: 1 + i/20, Kind: KindBatch, Payload: testBatch(1, int64(i), "some value")}}
		if err := l.Append(es); err != nil {
			t.Fatal(err)
		}
		stored, _ := l.Entries(i, i+1, 1<<20)
		want = append(want, stored[0].Payload)
	}
	l.Close()
	seg := filepath.Join(dir, "00000000000000000001.log")
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	pos := int(at) % len(data)
	n := copy(data[pos:], junk)
	if n == 0 {
		return
	}
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if dropIndex {
		os.Remove(filepath.Join(dir, "00000000000000000001.index"))
	}
	// Entries wholly before the damaged bytes must survive.
	intact := uint64(0)
	for p := 0; p+frameHeaderSize <= pos; {
		h, _ := decodeHeader(data[p:])
		if p+int(h.size()) > pos {
			break
		}
		intact = h.index
		p += int(h.size())
	}
	l2, err := Open(Options{Dir: dir, IndexInterval: 256})
	var ce *CorruptionError
	if errors.As(err, &ce) {
		return
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer l2.Close()
	last := l2.LastIndex()
	if last < intact {
		t.Fatalf("damage at byte %d: last index %d, but entries up to %d were intact", pos, last, intact)
	}
	for i := uint64(1); i <= last; i++ {
		es, err := l2.Entries(i, i+1, 1<<20)
		if errors.Is(err, ErrCorrupt) {
			continue // damage before the scanned tail is found on read
		}
		if err != nil || len(es) != 1 || !bytes.Equal(es[0].Payload, want[i-1]) {
			t.Fatalf("entry %d after recovery: %v %d", i, err, len(es))
		}
	}
	if err := l2.Append([]Entry{{Index: last + 1, Term: 5, Kind: KindNoop}}); err != nil {
		t.Fatalf("append after recovery: %v", err)
	}
}
