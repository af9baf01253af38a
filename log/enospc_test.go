package log

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestFullDiskKeepsWrittenEntriesReadable fills a small tmpfs: Append must
// fail cleanly, and every entry appended before must stay readable, also
// after reopening.
func TestFullDiskKeepsWrittenEntriesReadable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount a small tmpfs")
	}
	mnt := filepath.Join(t.TempDir(), "small")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	l, err := Open(Options{Dir: filepath.Join(mnt, "p"), SegmentBytes: 256 << 10, IndexInterval: 4096})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 6000)
	ok := uint64(0)
	for i := uint64(1); i < 2000; i++ {
		b := testBatch(1, int64(i), string(big))
		if err := l.Append([]Entry{{Index: i, Term: 1, Kind: KindBatch, Payload: b}}); err != nil {
			t.Logf("append %d: %v", i, err)
			break
		}
		ok = i
	}
	if ok == 0 || ok >= 1999 {
		t.Fatalf("appended %d entries", ok)
	}
	if l.LastIndex() != ok {
		t.Errorf("last index %d after a failed append, want %d", l.LastIndex(), ok)
	}
	check := func(l *Log, what string) {
		recs, err := l.ReadBatches(0, int64(ok), 1<<30, true)
		if err != nil {
			t.Fatalf("%s: read: %v", what, err)
		}
		n := 0
		for len(recs) > 0 {
			bi, err := ParseBatch(recs[:12+int(be32(recs[8:]))])
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			_ = bi
			recs = recs[12+int(be32(recs[8:])):]
			n++
		}
		if uint64(n) != ok {
			t.Fatalf("%s: read back %d of %d batches", what, n, ok)
		}
	}
	check(l, "after the failed append")
	l.Close()
	l2, err := Open(Options{Dir: filepath.Join(mnt, "p"), SegmentBytes: 256 << 10, IndexInterval: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	check(l2, "after reopening")
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
