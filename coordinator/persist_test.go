package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// successor is a new coordinator over the same store, owning every group: the
// node that takes over when leadership of the offsets partition moves.
func (h *harness) successor() *harness {
	h.t.Helper()
	b := newHarness(h.t, func(c *Config) { c.Store = h.store })
	b.store = h.store
	return b
}

// moveTo hands group over to a successor as a leadership change does: this
// node's pending saves land, it stops owning the group and releases it.
func (h *harness) moveTo(group string) *harness {
	h.t.Helper()
	h.flushSaves()
	h.disown(group)
	h.c.Release()
	h.c.mu.Lock()
	held := h.c.groups[group] != nil
	h.c.mu.Unlock()
	if held {
		h.t.Fatalf("released coordinator still holds %s", group)
	}
	return h.successor()
}

// flushSaves waits until no snapshot write is queued or in flight.
func (h *harness) flushSaves() {
	h.t.Helper()
	eventually(h.t, "snapshot writes to finish", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		return len(h.c.writers) == 0
	})
}

func storedSnapshot(t *testing.T, s *memStore, group string) *groupSnapshot {
	t.Helper()
	data := s.LoadGroup(group)
	if data == nil {
		return nil
	}
	snap, err := decodeSnapshot(data)
	if err != nil {
		t.Fatalf("stored snapshot of %s: %v", group, err)
	}
	return snap
}

func (h *harness) leave(group string, ids ...string) {
	h.t.Helper()
	r := kmsg.NewPtrLeaveGroupRequest()
	r.Version = 5
	r.Group = group
	for _, id := range ids {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		r.Members = append(r.Members, m)
	}
	resp := h.c.Handle(context.Background(), r).(*kmsg.LeaveGroupResponse)
	for _, m := range resp.Members {
		wantErr(h.t, "leave "+m.MemberID, m.ErrorCode, 0)
	}
}

func (h *harness) list() map[string]string {
	h.t.Helper()
	r := kmsg.NewPtrListGroupsRequest()
	r.Version = 5
	out := map[string]string{}
	for _, g := range h.c.Handle(context.Background(), r).(*kmsg.ListGroupsResponse).Groups {
		out[g.Group] = g.GroupState
	}
	return out
}

// regenerate runs one more rebalance of a Stable group whose first member
// leads: every member rejoins, the leader assigns "assign-<id>", everyone
// syncs. It returns the new generation.
func (h *harness) regenerate(group string, ids []string) int32 {
	h.t.Helper()
	chans := []<-chan *kmsg.JoinGroupResponse{h.joinAsync(clientCtx("x"), joinReq(group, ids[0], h.joinOpts...))}
	h.waitState(group, "PreparingRebalance")
	for _, id := range ids[1:] {
		chans = append(chans, h.joinAsync(clientCtx("x"), joinReq(group, id, h.joinOpts...)))
	}
	var gen int32
	for _, ch := range chans {
		r := recv(h.t, ch)
		wantErr(h.t, "rejoin", r.ErrorCode, 0)
		gen = r.Generation
	}
	assign := map[string]string{}
	for _, id := range ids {
		assign[id] = "assign-" + id
	}
	var syncs []<-chan *kmsg.SyncGroupResponse
	for _, id := range ids[1:] {
		syncs = append(syncs, h.syncAsync(context.Background(), syncReq(group, id, gen, nil)))
	}
	syncs = append(syncs, h.syncAsync(context.Background(), syncReq(group, ids[0], gen, assign)))
	for _, ch := range syncs {
		wantErr(h.t, "sync", recv(h.t, ch).ErrorCode, 0)
	}
	return gen
}

func TestMembershipSurvivesMove(t *testing.T) {
	a := newHarness(t, nil)
	a.joinOpts = []joinOpt{withSession(time.Second)}
	ids, gen := a.stableGroup("g", "a", "b")
	leader, follower := ids[0], ids[1]
	tp := TopicPartition{"t1", 0}
	wantErr(t, "commit on A", commitErr(a.commit("g", follower, gen, map[TopicPartition]int64{tp: 5})), 0)

	b := a.moveTo("g")
	snap := storedSnapshot(t, b.store, "g")
	if snap == nil || snap.Generation != gen || snap.Leader != leader || len(snap.Members) != 2 ||
		snap.Protocol != "range" || snap.ProtocolType != "consumer" {
		t.Fatalf("saved snapshot: %+v", snap)
	}
	wantErr(t, "A after the move", a.heartbeat("g", leader, gen, nil), kerr.NotCoordinator.Code)

	// ListGroups on the new coordinator loads the group from its snapshot.
	if got := b.list(); got["g"] != "Stable" {
		t.Fatalf("list on B: %v", got)
	}
	wantErr(t, "leader heartbeat on B", b.heartbeat("g", leader, gen, nil), 0)
	wantErr(t, "follower heartbeat on B", b.heartbeat("g", follower, gen, nil), 0)
	wantErr(t, "old generation on B", b.heartbeat("g", follower, gen-1, nil), kerr.IllegalGeneration.Code)
	wantErr(t, "unknown member on B", b.heartbeat("g", "nobody", gen, nil), kerr.UnknownMemberID.Code)
	wantErr(t, "commit on B", commitErr(b.commit("g", follower, gen, map[TopicPartition]int64{tp: 9})), 0)
	if o := b.store.Offsets("g")[tp]; o.Offset != 9 {
		t.Fatalf("offset after commit on B: %+v", o)
	}
	sr := b.sync(syncReq("g", follower, gen, nil))
	wantErr(t, "sync on B", sr.ErrorCode, 0)
	if string(sr.MemberAssignment) != "assign-"+follower || sr.Protocol == nil || *sr.Protocol != "range" {
		t.Fatalf("sync on B: assignment %q protocol %v", sr.MemberAssignment, sr.Protocol)
	}
	d := b.describe("g")
	if d.State != "Stable" || d.Protocol != "range" || d.ProtocolType != "consumer" || len(d.Members) != 2 {
		t.Fatalf("describe on B: %+v", d)
	}
	for _, m := range d.Members {
		if string(m.MemberAssignment) != "assign-"+m.MemberID || m.ClientID == "" || m.ClientHost != "/127.0.0.1" ||
			!bytes.Equal(m.ProtocolMetadata, consumerMeta("t1")) {
			t.Fatalf("described member: %+v", m)
		}
	}

	// A follower rejoining with unchanged metadata gets the current
	// generation, without a rebalance.
	jr := b.join("b", joinReq("g", follower, b.joinOpts...))
	wantErr(t, "follower rejoin on B", jr.ErrorCode, 0)
	if jr.Generation != gen || jr.LeaderID != leader || len(jr.Members) != 0 {
		t.Fatalf("follower rejoin: gen %d leader %q members %d", jr.Generation, jr.LeaderID, len(jr.Members))
	}
	if st := b.describe("g").State; st != "Stable" {
		t.Fatalf("follower rejoin moved the group to %s", st)
	}

	// The follower goes silent: its session, restarted by B, expires and B
	// rebalances without it, as it would have on A.
	eventually(t, "the follower's session to expire on B", func() bool {
		return b.heartbeat("g", leader, gen, nil) == kerr.RebalanceInProgress.Code
	})
	jr = b.join("a", joinReq("g", leader, b.joinOpts...))
	wantErr(t, "leader rejoin", jr.ErrorCode, 0)
	if jr.Generation != gen+1 || len(jr.Members) != 1 || jr.Members[0].MemberID != leader {
		t.Fatalf("after expiry on B: gen %d members %v", jr.Generation, jr.Members)
	}
	wantErr(t, "sync gen+1", b.sync(syncReq("g", leader, gen+1, map[string]string{leader: "all"})).ErrorCode, 0)
	b.flushSaves()
	if s := storedSnapshot(t, b.store, "g"); s.Generation != gen+1 || len(s.Members) != 1 {
		t.Fatalf("snapshot after B's rebalance: %+v", s)
	}

	// And back to A, which now loads B's generation.
	a2 := b.moveTo("g")
	wantErr(t, "heartbeat back on a new A", a2.heartbeat("g", leader, gen+1, nil), 0)
}

func TestStaticMemberSurvivesMove(t *testing.T) {
	a := newHarness(t, nil)
	r := a.join("a", joinReq("s", "", withInstance("i1")))
	wantErr(t, "static join", r.ErrorCode, 0)
	wantErr(t, "sync", a.sync(syncReq("s", r.MemberID, r.Generation, map[string]string{r.MemberID: "x"})).ErrorCode, 0)

	b := a.moveTo("s")
	wantErr(t, "static heartbeat on B", b.heartbeat("s", r.MemberID, r.Generation, kmsg.StringPtr("i1")), 0)
	wantErr(t, "fenced on B", b.heartbeat("s", "other", r.Generation, kmsg.StringPtr("i1")), kerr.FencedInstanceID.Code)

	// A restarted static member rejoins without a rebalance; its new id is
	// saved for the next coordinator.
	r2 := b.join("a", joinReq("s", "", withInstance("i1")))
	wantErr(t, "static rejoin on B", r2.ErrorCode, 0)
	if r2.Generation != r.Generation || r2.MemberID == r.MemberID {
		t.Fatalf("static rejoin: gen %d->%d member %q->%q", r.Generation, r2.Generation, r.MemberID, r2.MemberID)
	}
	c := b.moveTo("s")
	wantErr(t, "old static id on C", c.heartbeat("s", r.MemberID, r.Generation, kmsg.StringPtr("i1")), kerr.FencedInstanceID.Code)
	wantErr(t, "new static id on C", c.heartbeat("s", r2.MemberID, r.Generation, kmsg.StringPtr("i1")), 0)
	if sr := c.sync(syncReq("s", r2.MemberID, r.Generation, nil)); string(sr.MemberAssignment) != "x" {
		t.Fatalf("static member's assignment on C: %q (%s)", sr.MemberAssignment, errName(sr.ErrorCode))
	}
}

func TestEmptySnapshotKeepsGeneration(t *testing.T) {
	a := newHarness(t, nil)
	ids, gen := a.stableGroup("g", "a")
	a.commit("g", ids[0], gen, map[TopicPartition]int64{{"t1", 0}: 1})
	a.leave("g", ids[0])
	a.waitState("g", "Empty")

	b := a.moveTo("g")
	snap := storedSnapshot(t, b.store, "g")
	if snap == nil || snap.Generation != gen+1 || len(snap.Members) != 0 || snap.Leader != "" {
		t.Fatalf("empty snapshot: %+v", snap)
	}
	if d := b.describe("g"); d.State != "Empty" || d.ProtocolType != "consumer" || len(d.Members) != 0 {
		t.Fatalf("describe on B: %+v", d)
	}
	wantErr(t, "old member on B", b.heartbeat("g", ids[0], gen, nil), kerr.UnknownMemberID.Code)
	wantErr(t, "admin commit on B", commitErr(b.commit("g", "", -1, map[TopicPartition]int64{{"t1", 0}: 2})), 0)
	id := b.memberID("g", "c")
	r := b.join("c", joinReq("g", id))
	wantErr(t, "join on B", r.ErrorCode, 0)
	if r.Generation != gen+2 {
		t.Fatalf("first generation on B: %d, want %d", r.Generation, gen+2)
	}
}

func TestSnapshotSavesKeepOrder(t *testing.T) {
	h := newHarness(t, nil)
	var (
		mu      sync.Mutex
		saved   []int32
		blockAt = int32(2)
		blocked = make(chan struct{}, 1)
		release = make(chan struct{})
	)
	h.store.saveHook = func(_ string, data []byte) {
		s, err := decodeSnapshot(data)
		if err != nil {
			t.Errorf("saved snapshot: %v", err)
			return
		}
		mu.Lock()
		saved = append(saved, s.Generation)
		block := s.Generation == blockAt
		mu.Unlock()
		if block {
			blocked <- struct{}{}
			<-release
		}
	}

	ids, gen := h.stableGroup("g", "a", "b")
	if gen != 2 {
		t.Fatalf("generation %d", gen)
	}
	<-blocked // generation 2's save is in flight and slow
	// The group goes on meanwhile: no lock is held across the store call.
	wantErr(t, "heartbeat during save", h.heartbeat("g", ids[1], gen, nil), 0)
	if gen = h.regenerate("g", ids); gen != 3 {
		t.Fatalf("generation %d", gen)
	}
	if s := storedSnapshot(t, h.store, "g"); s != nil && s.Generation >= 2 {
		t.Fatalf("stored generation %d while generation 2's save is blocked", s.Generation)
	}
	close(release)
	h.flushSaves()
	if s := storedSnapshot(t, h.store, "g"); s.Generation != 3 {
		t.Fatalf("stored generation %d, want 3", s.Generation)
	}

	// With one save in flight, only the newest of the queued ones is written.
	mu.Lock()
	blockAt, saved = 4, nil
	release = make(chan struct{})
	mu.Unlock()
	h.regenerate("g", ids)
	<-blocked
	h.regenerate("g", ids)
	h.regenerate("g", ids)
	close(release)
	h.flushSaves()
	mu.Lock()
	got := append([]int32(nil), saved...)
	mu.Unlock()
	if len(got) != 2 || got[0] != 4 || got[1] != 6 {
		t.Fatalf("generations written: %v, want [4 6]", got)
	}
	if s := storedSnapshot(t, h.store, "g"); s.Generation != 6 {
		t.Fatalf("stored generation %d, want 6", s.Generation)
	}
}

func TestDeleteGroupsRemovesSnapshot(t *testing.T) {
	a := newHarness(t, nil)
	ids, gen := a.stableGroup("g", "a")
	a.commit("g", ids[0], gen, map[TopicPartition]int64{{"t1", 0}: 1})
	a.leave("g", ids[0])
	a.waitState("g", "Empty")
	a.stableGroup("busy", "b")

	b := a.moveTo("g")
	a.disown("busy")
	a.c.Release()
	if storedSnapshot(t, b.store, "g") == nil || storedSnapshot(t, b.store, "busy") == nil {
		t.Fatal("snapshots missing before the delete")
	}
	got := deleteGroups(b, "g", "busy")
	wantErr(t, "delete emptied group", got["g"], 0)
	wantErr(t, "delete stable group", got["busy"], kerr.NonEmptyGroup.Code)
	if b.store.LoadGroup("g") != nil || len(b.store.Offsets("g")) != 0 {
		t.Fatal("the delete left the snapshot or offsets behind")
	}
	if d := b.describe("g"); d.State != "Dead" {
		t.Fatalf("deleted group is %s", d.State)
	}
	wantErr(t, "delete again", deleteGroups(b, "g")["g"], kerr.GroupIDNotFound.Code)

	// A delete waits for the group's slow save and lands after it.
	h := newHarness(t, nil)
	blocked, release := make(chan struct{}, 1), make(chan struct{})
	ids, _ = h.stableGroup("slow", "c")
	h.flushSaves()
	h.store.mu.Lock()
	h.store.saveHook = func(string, []byte) { blocked <- struct{}{}; <-release }
	h.store.mu.Unlock()
	h.leave("slow", ids[0])
	<-blocked // the Empty snapshot's save is in flight
	done := make(chan int16, 1)
	go func() { done <- deleteGroups(h, "slow")["slow"] }()
	close(release)
	wantErr(t, "delete behind a save", recv(t, done), 0)
	h.flushSaves()
	if h.store.LoadGroup("slow") != nil {
		t.Fatal("a save that was in flight brought the deleted snapshot back")
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestSnapshotFailuresAreHarmless(t *testing.T) {
	var logs lockedBuffer
	h := newHarness(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	h.store.saveErr = errors.New("raft is down")
	ids, gen := h.stableGroup("g", "a", "b")
	h.flushSaves()
	if h.store.LoadGroup("g") != nil {
		t.Fatal("a failed save stored a snapshot")
	}
	if !bytes.Contains([]byte(logs.String()), []byte("level=WARN msg=\"group snapshot save failed\"")) {
		t.Fatalf("no warning logged: %s", logs.String())
	}
	wantErr(t, "heartbeat", h.heartbeat("g", ids[1], gen, nil), 0)

	// Without a snapshot the successor knows nothing: members rejoin.
	b := h.moveTo("g")
	wantErr(t, "heartbeat on B", b.heartbeat("g", ids[1], gen, nil), kerr.UnknownMemberID.Code)

	// An unreadable snapshot is ignored the same way.
	for _, data := range [][]byte{[]byte("{"), mustJSON(t, groupSnapshot{Version: 99, Generation: 5})} {
		h.store.mu.Lock()
		h.store.snapshots["bad"] = data
		h.store.mu.Unlock()
		if d := h.describe("bad"); d.State != "Dead" {
			t.Fatalf("unreadable snapshot %q gave a %s group", data, d.State)
		}
	}
	if !bytes.Contains([]byte(logs.String()), []byte("ignoring unreadable group snapshot")) {
		t.Fatal("unreadable snapshot not logged")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
