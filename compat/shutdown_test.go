package compat

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// createWithAssignment creates a topic with explicit replica assignments.
func createWithAssignment(ctx context.Context, cl *kgo.Client, topic string, assign map[int32][]int32) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 30000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = topic
	rt.NumPartitions = -1
	rt.ReplicationFactor = -1
	for p, reps := range assign {
		rt.ReplicaAssignment = append(rt.ReplicaAssignment, kmsg.CreateTopicsRequestTopicReplicaAssignment{Partition: p, Replicas: reps})
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.Topics[0].ErrorCode)
}

// TestShutdownLeaderOfEverything: one node leads all 100 partitions of a
// topic (and more) when it gets SIGTERM under load. It must hand every one
// of them off and exit within 2 s, with nothing lost and no failed request.
func TestShutdownLeaderOfEverything(t *testing.T) {
	c := startCluster(t, 3, withArgs("--rebalance-delay", "200ms"))
	cl := newFranz(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Node 1 is every partition's preferred (first) replica.
	assign := map[int32][]int32{}
	for p := int32(0); p < 100; p++ {
		assign[p] = []int32{1, 2, 3}
	}
	if err := createWithAssignment(ctx, cl, "all", assign); err != nil {
		t.Fatalf("create: %v", err)
	}
	waitFor(t, 30*time.Second, "node 1 to lead all 100 partitions", func() bool {
		ps, err := c.partitions(2)
		if err != nil {
			return false
		}
		n := 0
		for _, p := range ps {
			if p.Topic == "all" && p.Leader == 1 && len(p.InSyncReplicas) == 3 {
				n++
			}
		}
		return n == 100
	})
	l := startLoader(t, c, "all", 3000)
	l.waitAcks(3000, 30*time.Second)
	start := time.Now()
	c.stop(1, 30*time.Second)
	took := time.Since(start)
	checkShutdownLog(t, c.node(1))
	line := c.node(1).log.lines("Graceful shutdown complete")
	t.Logf("SIGTERM to exit: %v; %s", took.Round(time.Millisecond), line[0][strings.Index(line[0], "msg="):])
	ds := transferDurations(c.node(1))
	if len(ds) < 100 {
		t.Fatalf("only %d transfers logged", len(ds))
	}
	t.Logf("transfers: %d, p50 %v, p99 %v, max %v", len(ds), percentile(ds, 0.5), percentile(ds, 0.99), ds[len(ds)-1])
	if took > 2*time.Second {
		t.Errorf("shutdown of a node leading 100 partitions took %v, want at most 2s", took)
	}
	if !strings.Contains(line[0], " 0 failed") {
		t.Errorf("failed transfers: %s", line[0])
	}
	l.waitAcks(l.ackedCount()+3000, 30*time.Second)
	c.start(1)
	c.waitReady(30 * time.Second)
	l.halt()
	t.Log(l.report())
	l.mu.Lock()
	errs := len(l.errs)
	l.mu.Unlock()
	if errs != 0 {
		t.Errorf("produce errors: %v", l.errs)
	}
	lost, dup := l.verify(c)
	if lost != 0 || dup != 0 {
		t.Fatalf("lost %d acknowledged records, %d duplicates", lost, dup)
	}
}

// TestWholeClusterStop: every node gets SIGTERM at once (Ctrl-C on
// `make run`, a host reboot). No node can hand off to a peer that is
// leaving too; each must notice that at once instead of waiting out a
// transfer timeout, exit cleanly, and keep every acknowledged record.
func TestWholeClusterStop(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "whole", 6, 3, nil)
	l := startLoader(t, c, "whole", 3000)
	l.waitAcks(2000, 30*time.Second)
	l.halt()
	start := time.Now()
	for _, nd := range c.nodes {
		nd.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, nd := range c.nodes {
		select {
		case <-nd.exited:
			if nd.exitErr != nil {
				t.Fatalf("node %d exited with %v\n%s", nd.id, nd.exitErr, nd.log.tail(4000))
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("node %d still running 20s after SIGTERM\n%s", nd.id, nd.log.tail(4000))
		}
	}
	t.Logf("all 3 nodes exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	for _, nd := range c.nodes {
		if len(nd.log.lines("Graceful shutdown complete")) != 1 {
			t.Errorf("node %d: no clean shutdown line\n%s", nd.id, nd.log.tail(3000))
		}
		// A peer that is leaving is no transfer target; nothing should have
		// waited for a transfer to time out, nor for leadership to move, nor
		// for clients to hear of leaders that are stopping too.
		for _, bad := range []string{"Leadership transfer timeout", "still leader after transfers", "find the new leaders through metadata"} {
			if got := nd.log.lines(bad); len(got) > 0 {
				t.Errorf("node %d: %s", nd.id, got[0])
			}
		}
	}
	for _, nd := range c.nodes {
		c.start(nd.id)
	}
	c.waitReady(30 * time.Second)
	t.Log(l.report())
	lost, dup := l.verify(c)
	if lost != 0 || dup != 0 {
		t.Fatalf("lost %d acknowledged records, %d duplicates", lost, dup)
	}
}

// TestShutdownSendsModestProducerOn: a producer writing every 50 ms (so a
// node's whole graceful stop, ~10 ms, can fall between two of its
// requests) must still be sent on to the new leader before the node closes
// its connection. Had it found the port closed instead, franz-go would wait
// for its next metadata refresh, up to 5 s after the last one.
func TestShutdownSendsModestProducerOn(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "modest", 1, 3, nil)
	var leader int32
	waitFor(t, 20*time.Second, "a leader for modest-0", func() bool {
		leader = c.leaderOf(1, "modest", 0)
		return leader > 0
	})
	cl := newFranz(t, c, kgo.DefaultProduceTopic("modest"), kgo.ProducerLinger(0))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var acks []time.Time
	stopped := false
	for i := 0; i < 60; i++ {
		if i == 20 {
			// The client's metadata is about a second old: a refresh it
			// asked for now would wait out franz-go's 5 s minimum age.
			c.node(int(leader)).cmd.Process.Signal(syscall.SIGTERM)
			stopped = true
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatalf("record %d (leader stopped: %v): %v", i, stopped, err)
		}
		acks = append(acks, time.Now())
		time.Sleep(50 * time.Millisecond)
	}
	c.stop(int(leader), 30*time.Second) // waits for the exit
	var worst time.Duration
	for i := 1; i < len(acks); i++ {
		worst = max(worst, acks[i].Sub(acks[i-1]))
	}
	t.Logf("longest gap between acks: %v (50 ms apart when nothing happens)", worst.Round(time.Millisecond))
	if lines := c.node(int(leader)).log.lines("active client connections"); len(lines) > 0 {
		t.Log(lines[0][strings.Index(lines[0], "msg="):])
	}
	if worst > time.Second {
		t.Errorf("the producer went %v without an ack across the leader's graceful stop; want under 1s", worst.Round(time.Millisecond))
	}
}
