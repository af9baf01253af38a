package compat

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// produceTo sends one record for topic/0 straight to the node at addr, at
// Produce version v, and returns the partition's answer.
func produceTo(t *testing.T, addr string, v int16, topic, value string) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	vers := kversion.Stable()
	vers.SetMaxKeyVersion(0, v)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.MaxVersions(vers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrProduceRequest()
	req.Acks = -1
	req.TimeoutMillis = 5000
	rec := kgo.Record{Value: []byte(value)}
	req.Topics = []kmsg.ProduceRequestTopic{{Topic: topic, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: produceBatch(t, &rec)}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	pr := resp.(*kmsg.ProduceResponse)
	if pr.Version != v {
		t.Fatalf("asked for Produce v%d, sent v%d", v, pr.Version)
	}
	return pr.Topics[0].Partitions[0]
}

// TestProduceForwardedForClientsWithoutHints: a Produce below v10 (kafka-go,
// sarama: clients that cannot read a KIP-951 leader hint) sent to a node
// that does not lead the partition is written through the leader, and
// acknowledged with the offset the leader gave it. From v10 the client is
// sent to the leader with a hint instead.
func TestProduceForwardedForClientsWithoutHints(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "fwd", 1, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	leader := c.leaderOf(1, "fwd", 0)
	if leader <= 0 {
		t.Fatal("no leader for fwd-0")
	}
	away := int(leader)%3 + 1

	old := produceTo(t, c.node(away).kafka, 9, "fwd", "via-follower")
	if old.ErrorCode != 0 {
		t.Fatalf("Produce v9 to node %d (leader %d): %v", away, leader, kerr.ErrorForCode(old.ErrorCode))
	}
	direct := produceTo(t, c.node(int(leader)).kafka, 9, "fwd", "direct")
	if direct.ErrorCode != 0 || direct.BaseOffset != old.BaseOffset+1 {
		t.Fatalf("the leader answered %v at offset %d after the forwarded write at %d", kerr.ErrorForCode(direct.ErrorCode), direct.BaseOffset, old.BaseOffset)
	}
	hinted := produceTo(t, c.node(away).kafka, 10, "fwd", "hinted")
	if hinted.ErrorCode != kerr.NotLeaderForPartition.Code || hinted.CurrentLeader.LeaderID != leader {
		t.Fatalf("Produce v10 to a follower: %v, hint %d; want NOT_LEADER naming %d", kerr.ErrorForCode(hinted.ErrorCode), hinted.CurrentLeader.LeaderID, leader)
	}
	recs := consumeAll(t, c, "fwd", 2)
	if string(recs[0].Value) != "via-follower" || recs[0].Offset != old.BaseOffset || string(recs[1].Value) != "direct" {
		t.Fatalf("read back %q@%d, %q; want the forwarded record at %d, then the direct one", recs[0].Value, recs[0].Offset, recs[1].Value, old.BaseOffset)
	}
	if v, ok := c.metric(away, "chronik_produce_forwarded_total"); !ok || v != 1 {
		t.Errorf("node %d reports %v forwarded partitions; want 1", away, v)
	}
}
