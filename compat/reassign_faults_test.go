package compat

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Moves that are slowed, cancelled and crashed. The throttle keeps the
// new replica catching up for seconds, so the test can act mid-move.

// slowMoveCluster is 4 nodes with a learner throttle of rate bytes/s and
// a topic of parts partitions on nodes 1-3 holding about bytes of records
// in all, so adding a replica of all of it takes about bytes/rate.
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
	c, adm, _ := slowMoveCluster(t, topic, 1, 500<<10, envInt("CHRONIK_TEST_CANCEL_BYTES", 3<<20))
	l := startLoader(t, c, topic, 100)
	l.waitAcks(100, 30*time.Second)
	reassign(t, adm, topic, map[int32][]int32{0: {2, 3, 4}})
	waitFor(t, 20*time.Second, "node 4 to open its replica", func() bool { return c.hasReplicaDir(4, topic, 0) })
	moves, err := listMoves(adm, topic)
	if err != nil || len(moves) != 1 {
		t.Fatalf("the move is not listed while node 4 catches up: %v %v", moves, err)
	}
	checkMoveVisible(t, c, topic)
	var req kadm.AlterPartitionAssignmentsReq
	req.CancelAssign(topic, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil || resp[topic][0].Err != nil {
		t.Fatalf("cancel: %v %v", err, resp[topic][0].Err)
	}
	took := waitMovesDone(t, adm, topic, 30*time.Second)
	checkReplicas(t, c, topic, map[int32][]int32{0: {1, 2, 3}})
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
	c, adm, _ := slowMoveCluster(t, topic, 1, 500<<10, envInt("CHRONIK_TEST_KILL_BYTES", 3<<20))
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
	checkReplicas(t, c, topic, map[int32][]int32{0: {2, 3, 4}})
	waitFor(t, 20*time.Second, "node 1's replica to go", func() bool { return !c.hasReplicaDir(1, topic, 0) })
	l.waitAcks(l.ackedCount()+100, 30*time.Second)
	l.halt()
	stalls := l.stallsBetween(start, time.Now())
	l.checkDelivered(t, c, "the move with node "+strconv.Itoa(victim)+" killed")
	t.Logf("killed node %d (%s) mid-move; the move completed %v after the restart, %v after the request; ack gaps %s; %s",
		victim, who, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), stallSummary(stalls), l.report())
}

// TestReassignThrottle: with a learner throttle of R bytes/s, adding a
// replica to partitions holding B bytes in all takes about B/R (a wide
// margin for a loaded machine). The producer's gaps between acks during
// the move are reported next to those before it.
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

// checkMoveVisible: while topic-0 moves 1,2,3 -> 2,3,4, every node's
// /health lists it (adding 4, removing 1), the driving leader says how
// far behind node 4 is and names it a learner in /partitions, the
// metrics count the move, and Metadata lists Kafka's replicas.
func checkMoveVisible(t *testing.T, c *cluster, topic string) {
	t.Helper()
	leader := int(c.leaderOf(2, topic, 0))
	type moveHealth struct {
		Adding        []int32 `json:"adding"`
		Removing      []int32 `json:"removing"`
		EntriesBehind int64   `json:"entries_behind"`
	}
	health := func(id int) (*moveHealth, string) {
		_, body, err := c.get(id, "/health")
		if err != nil {
			t.Fatal(err)
		}
		var h struct {
			Reassignments *struct {
				Count      int                   `json:"count"`
				Partitions map[string]moveHealth `json:"partitions"`
			} `json:"reassignments"`
		}
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("node %d /health: %v", id, err)
		}
		if h.Reassignments == nil || h.Reassignments.Count != 1 {
			return nil, body
		}
		m := h.Reassignments.Partitions[topic+"-0"]
		return &m, body
	}
	// The leader knows how far behind once its first step is through.
	waitFor(t, 5*time.Second, "the leader to report the learner's lag", func() bool {
		m, _ := health(leader)
		return m != nil && m.EntriesBehind >= 0
	})
	for id := 1; id <= 4; id++ {
		m, body := health(id)
		if m == nil {
			t.Fatalf("node %d /health does not list the move: %s", id, body)
		}
		if !slices.Equal(m.Adding, []int32{4}) || !slices.Equal(m.Removing, []int32{1}) {
			t.Errorf("node %d /health: adding %v removing %v", id, m.Adding, m.Removing)
		}
		if (id == leader) != (m.EntriesBehind >= 0) {
			t.Errorf("node %d (leader %d) /health: entries_behind %d", id, leader, m.EntriesBehind)
		}
		if v, ok := c.metric(id, "chronik_partitions_reassigning"); !ok || v != 1 {
			t.Errorf("node %d: chronik_partitions_reassigning %v %v", id, v, ok)
		}
	}
	if got := topicReplicas(t, newFranz(t, c), topic)[0]; !slices.Equal(got, []int32{2, 3, 4, 1}) {
		t.Errorf("Metadata lists replicas %v during the move; want the target, then the replica leaving: [2 3 4 1]", got)
	}
	_, body, _ := c.get(leader, "/partitions")
	var ps []struct {
		Topic    string  `json:"topic"`
		Learners []int32 `json:"learners"`
		Target   []int32 `json:"target"`
	}
	json.Unmarshal([]byte(body), &ps)
	for _, p := range ps {
		if p.Topic == topic && (!slices.Equal(p.Learners, []int32{4}) || !slices.Equal(p.Target, []int32{2, 3, 4})) {
			t.Errorf("leader %d /partitions: learners %v target %v", leader, p.Learners, p.Target)
		}
	}
}

// TestReassignDuringRollingRestart: nodes 1 (leading the move, and leaving)
// and 4 (receiving) restart gracefully, one after the other, in the middle
// of a throttled move: it completes, with no failed request and nothing
// lost.
func TestReassignDuringRollingRestart(t *testing.T) {
	const topic = "roll-move"
	c, adm, _ := slowMoveCluster(t, topic, 1, 300<<10, envInt("CHRONIK_TEST_ROLL_BYTES", 3<<20))
	l := startLoader(t, c, topic, 100)
	l.waitAcks(100, 30*time.Second)
	w := watchMoves(t, c, topic)
	start := time.Now()
	reassign(t, adm, topic, map[int32][]int32{0: {2, 3, 4}})
	waitFor(t, 20*time.Second, "node 4 to open its replica", func() bool { return c.hasReplicaDir(4, topic, 0) })
	for _, id := range []int{1, 4} {
		if moves, err := listMoves(adm, topic); err != nil || len(moves) != 1 {
			t.Fatalf("the move is not listed before node %d restarts: %v %v", id, moves, err)
		}
		c.stop(id, 20*time.Second)
		c.start(id)
		c.waitReady(30 * time.Second)
	}
	took := waitMovesDone(t, adm, topic, 60*time.Second)
	w.check([]int32{4}, []int32{1})
	checkReplicas(t, c, topic, map[int32][]int32{0: {2, 3, 4}})
	waitFor(t, 20*time.Second, "node 1's replica to go", func() bool { return !c.hasReplicaDir(1, topic, 0) })
	l.waitAcks(l.ackedCount()+100, 30*time.Second)
	l.halt()
	stalls := l.stallsBetween(start, time.Now())
	l.checkDelivered(t, c, "the move with nodes 1 and 4 restarted")
	t.Logf("move with nodes 1 and 4 restarted mid-way: done %v after the roll, %v after the request; ack gaps %s; %s",
		took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), stallSummary(stalls), l.report())
}

// TestDeletedWhileDownIsPurged: a topic deleted while a node was down
// leaves that node's replica directories behind; the node deletes them
// once its metadata shows the deletion.
func TestDeletedWhileDownIsPurged(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "gone", 2, 3, nil)
	waitFor(t, 10*time.Second, "node 3's replicas", func() bool { return len(c.replicaDirs(3, "gone")) == 2 })
	c.kill(3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(newFranz(t, c)).DeleteTopics(ctx, "gone")
	if err != nil || resp["gone"].Err != nil {
		t.Fatalf("delete: %v %v", err, resp["gone"].Err)
	}
	c.start(3)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "node 3 to delete the replicas of the deleted topic", func() bool { return len(c.replicaDirs(3, "gone")) == 0 })
}
