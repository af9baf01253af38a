package compat

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestKill9SingleNodeFsyncAlways: a single node with --fsync always is
// killed with -9 under acks=all load and restarted: every acknowledged
// record must be there.
func TestKill9SingleNodeFsyncAlways(t *testing.T) {
	c := startCluster(t, 1, withArgs("--fsync", "always"))
	createTopic(t, c, "dur", 6, 1, nil)
	l := startLoader(t, c, "dur", 0)
	l.waitAcks(20000, 60*time.Second)
	c.kill(1)
	acked := l.ackedCount()
	c.start(1)
	c.waitReady(30 * time.Second)
	l.waitAcks(acked+2000, 60*time.Second)
	l.halt()
	t.Log(l.report())
	lost, dup := l.verify(c)
	if lost != 0 || dup != 0 {
		t.Fatalf("after kill -9: lost %d acknowledged records, %d duplicates", lost, dup)
	}
}

// TestTornTailOnRestart: garbage appended to a partition's active segment,
// as a crash mid-write leaves it, is cut off at restart (and logged); the
// records before it are served and new writes continue after them.
func TestTornTailOnRestart(t *testing.T) {
	c := startCluster(t, 1)
	createTopic(t, c, "torn", 1, 1, nil)
	cl := newFranz(t, c)
	acked := produceAll(t, cl, "torn", 500, "t1")
	c.stop(1, 20*time.Second)
	segs, err := filepath.Glob(filepath.Join(c.node(1).dataDir, "torn-0", "*.log"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment files: %v", err)
	}
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0, 0, 0x40, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3}) // a torn frame
	f.Close()
	c.start(1)
	c.waitReady(30 * time.Second)
	if len(c.node(1).log.lines("truncating torn or corrupt log tail")) == 0 {
		t.Error("the torn tail was not reported in the log")
	}
	cl2 := newFranz(t, c)
	more := produceAll(t, cl2, "torn", 100, "t2")
	recs := consumeAll(t, c, "torn", 600)
	got := map[string]int64{}
	for _, r := range recs {
		got[string(r.Value)] = r.Offset
	}
	for v, pos := range acked {
		if got[v] != pos[1] {
			t.Fatalf("record at offset %d lost or moved after recovery", pos[1])
		}
	}
	for v, pos := range more {
		if got[v] != pos[1] {
			t.Fatalf("record written after recovery at %d not read back", pos[1])
		}
	}
}
