package compat

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// previousRelease is the commit of the release before this one; a
// rolling upgrade from it must keep the cluster serving.
const previousRelease = "9aa9657"

// buildRelease builds chronik-server as of commit from this repository's
// history, or skips the test when the history is not there (a shallow
// clone). The build cache makes builds after the first quick.
func buildRelease(t *testing.T, commit string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed: cannot build the previous release")
	}
	if out, err := exec.Command("git", "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("previous release %s is not in the git history (a shallow clone?): %v %s", commit, err, out)
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("git rev-parse: %v", err)
	}
	dir := t.TempDir()
	tarball := filepath.Join(dir, "src.tar")
	archive := exec.Command("git", "archive", "-o", tarball, commit) // the whole tree, not only compat/
	archive.Dir = strings.TrimSpace(string(top))
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", tarball, "-C", src).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(dir, "chronik-server-"+commit)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// -trimpath: the temporary source path does not defeat the build cache.
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/chronik-server")
	build.Dir = src
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building chronik-server %s: %v\n%s", commit, err, out)
	}
	t.Logf("built chronik-server %s in %v", commit, time.Since(start).Round(time.Millisecond))
	return bin
}

// TestUpgradeFromPreviousRelease starts a cluster on the previous
// release, puts an idempotent acks=all producer and a consumer group on
// it, and replaces the nodes one by one with this build (SIGTERM, exit,
// start on the same data directory, every partition led with a full
// ISR). Nothing may be lost or duplicated, no produce may fail, the group
// must read everything, and no node may refuse a peer.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	old := buildRelease(t, previousRelease)
	c := startCluster(t, 3, withBinary(old))
	createTopic(t, c, "upgrade", 12, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	l := startLoader(t, c, "upgrade", 2000)
	cons := startGroupConsumer(t, c, "upgrade", "upgrade-readers")
	l.waitAcks(2000, 30*time.Second)
	waitFor(t, 30*time.Second, "the group to consume", func() bool { return cons.count() > 500 })

	rollStart := time.Now()
	for _, nd := range c.nodes {
		c.stop(nd.id, 30*time.Second)
		nd.bin = "" // the build under test
		restart := time.Now()
		c.start(nd.id)
		c.waitReady(30 * time.Second)
		c.waitAllHealthy(30 * time.Second)
		t.Logf("node %d upgraded: every node healthy %v after its start", nd.id, time.Since(restart).Round(time.Millisecond))
		if !hasFile(nd.dataDir, "raft-hardstate") {
			t.Errorf("node %d: no raft-hardstate file after the upgrade (the per-partition state was not migrated)", nd.id)
		}
	}
	t.Logf("upgraded 3 nodes in %v", time.Since(rollStart).Round(time.Millisecond))

	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	stalls := l.stallsBetween(rollStart, time.Now())
	t.Logf("longest gap between acks per partition during the upgrade: %s", stallSummary(stalls))
	// Mixed versions may hand over more slowly than the rolling restart
	// (bound 1 s: the old release lacks this one's faster transfers), but
	// nothing near franz-go's metadata refresh (5 s): a client left waiting.
	checkStalls(t, stalls, 2*time.Second*raceSlack, " during the upgrade")
	l.checkDelivered(t, c, "the upgrade")
	acked := l.ackedCount()
	waitFor(t, 60*time.Second, "the group to read everything", func() bool { return cons.count() >= acked })
	cons.halt()
	t.Logf("the consumer group read all %d records across the upgrade", cons.count())
	for _, nd := range c.nodes {
		for _, reason := range []string{"hello", "cluster", "unknown_node"} {
			if v, _ := c.metric(nd.id, `chronik_raft_refused_peers_total{reason="`+reason+`"}`); v != 0 {
				t.Errorf("node %d refused %v peers for %s", nd.id, v, reason)
			}
		}
		if v, _ := c.metric(nd.id, "chronik_raft_rejected_messages_total"); v != 0 {
			t.Errorf("node %d rejected %v Raft messages", nd.id, v)
		}
		if v, ok := c.metric(nd.id, `chronik_partition_isr_count{partition="upgrade-0"}`); !ok || v != 3 {
			t.Errorf("node %d reports upgrade-0 ISR of %v", nd.id, v)
		}
		if lines := nd.log.lines("level=ERROR"); len(lines) > 0 {
			t.Logf("node %d logged %d errors, first: %s", nd.id, len(lines), lines[0])
		}
	}
}

// hasFile reports whether a file named name is anywhere under dir.
func hasFile(dir, name string) bool {
	found := false
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Name() == name {
			found = true
		}
		return nil
	})
	return found
}

// peerHelloV1 is the previous release's hello: "CHRK", u16 version 1, u64
// node id, u64 incarnation; no cluster id.
func peerHelloV1(from uint64) []byte {
	b := []byte("CHRK")
	b = binary.BigEndian.AppendUint16(b, 1)
	b = binary.BigEndian.AppendUint64(b, from)
	return binary.BigEndian.AppendUint64(b, 0xC0FFEE)
}

// clusterIDFrame is the frame a plaintext node sends after its v1 hello:
// one message on channel 0xFFF8 holding its cluster id.
func clusterIDFrame(cluster string) []byte {
	body := binary.BigEndian.AppendUint64(nil, 0)
	body = binary.BigEndian.AppendUint16(body, 0xFFF8)
	body = binary.BigEndian.AppendUint32(body, uint32(len(cluster)))
	body = append(body, cluster...)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	frame = append(frame, 1)
	return append(frame, body...)
}

// TestPeersClusterIDCheckedAfterV1Hello: a peer that says the old hello
// but states another cluster id in its first frame is refused and
// counted, and its forged snapshot does not reach Raft.
func TestPeersClusterIDCheckedAfterV1Hello(t *testing.T) {
	c := startCluster(t, 1)
	before := dirBytes(t, c.node(1).dataDir)
	conn, err := net.DialTimeout("tcp", c.node(1).raft, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(append(append(peerHelloV1(1), clusterIDFrame("another")...), raftFrame(t, 1, forgedSnapshot(1, 1, 1<<10))...))
	waitClosedByNode(t, conn, "peer of another cluster after a v1 hello")
	waitFor(t, 5*time.Second, "the refusal counted", func() bool {
		v, _ := c.metric(1, `chronik_raft_refused_peers_total{reason="cluster"}`)
		return v == 1
	})
	if v, _ := c.metric(1, "chronik_raft_rejected_messages_total"); v != 0 {
		t.Errorf("%v messages reached the Raft checks", v)
	}
	if after := dirBytes(t, c.node(1).dataDir); after < before/2 {
		t.Errorf("data directory went from %d to %d bytes", before, after)
	}
}
