package broker

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// newMovingSM is a metadata state machine with topic t, one partition on
// replicas.
func newMovingSM(t *testing.T, replicas ...int32) *metaSM {
	t.Helper()
	m := newMetaSM(1, nil)
	m.mu.Lock()
	defer m.mu.Unlock()
	if res := m.apply(&metaCmd{Op: "create_topic", Topic: &topicMeta{Name: "t"}, Assign: [][]int32{replicas}}); res.Err != 0 {
		t.Fatalf("create: %d", res.Err)
	}
	return m
}

func (m *metaSM) run(cmd metaCmd) metaResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.apply(&cmd)
}

func (m *metaSM) part0() partitionMeta {
	t, _ := m.topic("t")
	return t.Partitions[0]
}

func TestReassignMoveAndDone(t *testing.T) {
	m := newMovingSM(t, 1, 2, 3)
	res := m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 0, Replicas: []int32{4, 2, 3}}}})
	if res.Err != 0 || res.Codes[0] != 0 {
		t.Fatalf("reassign: %+v", res)
	}
	p := m.part0()
	if !slices.Equal(p.Replicas, []int32{4, 2, 3, 1}) || !slices.Equal(p.adding(), []int32{4}) || !slices.Equal(p.removing(), []int32{1}) {
		t.Fatalf("during the move: replicas %v adding %v removing %v", p.Replicas, p.adding(), p.removing())
	}
	if !slices.Equal(p.origin(), []int32{1, 2, 3}) || p.replicationFactor() != 3 {
		t.Fatalf("origin %v rf %d", p.origin(), p.replicationFactor())
	}
	// A report for another target is stale.
	res = m.run(metaCmd{Op: "reassign_done", Moves: []partitionMove{{Group: p.Group, Replicas: []int32{2, 3, 4}}}})
	if res.Codes[0] != kerr.NoReassignmentInProgress.Code || !func() bool { p := m.part0(); return p.moving() }() {
		t.Fatalf("stale done applied: %+v", res)
	}
	res = m.run(metaCmd{Op: "reassign_done", Moves: []partitionMove{{Group: p.Group, Replicas: []int32{4, 2, 3}}}})
	p = m.part0()
	if res.Codes[0] != 0 || p.moving() || !slices.Equal(p.Replicas, []int32{4, 2, 3}) || !slices.Equal(p.Origin, []int32{1, 2, 3}) {
		t.Fatalf("after done: %+v %+v", res, p)
	}
	// The next move keeps the bootstrap voters.
	m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 0, Replicas: []int32{5}}}})
	if p = m.part0(); !slices.Equal(p.Origin, []int32{1, 2, 3}) || !slices.Equal(p.Prior, []int32{4, 2, 3}) {
		t.Fatalf("second move: %+v", p)
	}
}

func TestReassignCancelAndReplace(t *testing.T) {
	m := newMovingSM(t, 1, 2, 3)
	res := m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 0}}})
	if res.Codes[0] != kerr.NoReassignmentInProgress.Code {
		t.Fatalf("cancel with none: %+v", res)
	}
	m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 0, Replicas: []int32{2, 3, 4}}}})
	// Replaced by another target: node 4 may be in the group already, so it
	// stays listed (removing) until the leader reports the new target.
	m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 0, Replicas: []int32{2, 3, 5}}}})
	p := m.part0()
	if !slices.Equal(p.Replicas, []int32{2, 3, 5, 4, 1}) || !slices.Equal(p.adding(), []int32{5}) || !slices.Equal(p.removing(), []int32{4, 1}) {
		t.Fatalf("replaced: replicas %v adding %v removing %v", p.Replicas, p.adding(), p.removing())
	}
	// Cancel: back to the replicas before the first move.
	if res := m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 0}}}); res.Codes[0] != 0 {
		t.Fatalf("cancel: %+v", res)
	}
	p = m.part0()
	if !slices.Equal(p.Target, []int32{1, 2, 3}) || len(p.adding()) != 0 || !slices.Equal(p.removing(), []int32{5, 4}) {
		t.Fatalf("cancelled: target %v adding %v removing %v", p.Target, p.adding(), p.removing())
	}
	m.run(metaCmd{Op: "reassign_done", Moves: []partitionMove{{Group: p.Group, Replicas: []int32{1, 2, 3}}}})
	if p = m.part0(); p.moving() || !slices.Equal(p.Replicas, []int32{1, 2, 3}) {
		t.Fatalf("after the cancel completed: %+v", p)
	}
}

func TestReassignValidationAndOrderOnly(t *testing.T) {
	m := newMovingSM(t, 1, 2, 3)
	for _, bad := range [][]int32{{}, {1, 1}, {-1}} {
		res := m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 0, Replicas: bad}}})
		if res.Codes[0] != kerr.InvalidReplicaAssignment.Code {
			t.Fatalf("%v: %+v", bad, res)
		}
	}
	res := m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 1, Replicas: []int32{1}}}})
	if res.Codes[0] != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("unknown partition: %+v", res)
	}
	if res := m.run(metaCmd{Op: "reassign", Name: "x", Moves: []partitionMove{{Partition: 0, Replicas: []int32{1}}}}); res.Err != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("unknown topic: %+v", res)
	}
	// The same replicas in another order only change the preferred leader.
	m.run(metaCmd{Op: "reassign", Name: "t", Moves: []partitionMove{{Partition: 0, Replicas: []int32{3, 1, 2}}}})
	if p := m.part0(); p.moving() || !slices.Equal(p.Replicas, []int32{3, 1, 2}) || p.Origin != nil {
		t.Fatalf("reorder: %+v", p)
	}
}

// Metadata written before moves existed has no origin: the replicas are.
func TestReassignOldMetadata(t *testing.T) {
	var pm partitionMeta
	if err := json.Unmarshal([]byte(`{"group":100,"replicas":[1,2,3]}`), &pm); err != nil {
		t.Fatal(err)
	}
	if pm.moving() || !slices.Equal(pm.origin(), []int32{1, 2, 3}) {
		t.Fatalf("%+v", pm)
	}
	out, _ := json.Marshal(&pm)
	if string(out) != `{"group":100,"replicas":[1,2,3]}` {
		t.Fatalf("an unmoved partition encodes as before: %s", out)
	}
}

// A replica of a partition that has moved joins from the original voters
// when its directory is fresh, and keeps the replicas' order otherwise;
// one that never moved bootstraps from its replicas.
func TestReplicaPeers(t *testing.T) {
	dir := t.TempDir()
	fresh := dir + "/fresh"
	moved := wantedReplica{replicas: []int32{4, 2, 3, 1}, origin: []int32{1, 2, 3}}
	if peers, joining := replicaPeers(fresh, moved); !joining || !slices.Equal(peers, []uint64{1, 2, 3}) {
		t.Fatalf("fresh, moved: %v %v", peers, joining)
	}
	if err := os.MkdirAll(fresh, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"group", metaIndexFile} {
		if err := os.WriteFile(fresh+"/"+f, []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, joining := replicaPeers(fresh, moved); !joining || !dirFresh(fresh) {
		t.Fatal("a directory holding only the broker's markers is taken as not fresh")
	}
	if err := os.WriteFile(fresh+"/epochs", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if peers, joining := replicaPeers(fresh, moved); !joining || !slices.Equal(peers, []uint64{4, 2, 3, 1}) {
		t.Fatalf("opened before, moved: %v %v", peers, joining)
	}
	if peers, joining := replicaPeers(dir+"/other", wantedReplica{replicas: []int32{2, 3, 1}}); joining || !slices.Equal(peers, []uint64{2, 3, 1}) {
		t.Fatalf("never moved: %v %v", peers, joining)
	}
}
