package broker

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/chronik-dev/chronik/admin"
)

// newQueueSM is a metadata state machine with topic t of n partitions on
// replicas 1, 2, 3.
func newQueueSM(t *testing.T, n int) *metaSM {
	t.Helper()
	m := newMetaSM(1, nil)
	assign := make([][]int32, n)
	for i := range assign {
		assign[i] = []int32{1, 2, 3}
	}
	if res := m.run(metaCmd{Op: "create_topic", Topic: &topicMeta{Name: "t"}, Assign: assign}); res.Err != 0 {
		t.Fatalf("create: %d", res.Err)
	}
	return m
}

// moveAll submits a move of every listed partition to {4, 2, 3}.
func moveAll(t *testing.T, m *metaSM, limit int, parts ...int32) {
	t.Helper()
	var mv []partitionMove
	for _, p := range parts {
		mv = append(mv, partitionMove{Partition: p, Replicas: []int32{4, 2, 3}})
	}
	res := m.run(metaCmd{Op: "reassign", Name: "t", Moves: mv, Limit: limit})
	for i, c := range res.Codes {
		if c != 0 {
			t.Fatalf("partition %d: code %d", parts[i], c)
		}
	}
}

// states is each partition's move: "-" none, "R" running, "Q<n>" queued.
func states(m *metaSM) string {
	tm, _ := m.topic("t")
	out := ""
	for _, p := range tm.Partitions {
		switch {
		case p.running():
			out += "R "
		case p.queued():
			out += fmt.Sprintf("Q%d ", p.Queue)
		default:
			out += "- "
		}
	}
	return out
}

func finish(t *testing.T, m *metaSM, part int32, limit int) {
	t.Helper()
	tm, _ := m.topic("t")
	p := tm.Partitions[part]
	res := m.run(metaCmd{Op: "reassign_done", Moves: []partitionMove{{Group: p.Group, Replicas: p.Target}}, Limit: limit})
	if res.Codes[0] != 0 {
		t.Fatalf("done %d: %+v", part, res)
	}
}

func TestMoveQueueLimit(t *testing.T) {
	m := newQueueSM(t, 6)
	moveAll(t, m, 2, 0, 1, 2, 3, 4)
	if got := states(m); got != "R R Q3 Q4 Q5 - " {
		t.Fatalf("after submitting 5 with limit 2: %s", got)
	}
	tm, _ := m.topic("t")
	q := tm.Partitions[2]
	// A queued move keeps the current replicas (no node opens a replica
	// for it) but reports what it adds and removes.
	if !slices.Equal(q.Replicas, []int32{1, 2, 3}) || !slices.Equal(q.adding(), []int32{4}) ||
		!slices.Equal(q.removing(), []int32{1}) || q.replicationFactor() != 3 || !q.moving() {
		t.Fatalf("queued partition: %+v adding %v removing %v", q, q.adding(), q.removing())
	}
	// A later submission waits behind the earlier ones.
	moveAll(t, m, 2, 5)
	// A finished move frees a slot for the oldest queued one.
	finish(t, m, 1, 2)
	if got := states(m); got != "R - R Q4 Q5 Q6 " {
		t.Fatalf("after one finished: %s", got)
	}
	if tm, _ := m.topic("t"); !slices.Equal(tm.Partitions[2].Replicas, []int32{4, 2, 3, 1}) || !slices.Equal(tm.Partitions[2].Origin, []int32{1, 2, 3}) {
		t.Fatalf("admitted partition: %+v", tm.Partitions[2])
	}
	// Cancelling a queued move drops it at once, replicas unchanged.
	if res := m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 3}}, Limit: 2}); res.Codes[0] != 0 {
		t.Fatalf("cancel queued: %+v", res)
	}
	// Replacing a queued move keeps its place.
	m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 4, Replicas: []int32{5, 2, 3}}}, Limit: 2})
	if got := states(m); got != "R - R - Q5 Q6 " {
		t.Fatalf("after cancel and replace: %s", got)
	}
	if tm, _ := m.topic("t"); tm.Partitions[3].Target != nil || tm.Partitions[3].Origin != nil || !slices.Equal(tm.Partitions[3].Replicas, []int32{1, 2, 3}) ||
		!slices.Equal(tm.Partitions[4].Target, []int32{5, 2, 3}) {
		t.Fatalf("cancelled %+v, replaced %+v", tm.Partitions[3], tm.Partitions[4])
	}
	// A stale done for a queued move changes nothing.
	tm, _ = m.topic("t")
	if res := m.run(metaCmd{Op: "reassign_done", Moves: []partitionMove{{Group: tm.Partitions[4].Group, Replicas: []int32{5, 2, 3}}}, Limit: 2}); res.Codes[0] == 0 {
		t.Fatalf("done applied to a queued move")
	}
	// A command without a limit (written before queues existed) admits
	// nothing; admit_moves with a higher limit admits the rest.
	m.run(metaCmd{Op: "admit_moves"})
	if got := states(m); got != "R - R - Q5 Q6 " {
		t.Fatalf("after a limitless admit: %s", got)
	}
	if !m.canAdmit(4) || m.canAdmit(2) {
		t.Fatalf("canAdmit(4) %v canAdmit(2) %v", m.canAdmit(4), m.canAdmit(2))
	}
	m.run(metaCmd{Op: "admit_moves", Limit: 4})
	if got := states(m); got != "R - R - R R " {
		t.Fatalf("after admit_moves limit 4: %s", got)
	}
	for _, p := range []int32{0, 2, 4, 5} {
		finish(t, m, p, 2)
	}
	if got := states(m); got != "- - - - - - " || m.canAdmit(-1) {
		t.Fatalf("after all finished: %s", got)
	}
}

func TestMoveQueueUnlimited(t *testing.T) {
	m := newQueueSM(t, 4)
	moveAll(t, m, -1, 0, 1, 2, 3)
	if got := states(m); got != "R R R R " {
		t.Fatalf("unlimited: %s", got)
	}
	// A command from before queues existed (no limit) starts at once too.
	m2 := newQueueSM(t, 2)
	moveAll(t, m2, 0, 0, 1)
	if got := states(m2); got != "R R " {
		t.Fatalf("no limit: %s", got)
	}
	// A limit lowered below the running moves stops nothing already running.
	moveAll(t, m, 1, 0) // replaces partition 0's move with the same target
	if got := states(m); got != "R R R R " {
		t.Fatalf("after a lower limit: %s", got)
	}
}

// The queue is replicated state: a snapshot restores it, and replaying the
// same commands on another node gives the same queue.
func TestMoveQueueReplay(t *testing.T) {
	var cmds []metaCmd
	record := func(m *metaSM, c metaCmd) { cmds = append(cmds, c); m.run(c) }
	m := newMetaSM(1, nil)
	assign := [][]int32{{1, 2, 3}, {1, 2, 3}, {1, 2, 3}, {1, 2, 3}}
	record(m, metaCmd{Op: "create_topic", Topic: &topicMeta{Name: "t"}, Assign: assign})
	record(m, metaCmd{Op: "create_topic", Topic: &topicMeta{Name: "u"}, Assign: assign})
	for _, topic := range []string{"u", "t"} {
		record(m, metaCmd{Op: "reassign", Name: topic, Limit: 3, Moves: []partitionMove{
			{Partition: 0, Replicas: []int32{4, 2, 3}}, {Partition: 1, Replicas: []int32{4, 2, 3}}, {Partition: 2, Replicas: []int32{4, 2, 3}}}})
	}
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored := newMetaSM(2, nil)
	if err := restored.Restore(0, snap); err != nil {
		t.Fatal(err)
	}
	replayed := newMetaSM(3, nil)
	for _, c := range cmds {
		data, _ := json.Marshal(&c) // through the log's encoding
		var back metaCmd
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatal(err)
		}
		replayed.run(back)
	}
	want := states(m)
	if want != "Q4 Q5 Q6 - " {
		t.Fatalf("t: %s", want)
	}
	for name, o := range map[string]*metaSM{"restored": restored, "replayed": replayed} {
		if got := states(o); got != want {
			t.Fatalf("%s: %s, want %s", name, got, want)
		}
		a, _ := m.Snapshot()
		b, _ := o.Snapshot()
		if string(a) != string(b) {
			t.Fatalf("%s state differs:\n%s\n%s", name, a, b)
		}
		// The restored node, as the new controller, admits in the same order.
		u, _ := o.topic("u")
		o.run(metaCmd{Op: "reassign_done", Moves: []partitionMove{{Group: u.Partitions[1].Group, Replicas: []int32{4, 2, 3}}}, Limit: 3})
		if got := states(o); got != "R Q5 Q6 - " {
			t.Fatalf("%s after a done: %s", name, got)
		}
	}
}

// /health counts a queued move at its current replicas: a replication
// factor change 1 -> 3 that waits for a slot is not under-replicated.
func TestMoveQueueHealth(t *testing.T) {
	m := newMetaSM(1, nil)
	m.run(metaCmd{Op: "create_topic", Topic: &topicMeta{Name: "t"}, Assign: [][]int32{{1}, {1}}})
	m.run(metaCmd{Op: "reassign", Name: "t", Limit: 1, Moves: []partitionMove{
		{Partition: 0, Replicas: []int32{1, 2, 3}}, {Partition: 1, Replicas: []int32{1, 2, 3}}}})
	tm, _ := m.topic("t")
	if tm.Partitions[0].replicationFactor() != 3 || tm.Partitions[1].replicationFactor() != 1 {
		t.Fatalf("rf running %d queued %d", tm.Partitions[0].replicationFactor(), tm.Partitions[1].replicationFactor())
	}
	var parts []admin.PartitionStatus
	for i := range tm.Partitions {
		pm := &tm.Partitions[i]
		parts = append(parts, admin.PartitionStatus{Topic: "t", Partition: int32(i), Leader: 1, Replicas: pm.Replicas,
			InSyncReplicas: []int32{1}, Target: pm.Target, Adding: pm.adding(), Removing: pm.removing(), Queued: pm.queued()})
	}
	r := admin.Evaluate(fakeHealth{parts})
	if st := r.Partitions["t-0"].Status; st != admin.StatusUnderReplicated {
		t.Fatalf("running move: %s", st)
	}
	if st := r.Partitions["t-1"].Status; st != admin.StatusHealthy {
		t.Fatalf("queued move: %s", st)
	}
	if r.Reassignments == nil || r.Reassignments.Count != 2 || !r.Reassignments.Partitions["t-1"].Queued || r.Reassignments.Partitions["t-0"].Queued {
		t.Fatalf("reassignments %+v", r.Reassignments)
	}
}

type fakeHealth struct{ parts []admin.PartitionStatus }

func (f fakeHealth) NodeID() int32                       { return 1 }
func (f fakeHealth) ShuttingDown() bool                  { return false }
func (f fakeHealth) Ready() (bool, string)               { return true, "" }
func (f fakeHealth) Nodes() []admin.NodeStatus           { return nil }
func (f fakeHealth) Partitions() []admin.PartitionStatus { return f.parts }
func (f fakeHealth) Process() admin.ProcessInfo          { return admin.ProcessInfo{} }

// ListPartitionReassignments lists queued moves with the replicas they
// will have, and a move of the metadata group's votes as
// __cluster_metadata-0.
func TestListReassignmentsQueuedAndMetaVotes(t *testing.T) {
	m := newQueueSM(t, 2)
	moveAll(t, m, 1, 0, 1)
	b := &Broker{metaSM: m}
	b.mb.id = &identity{MetaVoters: []int32{1, 2, 3}}
	got := b.ListReassignments(nil)
	if len(got) != 2 {
		t.Fatalf("listed %+v", got)
	}
	for _, ri := range got {
		if ri.Topic != "t" || !slices.Equal(ri.Replicas, []int32{4, 2, 3, 1}) || !slices.Equal(ri.Adding, []int32{4}) || !slices.Equal(ri.Removing, []int32{1}) {
			t.Fatalf("partition %d listed %+v", ri.Partition, ri)
		}
	}
	m.mu.Lock()
	m.st.MetaTarget = []int32{2, 3, 4}
	m.mu.Unlock()
	got = b.ListReassignments(map[string][]int32{metaTopic: {0}})
	if len(got) != 1 || got[0].Topic != metaTopic || got[0].Partition != 0 || !slices.Equal(got[0].Replicas, []int32{2, 3, 4, 1}) ||
		!slices.Equal(got[0].Adding, []int32{4}) || !slices.Equal(got[0].Removing, []int32{1}) {
		t.Fatalf("metadata votes listed %+v", got)
	}
	if got = b.ListReassignments(map[string][]int32{"t": {1}}); len(got) != 1 || got[0].Partition != 1 {
		t.Fatalf("filtered to t-1: %+v", got)
	}
}
