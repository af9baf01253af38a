package compat

import (
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestAdminDescribeLogDirs: every node of a 3-node cluster describes its
// data directory with the volume's sizes and each replica's size on disk
// (kadm), and sarama's ClusterAdmin reads the same.
func TestAdminDescribeLogDirs(t *testing.T) {
	c := startCluster(t, 3)
	const topic = "logdirs"
	createTopic(t, c, topic, 2, 3, nil)
	cl := newFranz(t, c)
	produceAll(t, cl, topic, 200, "ld")
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var all kadm.DescribedAllLogDirs
	waitFor(t, 10*time.Second, "every replica to have data", func() bool {
		var err error
		all, err = adm.DescribeAllLogDirs(ctx, nil)
		if err != nil {
			t.Fatalf("kadm DescribeAllLogDirs: %v", err)
		}
		for id := int32(1); id <= 3; id++ {
			for p := int32(0); p < 2; p++ {
				if dp, ok := all[id].LookupPartition(topic, p); !ok || dp.Size == 0 {
					return false
				}
			}
		}
		return true
	})
	offsets := 0
	for id := int32(1); id <= 3; id++ {
		for _, d := range all[id] {
			offsets += len(d.Topics["__consumer_offsets"])
		}
	}
	if offsets != 6*3 {
		t.Fatalf("%d replicas of __consumer_offsets described, want 18 (6 partitions, 3 replicas)", offsets)
	}
	for id := int32(1); id <= 3; id++ {
		dirs := all[id]
		if len(dirs) != 1 {
			t.Fatalf("node %d describes %d dirs, want 1", id, len(dirs))
		}
		for name, d := range dirs {
			if name != c.node(int(id)).dataDir || d.Err != nil || d.TotalBytes <= 0 || d.UsableBytes <= 0 || d.UsableBytes > d.TotalBytes {
				t.Fatalf("node %d dir %s: %+v (want %s with volume sizes)", id, name, d, c.node(int(id)).dataDir)
			}
		}
	}
	sadm, err := sarama.NewClusterAdmin(c.bootstrap(), saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sadm.Close()
	dirs, err := sadm.DescribeLogDirs([]int32{1, 2, 3})
	if err != nil {
		t.Fatalf("sarama DescribeLogDirs: %v", err)
	}
	for id := int32(1); id <= 3; id++ {
		if len(dirs[id]) != 1 || dirs[id][0].ErrorCode != sarama.ErrNoError {
			t.Fatalf("sarama: node %d dirs %+v", id, dirs[id])
		}
		var size int64
		for _, tp := range dirs[id][0].Topics {
			if tp.Topic == topic {
				for _, p := range tp.Partitions {
					size += p.Size
				}
			}
		}
		if size == 0 {
			t.Fatalf("sarama: node %d reports no bytes for %s", id, topic)
		}
	}
}
