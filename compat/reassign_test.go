package compat

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestReassignMoveUnderLoad: a 4-node cluster, a topic with RF 3 on nodes
// 1-3 under acks=all idempotent load; kadm moves every partition to nodes
// 2-4. ListPartitionReassignments shows node 4 adding and node 1 removing
// while it runs and nothing after, Metadata lists the new replicas, node
// 1's replica directories are gone, each target's first replica leads,
// and no acknowledged record is lost or duplicated. CHRONIK_TEST_MOVE_PARTITIONS sets the partition count.
func TestReassignMoveUnderLoad(t *testing.T) {
	c := startCluster(t, 4, withArgs("--rebalance-delay", "500ms"))
	adm := kadm.NewClient(newFranz(t, c))
	const topic = "moving"
	parts := envInt("CHRONIK_TEST_MOVE_PARTITIONS", 3)
	assign, targets := map[int32][]int32{}, map[int32][]int32{}
	for p := 0; p < parts; p++ {
		assign[int32(p)] = rotate([]int32{1, 2, 3}, p)
		targets[int32(p)] = rotate([]int32{2, 3, 4}, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := createWithAssignment(ctx, newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	l := startLoader(t, c, topic, 300)
	l.waitAcks(300, 30*time.Second)

	w := watchMoves(t, c, topic)
	start := time.Now()
	reassign(t, adm, topic, targets)
	took := waitMovesDone(t, adm, topic, 60*time.Second)
	end := time.Now()
	w.check([]int32{4}, []int32{1})
	checkReplicas(t, c, topic, targets)
	waitFor(t, 10*time.Second, "node 1's replica directories to go", func() bool { return len(c.replicaDirs(1, topic)) == 0 })
	for p := range targets {
		if !c.hasReplicaDir(4, topic, p) {
			t.Errorf("node 4 has no replica of partition %d", p)
		}
	}
	waitPreferredLeaders(t, c, 2, topic, targets, 15*time.Second)
	// The load keeps going on the new replicas.
	l.waitAcks(l.ackedCount()+300, 30*time.Second)
	l.halt()
	stalls := l.stallsBetween(start, end.Add(time.Second))
	before, after := l.stallsBetween(l.started, start), l.stallsBetween(end.Add(time.Second), time.Now())
	l.checkDelivered(t, c, "the move")
	checkStalls(t, stalls, 5*time.Second, " during the move")
	t.Logf("moved %d partitions 1,2,3 -> 2,3,4 in %v; per-partition longest ack gap %s (before %s, after %s); %s",
		parts, took.Round(time.Millisecond), stallSummary(stalls), stallSummary(before), stallSummary(after), l.report())
}

// TestReassignReplicationFactor: a topic's replication factor goes 1 -> 3
// with kadm and 3 -> 2 with sarama's ClusterAdmin on a 3-node cluster
// under load; each step completes with Metadata listing the new replicas
// and nothing lost.
func TestReassignReplicationFactor(t *testing.T) {
	c := startCluster(t, 3, withArgs("--rebalance-delay", "500ms"))
	adm := kadm.NewClient(newFranz(t, c))
	const topic = "rf"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := createWithAssignment(ctx, newFranz(t, c), topic, map[int32][]int32{0: {1}, 1: {2}}); err != nil {
		t.Fatal(err)
	}
	l := startLoader(t, c, topic, 200)
	l.waitAcks(200, 30*time.Second)

	start := time.Now()
	up := map[int32][]int32{0: {1, 2, 3}, 1: {2, 3, 1}}
	reassign(t, adm, topic, up)
	upTook := waitMovesDone(t, adm, topic, 60*time.Second)
	checkReplicas(t, c, topic, up)
	upStalls := l.stallsBetween(start, time.Now())

	sadm, err := sarama.NewClusterAdmin(c.bootstrap(), saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sadm.Close()
	down := [][]int32{{1, 2}, {2, 3}}
	start = time.Now()
	if err := sadm.AlterPartitionReassignments(topic, down); err != nil {
		t.Fatalf("sarama AlterPartitionReassignments: %v", err)
	}
	waitFor(t, 60*time.Second, "sarama to list no reassignment", func() bool {
		st, err := sadm.ListPartitionReassignments(topic, []int32{0, 1})
		return err == nil && len(st[topic]) == 0
	})
	downTook := time.Since(start)
	checkReplicas(t, c, topic, map[int32][]int32{0: down[0], 1: down[1]})
	waitFor(t, 10*time.Second, "node 3's replica of partition 0 to go", func() bool { return !c.hasReplicaDir(3, topic, 0) })
	waitFor(t, 10*time.Second, "node 1's replica of partition 1 to go", func() bool { return !c.hasReplicaDir(1, topic, 1) })
	downStalls := l.stallsBetween(start, time.Now())
	l.waitAcks(l.ackedCount()+200, 30*time.Second)
	l.halt()
	l.checkDelivered(t, c, "the replication factor changes")
	checkStalls(t, upStalls, 5*time.Second, " during RF 1 -> 3")
	checkStalls(t, downStalls, 5*time.Second, " during RF 3 -> 2")
	t.Logf("RF 1 -> 3 took %v (ack gaps %s); RF 3 -> 2 (sarama) took %v (ack gaps %s); %s",
		upTook.Round(time.Millisecond), stallSummary(upStalls), downTook.Round(time.Millisecond), stallSummary(downStalls), l.report())
}

// TestReassignRefusals: Kafka's error codes for targets that cannot be.
func TestReassignRefusals(t *testing.T) {
	c := startCluster(t, 3)
	adm := kadm.NewClient(newFranz(t, c))
	createTopic(t, c, "refuse", 1, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := []struct {
		topic string
		p     int32
		reps  []int32
		want  error
	}{
		{"refuse", 0, []int32{1, 9, 2}, kerr.InvalidReplicaAssignment},
		{"refuse", 0, []int32{1, 1, 2}, kerr.InvalidReplicaAssignment},
		{"refuse", 0, []int32{}, kerr.InvalidReplicaAssignment},
		{"refuse", 0, nil, kerr.NoReassignmentInProgress},
		{"refuse", 7, []int32{1}, kerr.UnknownTopicOrPartition},
		{"nosuch", 0, []int32{1}, kerr.UnknownTopicOrPartition},
	}
	for _, tc := range cases {
		var req kadm.AlterPartitionAssignmentsReq
		req.Assign(tc.topic, tc.p, tc.reps)
		resp, err := adm.AlterPartitionAssignments(ctx, req)
		if err != nil {
			t.Fatalf("%v: %v", tc.reps, err)
		}
		if got := resp[tc.topic][tc.p].Err; !errors.Is(got, tc.want) {
			t.Errorf("%s-%d -> %v: got %v, want %v", tc.topic, tc.p, tc.reps, got, tc.want)
		}
	}
	// v1 without AllowReplicationFactorChange: another replica count is
	// refused, the same count is not.
	for _, tc := range []struct {
		reps []int32
		want int16
	}{{[]int32{1, 2}, kerr.InvalidReplicationFactor.Code}, {[]int32{2, 3, 1}, 0}} {
		req := kmsg.NewPtrAlterPartitionAssignmentsRequest()
		req.Version, req.AllowReplicationFactorChange = 1, false
		req.Topics = []kmsg.AlterPartitionAssignmentsRequestTopic{{Topic: "refuse",
			Partitions: []kmsg.AlterPartitionAssignmentsRequestTopicPartition{{Partition: 0, Replicas: tc.reps}}}}
		resp, err := req.RequestWith(ctx, newFranz(t, c))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Topics[0].Partitions[0].ErrorCode; got != tc.want {
			t.Errorf("RF change not allowed, %v: error %d, want %d", tc.reps, got, tc.want)
		}
	}
	waitMovesDone(t, adm, "refuse", 30*time.Second)
	// A reorder only moves the preferred leader: nothing to list, at once.
	reassign(t, adm, "refuse", map[int32][]int32{0: {3, 1, 2}})
	if moves, err := listMoves(adm, "refuse"); err != nil || len(moves) != 0 {
		t.Fatalf("reorder listed as a move: %v %v", moves, err)
	}
	if got := topicReplicas(t, newFranz(t, c), "refuse")[0]; !slices.Equal(got, []int32{3, 1, 2}) {
		t.Fatalf("replicas after a reorder: %v", got)
	}
}

// TestReassignOffsetsPartitions: the partitions of __consumer_offsets move
// like any other (node 1 replaced by node 4): committed offsets survive
// the move and new commits keep working.
func TestReassignOffsetsPartitions(t *testing.T) {
	c := startCluster(t, 4, withArgs("--rebalance-delay", "500ms"))
	cl := newFranz(t, c)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	createTopic(t, c, "offsets-src", 3, 3, nil)
	groups := []string{"g-a", "g-b", "g-c", "g-d", "g-e", "g-f"}
	commit := func(at int64) {
		t.Helper()
		for _, g := range groups {
			var os kadm.Offsets
			for p := int32(0); p < 3; p++ {
				os.Add(kadm.Offset{Topic: "offsets-src", Partition: p, At: at, LeaderEpoch: -1})
			}
			resp, err := adm.CommitOffsets(ctx, g, os)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				t.Fatalf("commit %s at %d: %v", g, at, err)
			}
		}
	}
	check := func(at int64) {
		t.Helper()
		for _, g := range groups {
			// Right after a move the group's coordinator may still be
			// taking over (COORDINATOR_NOT_AVAILABLE, retriable).
			var offs kadm.OffsetResponses
			var err error
			waitFor(t, 10*time.Second, "the offsets of "+g, func() bool {
				offs, err = adm.FetchOffsets(ctx, g)
				return err == nil || !kerr.IsRetriable(err)
			})
			if err != nil {
				t.Fatalf("fetch offsets of %s: %v", g, err)
			}
			for p := int32(0); p < 3; p++ {
				if o, ok := offs.Lookup("offsets-src", p); !ok || o.At != at {
					t.Errorf("group %s partition %d: committed %v (found %v), want %d", g, p, o.At, ok, at)
				}
			}
		}
	}
	commit(7)
	const offsets = "__consumer_offsets"
	targets := map[int32][]int32{}
	for p, reps := range topicReplicas(t, newFranz(t, c), offsets) {
		if i := slices.Index(reps, 1); i >= 0 && !slices.Contains(reps, 4) {
			target := slices.Clone(reps)
			target[i] = 4
			targets[p] = target
		}
	}
	if len(targets) == 0 {
		t.Fatal("no offsets partition on node 1")
	}
	start := time.Now()
	reassign(t, adm, offsets, targets)
	took := waitMovesDone(t, adm, offsets, 60*time.Second)
	checkReplicas(t, c, offsets, targets)
	check(7)
	commit(9)
	check(9)
	for p := range targets {
		waitFor(t, 10*time.Second, "node 1's offsets replica to go", func() bool { return !c.hasReplicaDir(1, offsets, p) })
	}
	t.Logf("moved %d offsets partitions off node 1 in %v (%v with the checks)", len(targets), took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
