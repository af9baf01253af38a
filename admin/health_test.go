package admin

import (
	"reflect"
	"testing"
)

func TestEvaluate(t *testing.T) {
	src := &fakeSource{
		nodeID: 1,
		ready:  true,
		parts: []PartitionStatus{
			{Topic: "__meta", Partition: 0, Leader: 1, Replicas: []int32{1, 2, 3}, InSyncReplicas: []int32{1, 2, 3}, Internal: true},
			{Topic: "orders", Partition: 3, Leader: 2, Replicas: []int32{1, 2, 3}, InSyncReplicas: []int32{1, 2}},
			{Topic: "orders", Partition: 4, Leader: 0, Replicas: []int32{2, 3, 4}, InSyncReplicas: nil},
			{Topic: "pairs", Partition: 0, Leader: 1, Replicas: []int32{1, 2}, InSyncReplicas: []int32{2, 1, 1}},
		},
		nodes: []NodeStatus{
			{ID: 1, Kafka: "n1:9092", Connected: true},
			{ID: 4, Kafka: "n4:9092", Connected: false},
		},
	}

	got := Evaluate(src)
	want := Report{
		Status: StatusUnhealthy,
		Partitions: map[string]PartitionHealth{
			"__meta-0": {Leader: 1, InSyncReplicas: []int32{1, 2, 3}, Status: StatusHealthy},
			"orders-3": {Leader: 2, InSyncReplicas: []int32{1, 2}, Status: StatusUnderReplicated},
			"orders-4": {Leader: 0, InSyncReplicas: []int32{}, Status: StatusOffline},
			"pairs-0":  {Leader: 1, InSyncReplicas: []int32{2, 1, 1}, Status: StatusHealthy},
		},
		SafeToRestart: false,
		Reasons: []string{
			"orders-3: in-sync replicas [1 2] of [1 2 3]",
			"orders-3: stopping node 1 leaves 1 in-sync replicas, quorum needs 2",
			"orders-4: no leader",
			"pairs-0: stopping node 1 leaves 1 in-sync replicas, quorum needs 2",
			"node 4 (n4:9092) is not connected",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Evaluate:\n got %+v\nwant %+v", got, want)
	}

	// Same input, same answer: nothing in Evaluate depends on map order.
	for range 20 {
		if again := Evaluate(src); !reflect.DeepEqual(again, want) {
			t.Fatalf("Evaluate not deterministic: %+v", again)
		}
	}
}

func TestEvaluateStatusLevels(t *testing.T) {
	full := func(topic string) PartitionStatus {
		return PartitionStatus{Topic: topic, Leader: 1, Replicas: []int32{1, 2, 3}, InSyncReplicas: []int32{1, 2, 3}}
	}
	tests := []struct {
		name   string
		src    *fakeSource
		status string
		safe   bool
	}{
		{"healthy", &fakeSource{nodeID: 1, ready: true, parts: []PartitionStatus{full("a")}}, StatusHealthy, true},
		{"no partitions", &fakeSource{nodeID: 1, ready: true}, StatusHealthy, true},
		{"not a replica of a lagging partition", &fakeSource{nodeID: 9, ready: true, parts: []PartitionStatus{
			{Topic: "a", Leader: 1, Replicas: []int32{1, 2, 3}, InSyncReplicas: []int32{1, 2}},
		}}, StatusDegraded, false},
		{"not ready", &fakeSource{nodeID: 1, ready: false, parts: []PartitionStatus{full("a")}}, StatusUnhealthy, false},
		{"shutting down", &fakeSource{nodeID: 1, ready: true, shuttingDown: true}, StatusUnhealthy, false},
		{"moving, as many in sync as the target", &fakeSource{nodeID: 2, ready: true, parts: []PartitionStatus{
			{Topic: "a", Leader: 2, Replicas: []int32{4, 2, 3, 1}, InSyncReplicas: []int32{1, 2, 3}, Target: []int32{4, 2, 3}, Adding: []int32{4}, Removing: []int32{1}},
		}}, StatusHealthy, false},
		{"failed replica", &fakeSource{nodeID: 1, ready: true, parts: []PartitionStatus{
			{Topic: "a", Leader: 2, Replicas: []int32{1, 2, 3}, InSyncReplicas: []int32{1, 2, 3}, Failed: "write: no space left on device"},
		}}, StatusUnhealthy, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Evaluate(tc.src)
			if r.Status != tc.status || r.SafeToRestart != tc.safe {
				t.Fatalf("got status %q safe %v (%v), want %q %v", r.Status, r.SafeToRestart, r.Reasons, tc.status, tc.safe)
			}
			if r.Partitions == nil {
				t.Fatalf("nil Partitions map")
			}
		})
	}
}

// TestEvaluateFailedReplica: a replica stopped by a storage error shows in
// its partition's status, with the error, and in the reasons.
func TestEvaluateFailedReplica(t *testing.T) {
	src := &fakeSource{nodeID: 1, ready: true, parts: []PartitionStatus{
		{Topic: "a", Partition: 0, Leader: 1, Replicas: []int32{1}, InSyncReplicas: []int32{1}, Failed: "fsync: input/output error"},
	}}
	r := Evaluate(src)
	ph := r.Partitions["a-0"]
	if ph.Status != StatusFailed || ph.Failed != "fsync: input/output error" {
		t.Fatalf("partition health %+v", ph)
	}
	if r.Status != StatusUnhealthy || len(r.Reasons) == 0 || r.Reasons[0] != "a-0: replica on node 1 failed: fsync: input/output error" {
		t.Fatalf("report %+v", r)
	}
}

func TestHealthListsReassignments(t *testing.T) {
	src := &fakeSource{nodeID: 2, ready: true, parts: []PartitionStatus{
		{Topic: "a", Leader: 2, Replicas: []int32{4, 2, 3, 1}, InSyncReplicas: []int32{1, 2, 3}, Target: []int32{4, 2, 3},
			Adding: []int32{4}, Removing: []int32{1}, EntriesBehind: 120},
		{Topic: "b", Leader: 1, Replicas: []int32{1, 2, 3}, InSyncReplicas: []int32{1, 2, 3}},
	}}
	r := Evaluate(src)
	if r.Reassignments == nil || r.Reassignments.Count != 1 {
		t.Fatalf("reassignments %+v", r.Reassignments)
	}
	if m := r.Reassignments.Partitions["a-0"]; m.EntriesBehind != 120 || len(m.Adding) != 1 || m.Removing[0] != 1 {
		t.Fatalf("a-0: %+v", m)
	}
	if r := Evaluate(&fakeSource{nodeID: 1, ready: true}); r.Reassignments != nil {
		t.Fatal("reassignments listed with none in progress")
	}
}
