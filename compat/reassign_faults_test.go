package compat

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Moves that are slowed, cancelled and crashed. The throttle keeps the
// new replica catching up for seconds, so the test can act mid-move.

// slowMoveCluster is 4 nodes with a learner throttle of rate bytes/s and
// a topic of parts partitions on nodes 1-3 holding about bytes of records
// in all. The throttle lets a message to a learner go whole when the
// node's budget is not in debt (Raft's messages carry up to 4 MiB), so a
// move of B bytes takes about (B - one message)/rate; the sizes below
// keep the new replica catching up for seconds.
func slowMoveCluster(t *testing.T, topic string, parts, rate, bytes int) (*cluster, *kadm.Client, int64) {
	// A learner is promoted once in sync by the ISR rule: holding what the
	// leader had within --isr-lag-time. The preload is that recent, so a
	// short lag time makes the learner hold all of it first.
	c := startCluster(t, 4, withArgs("--rebalance-delay", "500ms", "--isr-lag-time", "1s", "--replication-throttle", strconv.Itoa(rate)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	assign := map[int32][]int32{}
	for p := 0; p < parts; p++ {
		assign[int32(p)] = []int32{1, 2, 3}
	}
	if err := createWithAssignment(ctx, newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	size := 1000
	n := preload(t, c, topic, bytes/size, size)
	return c, kadm.NewClient(newFranz(t, c)), n
}

// TestReassignCancel: a throttled move 1,2,3 -> 2,3,4 is cancelled while
// node 4 catches up: the replicas return to 1,2,3, node 4's replica goes,
// nothing is lost and ListPartitionReassignments lists nothing.
func TestReassignCancel(t *testing.T) {
	const topic = "cancel"
	c, adm, _ := slowMoveCluster(t, topic, 1, 500<<10, envInt("CHRONIK_TEST_CANCEL_BYTES", 6<<20))
	l := startLoader(t, c, topic, 100)
	l.waitAcks(100, 30*time.Second)
	reassign(t, adm, topic, map[int32][]int32{0: {2, 3, 4}})
	waitFor(t, 20*time.Second, "node 4 to open its replica", func() bool { return c.hasReplicaDir(4, topic, 0) })
	moves, err := listMoves(adm, topic)
	if err != nil || len(moves) != 1 {
		t.Fatalf("the move is not listed while node 4 catches up: %v %v", moves, err)
	}
	var req kadm.AlterPartitionAssignmentsReq
	req.CancelAssign(topic, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil || resp[topic][0].Err != nil {
		t.Fatalf("cancel: %v %v", err, resp[topic][0].Err)
	}
	took := waitMovesDone(t, adm, topic, 30*time.Second)
	checkReplicas(t, adm, topic, map[int32][]int32{0: {1, 2, 3}})
	waitFor(t, 10*time.Second, "node 4's replica to go", func() bool { return !c.hasReplicaDir(4, topic, 0) })
	l.waitAcks(l.ackedCount()+100, 30*time.Second)
	l.halt()
	l.checkDelivered(t, c, "the cancelled move")
	t.Logf("cancel completed in %v; %s", took.Round(time.Millisecond), l.report())
}

// TestReassignKillDriver: kill -9 the leader driving a throttled move,
// mid-move; the new leader finishes it (and the killed node, restarted,
// drops its replica), with nothing lost and the listing consistent.
func TestReassignKillDriver(t *testing.T) {
	testReassignKill(t, "driver")
}

// TestReassignKillReceiver: the same with kill -9 of the node receiving
// the new replica; after its restart it catches up and the move completes.
func TestReassignKillReceiver(t *testing.T) {
	testReassignKill(t, "receiver")
}

func testReassignKill(t *testing.T, who string) {
	topic := "kill-" + who
	c, adm, _ := slowMoveCluster(t, topic, 1, 500<<10, envInt("CHRONIK_TEST_KILL_BYTES", 6<<20))
	l := startLoader(t, c, topic, 100)
	l.waitAcks(100, 30*time.Second)
	w := watchMoves(t, c, topic)
	start := time.Now()
	reassign(t, adm, topic, map[int32][]int32{0: {2, 3, 4}})
	waitFor(t, 20*time.Second, "node 4 to open its replica", func() bool { return c.hasReplicaDir(4, topic, 0) })
	victim := 4
	if who == "driver" {
		waitFor(t, 10*time.Second, "a leader", func() bool { return c.leaderOf(2, topic, 0) > 0 })
		victim = int(c.leaderOf(2, topic, 0))
	}
	time.Sleep(500 * time.Millisecond) // mid-catch-up
	if moves, err := listMoves(adm, topic); err != nil || len(moves) != 1 {
		t.Fatalf("the move is not listed before the kill: %v %v", moves, err)
	}
	c.kill(victim)
	time.Sleep(time.Second)
	if moves, err := listMoves(adm, topic); err == nil && len(moves) != 1 && who == "receiver" {
		t.Fatalf("listed as done while its receiver is down: %v", moves)
	}
	c.start(victim)
	took := waitMovesDone(t, adm, topic, 60*time.Second)
	w.check([]int32{4}, []int32{1})
	checkReplicas(t, adm, topic, map[int32][]int32{0: {2, 3, 4}})
	waitFor(t, 20*time.Second, "node 1's replica to go", func() bool { return !c.hasReplicaDir(1, topic, 0) })
	l.waitAcks(l.ackedCount()+100, 30*time.Second)
	l.halt()
	stalls := l.stallsBetween(start, time.Now())
	l.checkDelivered(t, c, "the move with node "+strconv.Itoa(victim)+" killed")
	t.Logf("killed node %d (%s) mid-move; the move completed %v after the restart, %v after the request; ack gaps %s; %s",
		victim, who, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), stallSummary(stalls), l.report())
}

// TestReassignThrottle: with a learner throttle of R bytes/s, adding a
// replica of a partition holding B bytes takes about B/R (a wide margin:
// the throttle counts Raft messages, with their framing, and the group
// sends only at heartbeats while held back). The producer's ack gaps
// during the move are reported next to those before it.
func TestReassignThrottle(t *testing.T) {
	const topic = "throttled"
	rate := envInt("CHRONIK_TEST_THROTTLE_RATE", 2<<20)
	parts := envInt("CHRONIK_TEST_THROTTLE_PARTITIONS", 4)
	c, adm, size := slowMoveCluster(t, topic, parts, rate, envInt("CHRONIK_TEST_THROTTLE_BYTES", 8<<20))
	l := startLoader(t, c, topic, 200)
	l.waitAcks(400, 30*time.Second)
	before := time.Now()
	time.Sleep(2 * time.Second)
	start := time.Now()
	targets := map[int32][]int32{}
	for p := 0; p < parts; p++ {
		targets[int32(p)] = []int32{1, 2, 3, 4}
	}
	reassign(t, adm, topic, targets)
	took := waitMovesDone(t, adm, topic, 90*time.Second)
	end := time.Now()
	l.waitAcks(l.ackedCount()+100, 30*time.Second)
	l.halt()
	calm, moving := l.gapsBetween(before, start), l.gapsBetween(start, end)
	l.checkDelivered(t, c, "the throttled move")
	want := time.Duration(float64(size) / float64(rate) * float64(time.Second))
	if took < want/2 || took > 3*want+5*time.Second {
		t.Errorf("catch-up of %d bytes at %d B/s took %v; expected about %v", size, rate, took.Round(time.Millisecond), want.Round(time.Millisecond))
	}
	t.Logf("catch-up of %d bytes at %d B/s took %v (size/rate %v); gaps between acks before the move %s, during it %s",
		size, rate, took.Round(time.Millisecond), want.Round(time.Millisecond), stallSummary(calm), stallSummary(moving))
}
