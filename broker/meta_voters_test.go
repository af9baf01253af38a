package broker

import (
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

func applyVoters(m *metaSM, op string, voters []int32) metaResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.apply(&metaCmd{Op: op, Voters: voters})
}

// TestMetaVoterMoveState: a vote move's target is replicated state that
// survives a snapshot (a new leader resumes from it); only active brokers
// may be targeted, one move runs at a time, and a stale done report
// changes nothing.
func TestMetaVoterMoveState(t *testing.T) {
	m := newMetaSM(1, nil)
	for _, id := range []int32{1, 2, 3, 4} {
		applyMemberCmd(t, m, "register_broker", &memberCmd{Broker: &brokerMeta{ID: id, Raft: "h:1", Incarnation: "00000000000000a" + string(rune('0'+id))}})
	}
	applyMemberCmd(t, m, "broker_state", &memberCmd{ID: 4, State: brokerDraining})
	if res := applyVoters(m, "meta_voters", []int32{2, 3, 4}); res.Err != kerr.BrokerNotAvailable.Code {
		t.Fatalf("a draining broker targeted: %+v", res)
	}
	applyMemberCmd(t, m, "broker_state", &memberCmd{ID: 4, State: brokerActive})
	if res := applyVoters(m, "meta_voters", []int32{2, 3, 3}); res.Err != kerr.InvalidRequest.Code {
		t.Fatalf("duplicate voter accepted: %+v", res)
	}
	if res := applyVoters(m, "meta_voters", []int32{2, 3, 4}); res.Err != 0 {
		t.Fatalf("start: %+v", res)
	}
	if res := applyVoters(m, "meta_voters", []int32{2, 3, 4}); res.Err != 0 {
		t.Fatalf("the same target again: %+v", res)
	}
	if res := applyVoters(m, "meta_voters", []int32{1, 3, 4}); res.Err != kerr.ReassignmentInProgress.Code {
		t.Fatalf("a second move during the first: %+v", res)
	}
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	m2 := newMetaSM(2, nil)
	if err := m2.Restore(1, snap); err != nil {
		t.Fatal(err)
	}
	if voters, target := m2.metaVoterMove(); voters != nil || !slices.Equal(target, []int32{2, 3, 4}) {
		t.Fatalf("after a snapshot: voters %v target %v", voters, target)
	}
	if res := applyVoters(m2, "meta_voters_done", []int32{1, 3, 4}); res.Err != kerr.NoReassignmentInProgress.Code {
		t.Fatalf("a stale done report: %+v", res)
	}
	if res := applyVoters(m2, "meta_voters_done", []int32{2, 3, 4}); res.Err != 0 {
		t.Fatalf("done: %+v", res)
	}
	if voters, target := m2.metaVoterMove(); !slices.Equal(voters, []int32{2, 3, 4}) || target != nil {
		t.Fatalf("after done: voters %v target %v", voters, target)
	}
}
