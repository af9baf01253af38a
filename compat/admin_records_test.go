package compat

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// deleteRecords runs kadm's DeleteRecords for partition 0 of topic.
func deleteRecords(t testing.TB, adm *kadm.Client, topic string, at int64) (int64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: topic, Partition: 0, At: at})
	resp, err := adm.DeleteRecords(ctx, os)
	if err != nil {
		t.Fatalf("kadm DeleteRecords: %v", err)
	}
	r := resp[topic][0]
	return r.LowWatermark, r.Err
}

// replicaSizes is each node's bytes on disk for partition 0 of topic.
func replicaSizes(t testing.TB, adm *kadm.Client, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all, err := adm.DescribeAllLogDirs(ctx, nil)
	if err != nil {
		t.Fatalf("DescribeAllLogDirs: %v", err)
	}
	out := map[int32]int64{}
	for id, dirs := range all {
		if p, ok := dirs.LookupPartition(topic, 0); ok {
			out[id] = p.Size
		}
	}
	return out
}

// TestAdminDeleteRecords: on a 3-node cluster, DeleteRecords (kadm, then
// sarama) moves the start offset on every replica, retention frees the
// segments below it, a fetch at offset 0 gets OFFSET_OUT_OF_RANGE and a
// consumer that resets starts at the new low watermark, and the start
// offset survives a restart of every node.
func TestAdminDeleteRecords(t *testing.T) {
	c := startCluster(t, 3, withArgs("--retention-check-interval", "200ms"))
	const topic = "delrec"
	createTopic(t, c, topic, 1, 3, map[string]*string{"segment.bytes": kadm.StringPtr("2048")})
	cl := newFranz(t, c, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(1))
	produceAll(t, cl, topic, 300, "dr")
	adm := kadm.NewClient(cl)
	before := replicaSizes(t, adm, topic)

	if _, err := deleteRecords(t, adm, topic, 100000); !errors.Is(err, kerr.OffsetOutOfRange) {
		t.Fatalf("DeleteRecords beyond the high watermark: %v, want OFFSET_OUT_OF_RANGE", err)
	}
	low, err := deleteRecords(t, adm, topic, 200)
	if err != nil || low != 200 {
		t.Fatalf("DeleteRecords to 200: low watermark %d, %v", low, err)
	}
	if got := startOffset(t, adm, topic); got != 200 {
		t.Fatalf("start offset after DeleteRecords: %d, want 200", got)
	}

	// A fetch below it is out of range and names the new start offset.
	meta, err := adm.Metadata(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	leader := meta.Topics[topic].Partitions[0].Leader
	freq := kmsg.NewPtrFetchRequest()
	freq.MaxWaitMillis, freq.MaxBytes = 0, 1<<20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic, ft.TopicID = topic, meta.Topics[topic].ID
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	ft.Partitions = append(ft.Partitions, fp)
	freq.Topics = append(freq.Topics, ft)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fresp, err := cl.Broker(int(leader)).Request(ctx, freq)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	fpr := fresp.(*kmsg.FetchResponse).Topics[0].Partitions[0]
	if fpr.ErrorCode != kerr.OffsetOutOfRange.Code || fpr.LogStartOffset != 200 {
		t.Fatalf("Fetch at 0: error %d, log start %d; want OFFSET_OUT_OF_RANGE and 200", fpr.ErrorCode, fpr.LogStartOffset)
	}
	consumer := newFranz(t, c, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(0)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	fetches := consumer.PollRecords(ctx, 1)
	if recs := fetches.Records(); len(recs) == 0 || recs[0].Offset != 200 {
		t.Fatalf("consumer at 0 after the reset: %v (errors %v), want offset 200 first", recs, fetches.Errors())
	}

	waitFor(t, 20*time.Second, "retention to free the segments below the start offset on every replica", func() bool {
		now := replicaSizes(t, adm, topic)
		for id, b := range before {
			if now[id] == 0 || now[id] > b/2 {
				return false
			}
		}
		return len(now) == 3
	})

	sadm, err := sarama.NewClusterAdmin(c.bootstrap(), saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := sadm.DeleteRecords(topic, map[int32]int64{0: 250}); err != nil {
		t.Fatalf("sarama DeleteRecords: %v", err)
	}
	sadm.Close()

	for id := 1; id <= 3; id++ {
		c.stop(id, 30*time.Second)
	}
	for id := 1; id <= 3; id++ {
		c.start(id)
	}
	c.waitReady(30 * time.Second)
	adm2 := kadm.NewClient(newFranz(t, c))
	waitFor(t, 20*time.Second, "the start offset after a restart of every node", func() bool {
		offs, err := adm2.ListStartOffsets(ctx, topic)
		if err != nil {
			return false
		}
		o, ok := offs.Lookup(topic, 0)
		if ok && o.Err == nil && o.Offset != 250 {
			t.Fatalf("start offset after restarting every node: %d, want 250", o.Offset)
		}
		return ok && o.Err == nil
	})
}
