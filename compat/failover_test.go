package compat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// probeFailover measures how soon partition p of topic takes writes again
// after t0, with a client that refreshes metadata every 10ms: that is the
// broker's failover, apart from how long a client waits to look again.
func probeFailover(t *testing.T, c *cluster, topic string, p int32, t0 time.Time) time.Duration {
	t.Helper()
	cl := newFranz(t, c, kgo.MetadataMinAge(10*time.Millisecond), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RetryBackoffFn(func(int) time.Duration { return 5 * time.Millisecond }))
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprint("probe-", i))}).FirstErr()
		cancel()
		if err == nil {
			return time.Since(t0)
		}
	}
	t.Fatalf("partition %d took no write within 10s", p)
	return 0
}

// TestKillLeaderUnderLoad: kill -9 the leader under continuous idempotent
// acks=all produce; nothing acknowledged may be lost or duplicated, and the
// partition must take writes again within 2 s.
func TestKillLeaderUnderLoad(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "failover", 3, 3, nil)
	l := startLoader(t, c, "failover", 2000)
	l.waitAcks(2000, 30*time.Second)
	leader := int(c.leaderOf(1, "failover", 0))
	if leader == 0 {
		t.Fatal("partition 0 has no leader")
	}
	killAt := time.Now()
	c.kill(leader)
	server := probeFailover(t, c, "failover", 0, killAt)
	t.Logf("killed node %d (leader of failover-0); it took writes again after %v", leader, server.Round(time.Millisecond))
	if server > 2*time.Second {
		t.Errorf("failover took %v, want at most 2s", server)
	}
	waitFor(t, 10*time.Second, "an ack on partition 0 after the kill", func() bool {
		_, ok := l.firstAckAfter(0, killAt)
		return ok
	})
	first, _ := l.firstAckAfter(0, killAt)
	failover := first.Sub(killAt)
	// A franz-go client at default settings looks for the new leader only
	// once its metadata is MetadataMinAge (5s) old: a dead broker gives it
	// no leader hint.
	t.Logf("the default-settings loader's next ack on that partition came after %v", failover.Round(time.Millisecond))
	l.waitAcks(l.ackedCount()+2000, 30*time.Second)
	c.start(leader)
	c.waitReady(30 * time.Second)
	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	lost, dup := l.verify(c)
	if lost != 0 || dup != 0 {
		t.Fatalf("lost %d acknowledged records, %d duplicates", lost, dup)
	}
	for _, nd := range c.nodes {
		c.waitHealthy(nd.id, 30*time.Second)
	}
}

// TestCommittedOffsetsSurviveCoordinatorLoss: a group commits, the node
// coordinating it is killed with -9, and a new member of the group resumes
// exactly after the committed offsets.
func TestCommittedOffsetsSurviveCoordinatorLoss(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "coord", 3, 3, nil)
	prod := newFranz(t, c, kgo.DefaultProduceTopic("coord"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	produceAll(t, prod, "coord", 300, "c1")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	member := newFranz(t, c, kgo.ConsumeTopics("coord"), kgo.ConsumerGroup("coord-g"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	got := 0
	for got < 300 {
		fs := member.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of 300", got)
		}
		got += len(fs.Records())
	}
	if err := member.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	member.Close()
	// Find and kill the coordinator.
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorKey = "coord-g"
	resp, err := req.RequestWith(ctx, prod)
	if err != nil || resp.ErrorCode != 0 {
		t.Fatalf("find coordinator: %v %v", err, resp)
	}
	t.Logf("killing node %d, the group's coordinator", resp.NodeID)
	c.kill(int(resp.NodeID))
	produceAll(t, prod, "coord", 30, "c2")
	fresh := newFranz(t, c, kgo.ConsumeTopics("coord"), kgo.ConsumerGroup("coord-g"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var vals []string
	for len(vals) < 30 {
		fs := fresh.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("after the coordinator died, got %d of the 30 new records", len(vals))
		}
		fs.EachRecord(func(r *kgo.Record) { vals = append(vals, string(r.Value)) })
	}
	for _, v := range vals {
		if !strings.HasPrefix(v, "c2-") {
			t.Fatalf("a record committed before the coordinator died came back: %q", v[:8])
		}
	}
}
