package compat

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFullDisk runs a node on a 24 MiB tmpfs and writes until the disk is
// full. Writes must fail with a clear, retriable storage error rather than
// crash the node; everything acknowledged before stays readable; the node
// keeps answering metadata and admin requests, and stops cleanly.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root (make test runs as root in CI)")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })

	c := startCluster(t, 1, withArgs("--segment-bytes", "4194304"))
	// Move the node onto the small disk: stop it, point it there, start.
	c.stop(1, 20*time.Second)
	c.node(1).dataDir = filepath.Join(mnt, "node-1")
	c.start(1)
	c.waitReady(30 * time.Second)
	seg := "4194304"
	createTopic(t, c, "full", 1, 1, map[string]*string{"segment.bytes": &seg})
	createTopic(t, c, "other", 1, 1, nil)

	cl := newFranz(t, c, kgo.DefaultProduceTopic("full"), kgo.RecordRetries(2), kgo.RecordDeliveryTimeout(10*time.Second),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	val := make([]byte, 8<<10)
	for i := range val {
		val[i] = byte(i * 7)
	}
	acked := 0
	var storageErr error
	for i := 0; i < 4000 && storageErr == nil; i++ {
		err := cl.ProduceSync(ctx, &kgo.Record{Value: val}).FirstErr()
		switch {
		case err == nil:
			acked++
		case errors.Is(err, kerr.KafkaStorageError), errors.Is(err, kerr.NotLeaderForPartition), errors.Is(err, kerr.NotEnoughReplicas):
			storageErr = err
		default:
			storageErr = err
		}
	}
	if storageErr == nil {
		t.Fatal("32 MiB went into a 24 MiB disk without an error")
	}
	t.Logf("disk full after %d acknowledged records: %v", acked, storageErr)
	if len(c.node(1).log.lines("storage error")) == 0 {
		t.Error("the node did not log the storage error")
	}
	// The stopped replica shows as failed, with its error, in /partitions,
	// /health and the metrics.
	var failed partitionsJSON
	waitFor(t, 10*time.Second, "full-0 to show as failed in /partitions", func() bool {
		ps, _ := c.partitions(1)
		for _, p := range ps {
			if p.Topic == "full" && p.Failed != "" {
				failed = p
				return true
			}
		}
		return false
	})
	t.Logf("/partitions: full-0 status %q, failed %q", failed.Status, failed.Failed)
	if code, body, _ := c.get(1, "/health"); code != 503 || !strings.Contains(body, `"status":"failed"`) {
		t.Errorf("/health with a failed replica: %d %s", code, body)
	}
	if v, ok := c.metric(1, `chronik_partition_failed{partition="full-0"}`); !ok || v != 1 {
		t.Errorf("chronik_partition_failed for full-0: %v %v", v, ok)
	}
	// Still alive: admin, metadata and reads of what was acknowledged.
	if code, _, err := c.get(1, "/partitions"); err != nil || code != 200 {
		t.Fatalf("admin after a full disk: %d %v", code, err)
	}
	recs := consumeAll(t, c, "full", acked)
	if len(recs) < acked {
		t.Fatalf("read %d of %d acknowledged records", len(recs), acked)
	}
	if topics, err := kadm.NewClient(newFranz(t, c)).ListTopics(ctx); err != nil || !topics.Has("other") {
		t.Fatalf("metadata after a full disk: %v", err)
	}
	c.stop(1, 20*time.Second)
}
