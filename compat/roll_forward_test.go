package compat

import (
	"context"
	"strings"
	"syscall"
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

// TestStoppingNodeWaitsForHintlessWriter: a node that stops while a
// client without leader hints (Produce v8, not idempotent: kafka-go's
// Writer) writes a partition through it answers that partition
// NOT_LEADER once, then keeps forwarding it, and stays up while the
// client keeps writing (--forward-wait); once the client closes its
// connection (kafka-go does when its refreshed metadata no longer lists
// the node) it exits at once.
func TestStoppingNodeWaitsForHintlessWriter(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "fwdwait", 1, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	leader := c.leaderOf(1, "fwdwait", 0)
	if leader <= 0 {
		t.Fatal("no leader for fwdwait-0")
	}
	away := int(leader)%3 + 1
	vers := kversion.Stable()
	vers.SetMaxKeyVersion(0, 8)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.node(away).kafka), kgo.MaxVersions(vers))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	type answer struct {
		at   time.Time
		code int16
	}
	answers := make(chan answer, 1024)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(answers)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			req := kmsg.NewPtrProduceRequest()
			req.Acks, req.TimeoutMillis = -1, 5000
			rec := kgo.Record{Value: []byte("w")}
			req.Topics = []kmsg.ProduceRequestTopic{{Topic: "fwdwait", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: produceBatch(t, &rec)}}}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := cl.SeedBrokers()[0].Request(ctx, req)
			cancel()
			if err != nil {
				answers <- answer{time.Now(), -2}
				return
			}
			answers <- answer{time.Now(), resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode}
		}
	}()
	// Forwarded before the stop too: the node does not lead the partition.
	for n := 0; n < 5; {
		if a := <-answers; a.code != 0 {
			t.Fatalf("before the stop: %v", kerr.ErrorForCode(a.code))
		}
		n++
	}
	nd := c.node(away)
	term := time.Now()
	nd.cmd.Process.Signal(syscall.SIGTERM)
	told, okAfter := 0, 0
	for a := range answers {
		switch {
		case a.code == kerr.NotLeaderForPartition.Code:
			told++
		case a.code == 0 && a.at.After(term):
			okAfter++
		case a.code != 0:
			t.Fatalf("%v after SIGTERM: want one NOT_LEADER, then forwarded writes", kerr.ErrorForCode(a.code))
		}
		if time.Since(term) > 2*time.Second {
			break
		}
	}
	if told != 1 || okAfter < 10 || !nd.running() {
		t.Fatalf("2 s after SIGTERM: %d NOT_LEADER answers, %d forwarded writes, node running %v; want 1, 10 or more, true", told, okAfter, nd.running())
	}
	close(stop)
	<-done
	cl.Close()
	closed := time.Now()
	select {
	case <-nd.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the node did not exit after the client closed its connection")
	}
	// The wait ends at the close, or 2 s (forwardQuiet) after the last
	// write at the latest; 3x for CI noise.
	if d := time.Since(closed); d > 6*time.Second {
		t.Errorf("the node exited %v after the client closed its connection", d.Round(time.Millisecond))
	}
	t.Logf("node %d: exited %v after SIGTERM, %v after the client left", away, time.Since(term).Round(time.Millisecond), time.Since(closed).Round(time.Millisecond))
	if !strings.Contains(nd.log.String(), "client connections that do not follow leader hints until they moved") {
		t.Errorf("the node did not log the forward wait\n%s", nd.log.tail(3000))
	}
}
