package broker

import (
	"encoding/json"
	"slices"
	"testing"
)

func applyMemberCmd(t *testing.T, m *metaSM, op string, c *memberCmd) metaResult {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.apply(&metaCmd{Op: op, Member: c})
}

func TestBrokerRegistry(t *testing.T) {
	m := newMetaSM(1, nil)
	m.mu.Lock()
	m.apply(&metaCmd{Op: "create_topic", Topic: &topicMeta{Name: "t"}, Assign: [][]int32{{1, 2, 3}, {2, 3, 4}, {1, 2, 4}}})
	m.mu.Unlock()
	reg := func(id int32, inc string, join bool) metaResult {
		return applyMemberCmd(t, m, "register_broker", &memberCmd{Join: join,
			Broker: &brokerMeta{ID: id, Kafka: "h:9092", Raft: "h:5001", Incarnation: inc}})
	}
	if res := reg(3, "00000000000000a1", false); res.Err != 0 {
		t.Fatalf("register: %+v", res)
	}
	bm, _ := m.broker(3)
	if bm.State != brokerActive || len(bm.Rejoin) != 0 {
		t.Fatalf("first registration %+v", bm)
	}
	// Node 3's disk is wiped: it registers in join mode with a new
	// incarnation and must rejoin the metadata group and t-0, t-1.
	if res := reg(3, "00000000000000b2", true); res.Err != 0 {
		t.Fatalf("re-register: %+v", res)
	}
	bm, _ = m.broker(3)
	want := []uint64{metaGroup, firstPartitionGroup, firstPartitionGroup + 1}
	if bm.JoinedBelow != firstPartitionGroup+3 {
		t.Fatalf("joined below group %d, want %d", bm.JoinedBelow, firstPartitionGroup+3)
	}
	if !slices.Equal(bm.Rejoin, want) || !slices.Equal(bm.Retired, []string{"00000000000000a1"}) {
		t.Fatalf("after the wipe: rejoin %v retired %v, want %v and the old incarnation", bm.Rejoin, bm.Retired, want)
	}
	// Restarting halfway (same incarnation) keeps what is left.
	reg(3, "00000000000000b2", true)
	applyMemberCmd(t, m, "broker_rejoined", &memberCmd{ID: 3, Incarnation: "00000000000000b2", Groups: []uint64{metaGroup}})
	reg(3, "00000000000000b2", true)
	bm, _ = m.broker(3)
	if !slices.Equal(bm.Rejoin, want[1:]) {
		t.Fatalf("after a restart halfway: rejoin %v, want %v", bm.Rejoin, want[1:])
	}
	// A report for an older incarnation changes nothing.
	applyMemberCmd(t, m, "broker_rejoined", &memberCmd{ID: 3, Incarnation: "00000000000000a1", Groups: want})
	if bm, _ = m.broker(3); len(bm.Rejoin) != 2 {
		t.Fatalf("a stale report removed rejoins: %v", bm.Rejoin)
	}
	applyMemberCmd(t, m, "broker_rejoined", &memberCmd{ID: 3, Incarnation: "00000000000000b2", Groups: want[1:]})
	if bm, _ = m.broker(3); bm.Rejoin != nil {
		t.Fatalf("rejoins left: %v", bm.Rejoin)
	}
	// The retired incarnation cannot register again.
	if res := reg(3, "00000000000000a1", false); res.Err == 0 {
		t.Fatal("a retired incarnation registered again")
	}
	// A new node (not in any partition) joining has only the metadata
	// group to look at.
	reg(5, "00000000000000c3", true)
	if bm, _ = m.broker(5); !slices.Equal(bm.Rejoin, []uint64{metaGroup}) {
		t.Fatalf("new node rejoin %v", bm.Rejoin)
	}
	// States; a removed broker's incarnation is refused, a new disk is not.
	if res := applyMemberCmd(t, m, "broker_state", &memberCmd{ID: 5, State: "sideways"}); res.Err == 0 {
		t.Fatal("unknown state accepted")
	}
	applyMemberCmd(t, m, "broker_state", &memberCmd{ID: 5, State: brokerRemoved})
	if res := reg(5, "00000000000000c3", false); res.Err == 0 {
		t.Fatal("a removed broker registered again with its old disk")
	}
	if res := reg(5, "00000000000000d4", false); res.Err != 0 {
		t.Fatalf("a removed broker with a new disk: %+v", res)
	}
	if bm, _ = m.broker(5); bm.State != brokerActive {
		t.Fatalf("re-added broker state %q", bm.State)
	}
	// Bad registrations are refused, not applied.
	for _, bad := range []*brokerMeta{{ID: 0, Raft: "h:1", Incarnation: "1"}, {ID: 7, Raft: "nonsense", Incarnation: "1"}, {ID: 7, Raft: "h:1"}} {
		if res := applyMemberCmd(t, m, "register_broker", &memberCmd{Broker: bad}); res.Err == 0 {
			t.Errorf("accepted %+v", bad)
		}
	}
	if res := applyMemberCmd(t, m, "register_broker", nil); res.Err == 0 {
		t.Error("accepted a registration without payload")
	}
	// The registry survives a snapshot.
	data, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	m2 := newMetaSM(2, nil)
	if err := m2.Restore(0, data); err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(m.brokers())
	b, _ := json.Marshal(m2.brokers())
	if string(a) != string(b) {
		t.Fatalf("registry after restore:\n%s\nwant\n%s", b, a)
	}
}
