package coordinator

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestKeys(t *testing.T) {
	want := map[int16]int16{8: 9, 9: 9, 11: 9, 12: 4, 13: 5, 14: 5, 15: 5, 16: 5, 42: 2, 47: 0, 68: 1, 69: 1}
	keys := Keys()
	if len(keys) != len(want) {
		t.Fatalf("got %d keys, want %d", len(keys), len(want))
	}
	for _, k := range keys {
		max, ok := want[k.Key]
		if !ok {
			t.Fatalf("unexpected key %d", k.Key)
		}
		if k.Min != 0 || k.Max != min(max, kmsg.RequestForKey(k.Key).MaxVersion()) {
			t.Errorf("key %d: got v%d-v%d", k.Key, k.Min, k.Max)
		}
	}

	h := newHarness(t, nil)
	req := joinReq("g", "")
	req.Version = 10
	if resp := h.c.Handle(context.Background(), req); resp != nil {
		t.Fatalf("unsupported version answered: %v", resp)
	}
}

func TestMemberIDRequired(t *testing.T) {
	h := newHarness(t, nil)

	resp := h.join("client-a", joinReq("g", ""))
	wantErr(t, "first join", resp.ErrorCode, kerr.MemberIDRequired.Code)
	if !strings.HasPrefix(resp.MemberID, "client-a-") || len(resp.MemberID) <= len("client-a-") {
		t.Fatalf("member id %q does not start with the client id", resp.MemberID)
	}
	if resp.Version != 9 {
		t.Fatalf("response version %d, want 9", resp.Version)
	}
	if st := h.c.Stats(); st.Pending != 1 || st.Members != 0 {
		t.Fatalf("stats after MEMBER_ID_REQUIRED: %+v", st)
	}

	resp = h.join("client-a", joinReq("g", resp.MemberID))
	wantErr(t, "second join", resp.ErrorCode, 0)
	if resp.Generation != 1 || resp.LeaderID != resp.MemberID || len(resp.Members) != 1 {
		t.Fatalf("unexpected join response: gen %d leader %q members %d", resp.Generation, resp.LeaderID, len(resp.Members))
	}
	if resp.ProtocolType == nil || *resp.ProtocolType != "consumer" || resp.Protocol == nil || *resp.Protocol != "range" {
		t.Fatalf("protocol type/name not returned: %v %v", resp.ProtocolType, resp.Protocol)
	}
	if resp.SkipAssignment {
		t.Fatal("SkipAssignment set on a normal join")
	}

	// Before v4 there is no handshake: the member joins at once.
	old := h.join("client-b", joinReq("g-old", "", withVersion(3)))
	wantErr(t, "v3 join", old.ErrorCode, 0)
	if old.MemberID == "" || old.Generation != 1 {
		t.Fatalf("v3 join: member %q gen %d", old.MemberID, old.Generation)
	}

	// A member id the group never issued is refused.
	wantErr(t, "unknown member", h.join("x", joinReq("g", "bogus")).ErrorCode, kerr.UnknownMemberID.Code)
	wantErr(t, "unknown group", h.join("x", joinReq("nope", "bogus")).ErrorCode, kerr.UnknownMemberID.Code)
}

func TestJoinValidation(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxSessionTimeout = time.Minute })

	wantErr(t, "empty group", h.join("c", joinReq("", "")).ErrorCode, kerr.InvalidGroupID.Code)
	wantErr(t, "short session", h.join("c", joinReq("g", "", withSession(time.Millisecond))).ErrorCode, kerr.InvalidSessionTimeout.Code)
	wantErr(t, "long session", h.join("c", joinReq("g", "", withSession(2*time.Minute))).ErrorCode, kerr.InvalidSessionTimeout.Code)
	noType := joinReq("g", "")
	noType.ProtocolType = ""
	wantErr(t, "no protocol type", h.join("c", noType).ErrorCode, kerr.InconsistentGroupProtocol.Code)
	if st := h.c.Stats(); st.Groups != 0 {
		t.Fatalf("refused joins left %d groups behind", st.Groups)
	}

	h.stableGroup("g", "a")
	other := joinReq("g", "", withProtocols(proto("roundrobin", consumerMeta("t1"))))
	wantErr(t, "no common protocol", h.join("c", other).ErrorCode, kerr.InconsistentGroupProtocol.Code)
	connect := joinReq("g", "")
	connect.ProtocolType = "connect"
	wantErr(t, "other protocol type", h.join("c", connect).ErrorCode, kerr.InconsistentGroupProtocol.Code)
}

func TestThreeMembersJoinAndSync(t *testing.T) {
	h := newHarness(t, nil)
	const g = "three"

	a := h.memberID(g, "a")
	ra := h.join("a", joinReq(g, a))
	wantErr(t, "a join", ra.ErrorCode, 0)
	wantErr(t, "a sync", h.sync(syncReq(g, a, ra.Generation, map[string]string{a: "a1"})).ErrorCode, 0)
	gen := ra.Generation

	for _, client := range []string{"b", "c"} {
		id := h.memberID(g, client)
		newcomer := h.joinAsync(clientCtx(client), joinReq(g, id))
		h.waitState(g, "PreparingRebalance")
		wantErr(t, "a heartbeat during rebalance", h.heartbeat(g, a, gen, nil), kerr.RebalanceInProgress.Code)

		// Everyone else rejoins; the rebalance completes with all of them.
		members := h.describe(g).Members
		var chans []<-chan *kmsg.JoinGroupResponse
		for _, m := range members {
			if m.MemberID != id {
				chans = append(chans, h.joinAsync(clientCtx(m.ClientID), joinReq(g, m.MemberID)))
			}
		}
		chans = append(chans, newcomer)
		for _, ch := range chans {
			r := recv(t, ch)
			wantErr(t, "rejoin", r.ErrorCode, 0)
			if r.Generation != gen+1 {
				t.Fatalf("generation %d, want %d", r.Generation, gen+1)
			}
			if r.LeaderID != a {
				t.Fatalf("leader %q, want the first member %q", r.LeaderID, a)
			}
			if (r.MemberID == a) != (len(r.Members) > 0) {
				t.Fatalf("member %s got %d members; only the leader gets them", r.MemberID, len(r.Members))
			}
		}
		gen++
	}

	desc := h.describe(g)
	if desc.State != "CompletingRebalance" || len(desc.Members) != 3 {
		t.Fatalf("before sync: state %s with %d members", desc.State, len(desc.Members))
	}

	// Followers park until the leader hands out the assignment.
	var ids []string
	for _, m := range desc.Members {
		ids = append(ids, m.MemberID)
	}
	assign := map[string]string{}
	for _, id := range ids {
		assign[id] = "assignment-for-" + id
	}
	var followers []<-chan *kmsg.SyncGroupResponse
	for _, id := range ids[1:] {
		followers = append(followers, h.syncAsync(context.Background(), syncReq(g, id, gen, nil)))
	}
	eventually(t, "followers to park in SyncGroup", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		n := 0
		for _, m := range h.c.groups[g].members {
			if m.sync != nil {
				n++
			}
		}
		return n == 2
	})
	lead := h.sync(syncReq(g, a, gen, assign))
	wantErr(t, "leader sync", lead.ErrorCode, 0)
	if string(lead.MemberAssignment) != assign[a] {
		t.Fatalf("leader got %q", lead.MemberAssignment)
	}
	for i, ch := range followers {
		r := recv(t, ch)
		wantErr(t, "follower sync", r.ErrorCode, 0)
		if string(r.MemberAssignment) != assign[ids[i+1]] {
			t.Fatalf("follower %s got %q, want %q", ids[i+1], r.MemberAssignment, assign[ids[i+1]])
		}
		if r.Protocol == nil || *r.Protocol != "range" {
			t.Fatalf("sync protocol %v", r.Protocol)
		}
	}

	desc = h.describe(g)
	if desc.State != "Stable" || desc.Protocol != "range" || desc.ProtocolType != "consumer" {
		t.Fatalf("after sync: %s %s %s", desc.State, desc.ProtocolType, desc.Protocol)
	}
	for _, m := range desc.Members {
		if string(m.MemberAssignment) != assign[m.MemberID] || len(m.ProtocolMetadata) == 0 || m.ClientHost == "" {
			t.Fatalf("described member %+v", m)
		}
	}
	for _, id := range ids {
		wantErr(t, "heartbeat", h.heartbeat(g, id, gen, nil), 0)
	}
	// A sync after the group settled returns the member's assignment again.
	again := h.sync(syncReq(g, ids[2], gen, nil))
	if string(again.MemberAssignment) != assign[ids[2]] {
		t.Fatalf("late sync got %q", again.MemberAssignment)
	}
	if st := h.c.Stats(); st.Members != 3 || st.ByState["Stable"] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSyncAndHeartbeatErrors(t *testing.T) {
	h := newHarness(t, nil)
	ids, gen := h.stableGroup("g", "a", "b")

	wantErr(t, "heartbeat old generation", h.heartbeat("g", ids[1], gen-1, nil), kerr.IllegalGeneration.Code)
	wantErr(t, "heartbeat unknown member", h.heartbeat("g", "who", gen, nil), kerr.UnknownMemberID.Code)
	wantErr(t, "heartbeat unknown group", h.heartbeat("nope", ids[0], gen, nil), kerr.UnknownMemberID.Code)
	wantErr(t, "heartbeat empty group id", h.heartbeat("", ids[0], gen, nil), kerr.InvalidGroupID.Code)
	wantErr(t, "sync old generation", h.sync(syncReq("g", ids[1], gen+1, nil)).ErrorCode, kerr.IllegalGeneration.Code)
	wantErr(t, "sync unknown member", h.sync(syncReq("g", "who", gen, nil)).ErrorCode, kerr.UnknownMemberID.Code)
	bad := syncReq("g", ids[1], gen, nil)
	bad.Protocol = kmsg.StringPtr("sticky")
	wantErr(t, "sync other protocol", h.sync(bad).ErrorCode, kerr.InconsistentGroupProtocol.Code)

	// The leader rejoining starts a rebalance; a sync now must rejoin too.
	leaderJoin := h.joinAsync(clientCtx("a"), joinReq("g", ids[0]))
	h.waitState("g", "PreparingRebalance")
	wantErr(t, "sync during rebalance", h.sync(syncReq("g", ids[1], gen, nil)).ErrorCode, kerr.RebalanceInProgress.Code)
	wantErr(t, "commit during rebalance", commitErr(h.commit("g", ids[1], gen, map[TopicPartition]int64{{"t1", 0}: 1})), 0)

	follower := h.joinAsync(clientCtx("b"), joinReq("g", ids[1]))
	recv(t, leaderJoin)
	recv(t, follower)
	// Between the join and the leader's sync, commits must wait.
	wantErr(t, "commit while completing", commitErr(h.commit("g", ids[1], gen+1, map[TopicPartition]int64{{"t1", 0}: 2})), kerr.RebalanceInProgress.Code)
	wantErr(t, "heartbeat while completing", h.heartbeat("g", ids[1], gen+1, nil), 0)
}

func commitErr(resp *kmsg.OffsetCommitResponse) int16 {
	for code := range commitErrs(resp) {
		return code
	}
	return -1
}

func TestLeaveTriggersRebalance(t *testing.T) {
	h := newHarness(t, nil)
	ids, gen := h.stableGroup("g", "a", "b", "c")

	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Version = 5
	leave.Group = "g"
	for _, id := range []string{ids[1], "nobody"} {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		leave.Members = append(leave.Members, m)
	}
	lr := h.c.Handle(context.Background(), leave).(*kmsg.LeaveGroupResponse)
	wantErr(t, "leave top-level", lr.ErrorCode, 0)
	if len(lr.Members) != 2 {
		t.Fatalf("leave answered %d members", len(lr.Members))
	}
	wantErr(t, "leaving member", lr.Members[0].ErrorCode, 0)
	wantErr(t, "unknown leaving member", lr.Members[1].ErrorCode, kerr.UnknownMemberID.Code)

	wantErr(t, "remaining heartbeat", h.heartbeat("g", ids[0], gen, nil), kerr.RebalanceInProgress.Code)
	ca := h.joinAsync(clientCtx("a"), joinReq("g", ids[0]))
	cc := h.joinAsync(clientCtx("c"), joinReq("g", ids[2]))
	ra, rc := recv(t, ca), recv(t, cc)
	wantErr(t, "rejoin", ra.ErrorCode, 0)
	if ra.Generation != gen+1 || rc.Generation != gen+1 || len(ra.Members) != 2 {
		t.Fatalf("after leave: generations %d/%d, leader sees %d members", ra.Generation, rc.Generation, len(ra.Members))
	}
	for _, m := range ra.Members {
		if m.MemberID == ids[1] {
			t.Fatal("the member that left is still in the group")
		}
	}

	// The leader leaving hands leadership to the next member; the last
	// one leaving empties the group.
	v1 := kmsg.NewPtrLeaveGroupRequest()
	v1.Version = 1
	v1.Group = "g"
	v1.MemberID = ids[0]
	wantErr(t, "v1 leave", h.c.Handle(context.Background(), v1).(*kmsg.LeaveGroupResponse).ErrorCode, 0)
	rc = recv(t, h.joinAsync(clientCtx("c"), joinReq("g", ids[2])))
	if rc.LeaderID != ids[2] || rc.Generation != gen+2 {
		t.Fatalf("after leader left: leader %q gen %d", rc.LeaderID, rc.Generation)
	}
	v1.MemberID = ids[2]
	wantErr(t, "last leave", h.c.Handle(context.Background(), v1).(*kmsg.LeaveGroupResponse).ErrorCode, 0)
	if d := h.describe("g"); d.State != "Empty" || len(d.Members) != 0 || d.ProtocolType != "consumer" {
		t.Fatalf("after everyone left: %s with %d members, protocol type %q", d.State, len(d.Members), d.ProtocolType)
	}
	v1.MemberID = ids[2]
	wantErr(t, "leave again", h.c.Handle(context.Background(), v1).(*kmsg.LeaveGroupResponse).ErrorCode, kerr.UnknownMemberID.Code)
}

func TestSessionExpiry(t *testing.T) {
	h := newHarness(t, nil)
	const g = "expiry"

	a := h.memberID(g, "a")
	ra := h.join("a", joinReq(g, a))
	h.sync(syncReq(g, a, ra.Generation, nil))

	b := h.memberID(g, "b")
	cb := h.joinAsync(clientCtx("b"), joinReq(g, b, withSession(300*time.Millisecond)))
	h.waitState(g, "PreparingRebalance")
	ca := h.joinAsync(clientCtx("a"), joinReq(g, a))
	ra, rb := recv(t, ca), recv(t, cb)
	gen := ra.Generation
	if rb.Generation != gen {
		t.Fatalf("generations differ: %d %d", ra.Generation, rb.Generation)
	}
	sb := h.syncAsync(context.Background(), syncReq(g, b, gen, nil))
	wantErr(t, "sync a", h.sync(syncReq(g, a, gen, map[string]string{a: "x", b: "y"})).ErrorCode, 0)
	wantErr(t, "sync b", recv(t, sb).ErrorCode, 0)

	// b stops heartbeating; a keeps going and is told to rejoin.
	eventually(t, "b's session to expire", func() bool {
		return h.heartbeat(g, a, gen, nil) == kerr.RebalanceInProgress.Code
	})
	ra = h.join("a", joinReq(g, a))
	wantErr(t, "rejoin", ra.ErrorCode, 0)
	if ra.Generation != gen+1 || len(ra.Members) != 1 || ra.Members[0].MemberID != a {
		t.Fatalf("after expiry: gen %d members %v", ra.Generation, ra.Members)
	}
	wantErr(t, "expired member heartbeat", h.heartbeat(g, b, gen, nil), kerr.UnknownMemberID.Code)

	// A handed-out member id that is never used expires as well.
	h.join("c", joinReq(g, "", withSession(50*time.Millisecond)))
	eventually(t, "pending member to expire", func() bool { return h.c.Stats().Pending == 0 })
}

func TestPendingSyncExpiry(t *testing.T) {
	h := newHarness(t, nil)
	const g = "nosync"
	a := h.memberID(g, "a")
	ra := h.join("a", joinReq(g, a))
	h.sync(syncReq(g, a, ra.Generation, nil))

	// b joins but never syncs; after the rebalance timeout it is removed.
	b := h.memberID(g, "b")
	cb := h.joinAsync(clientCtx("b"), joinReq(g, b, withRebalance(200*time.Millisecond)))
	h.waitState(g, "PreparingRebalance")
	ra = h.join("a", joinReq(g, a, withRebalance(200*time.Millisecond)))
	recv(t, cb)
	wantErr(t, "leader sync", h.sync(syncReq(g, a, ra.Generation, nil)).ErrorCode, 0)
	eventually(t, "b to be dropped for not syncing", func() bool {
		return h.heartbeat(g, a, ra.Generation, nil) == kerr.RebalanceInProgress.Code
	})
	wantErr(t, "b heartbeat", h.heartbeat(g, b, ra.Generation, nil), kerr.UnknownMemberID.Code)
}

func TestRebalanceTimeoutDropsSilentMember(t *testing.T) {
	h := newHarness(t, nil)
	const g = "slow"
	h.joinOpts = []joinOpt{withRebalance(500 * time.Millisecond)}
	ids, gen := h.stableGroup(g, "a", "b")
	// a rejoins (as leader, it forces a rebalance); b never does.
	ra := recv(t, h.joinAsync(clientCtx("a"), joinReq(g, ids[0], withRebalance(500*time.Millisecond))))
	wantErr(t, "rejoin", ra.ErrorCode, 0)
	if ra.Generation != gen+1 || len(ra.Members) != 1 {
		t.Fatalf("gen %d members %d", ra.Generation, len(ra.Members))
	}
	wantErr(t, "b heartbeat", h.heartbeat(g, ids[1], gen, nil), kerr.UnknownMemberID.Code)
}

func TestStaticMemberRejoin(t *testing.T) {
	h := newHarness(t, nil)
	const g = "static"

	d := h.memberID(g, "d")
	rd := h.join("d", joinReq(g, d))
	h.sync(syncReq(g, d, rd.Generation, nil))

	// s joins with an instance id: no MEMBER_ID_REQUIRED round trip.
	cs := h.joinAsync(clientCtx("s"), joinReq(g, "", withInstance("s-1")))
	h.waitState(g, "PreparingRebalance")
	cd := h.joinAsync(clientCtx("d"), joinReq(g, d))
	rs, rd := recv(t, cs), recv(t, cd)
	wantErr(t, "static join", rs.ErrorCode, 0)
	s, gen := rs.MemberID, rs.Generation
	if !strings.HasPrefix(s, "s-1-") {
		t.Fatalf("static member id %q should start with the instance id", s)
	}
	ss := h.syncAsync(context.Background(), syncReq(g, s, gen, nil))
	h.sync(syncReq(g, d, gen, map[string]string{d: "for-d", s: "for-s"}))
	recv(t, ss)

	// The static member restarts: same instance id, no member id.
	again := h.join("s", joinReq(g, "", withInstance("s-1")))
	wantErr(t, "static rejoin", again.ErrorCode, 0)
	if again.MemberID == s || again.Generation != gen || again.LeaderID != d || again.SkipAssignment {
		t.Fatalf("static rejoin: member %q gen %d leader %q skip %v", again.MemberID, again.Generation, again.LeaderID, again.SkipAssignment)
	}
	if st := h.describe(g).State; st != "Stable" {
		t.Fatalf("static rejoin caused a rebalance: %s", st)
	}
	r := h.sync(syncReq(g, again.MemberID, gen, nil))
	wantErr(t, "sync after rejoin", r.ErrorCode, 0)
	if string(r.MemberAssignment) != "for-s" {
		t.Fatalf("static member lost its assignment: %q", r.MemberAssignment)
	}
	// The old incarnation is fenced; the other member never noticed.
	wantErr(t, "old incarnation", h.heartbeat(g, s, gen, kmsg.StringPtr("s-1")), kerr.FencedInstanceID.Code)
	wantErr(t, "old member id", h.heartbeat(g, s, gen, nil), kerr.UnknownMemberID.Code)
	wantErr(t, "new incarnation", h.heartbeat(g, again.MemberID, gen, kmsg.StringPtr("s-1")), 0)
	wantErr(t, "dynamic member", h.heartbeat(g, d, gen, nil), 0)
	oldCommit := h.commit(g, s, gen, map[TopicPartition]int64{{"t1", 0}: 5})
	wantErr(t, "old incarnation commit", commitErr(oldCommit), kerr.UnknownMemberID.Code)

	// Admin removal by instance id alone.
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Version = 4
	leave.Group = g
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.InstanceID = kmsg.StringPtr("s-1")
	leave.Members = append(leave.Members, lm)
	lr := h.c.Handle(context.Background(), leave).(*kmsg.LeaveGroupResponse)
	wantErr(t, "leave by instance", lr.Members[0].ErrorCode, 0)
	wantErr(t, "removed instance", h.heartbeat(g, again.MemberID, gen, kmsg.StringPtr("s-1")), kerr.UnknownMemberID.Code)
}

func TestStaticLeaderRejoinSkipsAssignment(t *testing.T) {
	h := newHarness(t, nil)
	const g = "static-leader"
	rs := h.join("s", joinReq(g, "", withInstance("lead")))
	wantErr(t, "join", rs.ErrorCode, 0)
	h.sync(syncReq(g, rs.MemberID, rs.Generation, map[string]string{rs.MemberID: "mine"}))

	again := h.join("s", joinReq(g, "", withInstance("lead")))
	wantErr(t, "rejoin", again.ErrorCode, 0)
	if !again.SkipAssignment || again.LeaderID != again.MemberID || len(again.Members) != 1 || again.Generation != rs.Generation {
		t.Fatalf("v9 static leader rejoin: skip %v leader %q members %d gen %d", again.SkipAssignment, again.LeaderID, len(again.Members), again.Generation)
	}

	// Before v9 the leader cannot skip: it is shown the previous leader id
	// so it acts as a follower and keeps its assignment.
	old := h.join("s", joinReq(g, "", withInstance("lead"), withVersion(8)))
	wantErr(t, "v8 rejoin", old.ErrorCode, 0)
	if old.LeaderID != again.MemberID || old.LeaderID == old.MemberID || len(old.Members) != 0 {
		t.Fatalf("v8 static leader rejoin: leader %q member %q members %d", old.LeaderID, old.MemberID, len(old.Members))
	}
	r := h.sync(syncReq(g, old.MemberID, old.Generation, nil))
	if string(r.MemberAssignment) != "mine" {
		t.Fatalf("assignment %q", r.MemberAssignment)
	}
}

func TestStaticRejoinFencesParkedJoin(t *testing.T) {
	h := newHarness(t, nil)
	const g = "fence"
	ids, gen := h.stableGroup(g, "d", "e")
	d, e := ids[0], ids[1]

	// Add a static member s.
	cs := h.joinAsync(clientCtx("s"), joinReq(g, "", withInstance("s-1")))
	h.waitState(g, "PreparingRebalance")
	cd := h.joinAsync(clientCtx("d"), joinReq(g, d))
	ce := h.joinAsync(clientCtx("e"), joinReq(g, e))
	rs := recv(t, cs)
	recv(t, cd)
	recv(t, ce)
	s := rs.MemberID
	gen = rs.Generation
	syncs := []<-chan *kmsg.SyncGroupResponse{
		h.syncAsync(context.Background(), syncReq(g, s, gen, nil)),
		h.syncAsync(context.Background(), syncReq(g, e, gen, nil)),
	}
	wantErr(t, "leader sync", h.sync(syncReq(g, d, gen, map[string]string{d: "1", e: "2", s: "3"})).ErrorCode, 0)
	for _, ch := range syncs {
		wantErr(t, "sync", recv(t, ch).ErrorCode, 0)
	}

	// The leader rejoins and the old incarnation of s parks in JoinGroup...
	cd = h.joinAsync(clientCtx("d"), joinReq(g, d))
	h.waitState(g, "PreparingRebalance")
	oldS := h.joinAsync(clientCtx("s"), joinReq(g, s, withInstance("s-1")))
	eventually(t, "s to park", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		m := h.c.groups[g].members[s]
		return m != nil && m.join != nil
	})
	// ...when a new incarnation with the same instance id shows up.
	newS := h.joinAsync(clientCtx("s"), joinReq(g, "", withInstance("s-1")))
	wantErr(t, "old incarnation's parked join", recv(t, oldS).ErrorCode, kerr.FencedInstanceID.Code)

	ce = h.joinAsync(clientCtx("e"), joinReq(g, e))
	rd, rn := recv(t, cd), recv(t, newS)
	recv(t, ce)
	wantErr(t, "new incarnation", rn.ErrorCode, 0)
	if rn.Generation != gen+1 || rd.Generation != gen+1 {
		t.Fatalf("generations %d %d, want %d", rn.Generation, rd.Generation, gen+1)
	}
	var listed []string
	for _, m := range rd.Members {
		listed = append(listed, m.MemberID)
	}
	if len(listed) != 3 || !slices.Contains(listed, rn.MemberID) || slices.Contains(listed, s) {
		t.Fatalf("leader sees %v; want the new incarnation %s and not %s", listed, rn.MemberID, s)
	}
}

func TestConcurrentClientsConverge(t *testing.T) {
	h := newHarness(t, nil)
	const g = "busy"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type seen struct {
		member     string
		generation int32
		assignment string
	}
	var mu sync.Mutex
	state := map[string]seen{}
	var wg sync.WaitGroup
	for _, client := range []string{"c1", "c2", "c3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx := WithClient(ctx, client, "/10.0.0.1")
			member := ""
			for ctx.Err() == nil {
				jr := h.c.Handle(cctx, joinReq(g, member, withRebalance(2*time.Second))).(*kmsg.JoinGroupResponse)
				switch jr.ErrorCode {
				case 0:
				case kerr.MemberIDRequired.Code:
					member = jr.MemberID
					continue
				case kerr.UnknownMemberID.Code:
					member = ""
					continue
				default:
					continue
				}
				member = jr.MemberID
				var assign map[string]string
				if jr.LeaderID == member {
					assign = map[string]string{}
					for _, m := range jr.Members {
						assign[m.MemberID] = "for-" + m.MemberID
					}
				}
				sr := h.c.Handle(cctx, syncReq(g, member, jr.Generation, assign)).(*kmsg.SyncGroupResponse)
				if sr.ErrorCode != 0 {
					continue
				}
				mu.Lock()
				state[client] = seen{member, jr.Generation, string(sr.MemberAssignment)}
				mu.Unlock()
				for ctx.Err() == nil && h.heartbeat(g, member, jr.Generation, nil) == 0 {
					time.Sleep(2 * time.Millisecond)
				}
			}
		}()
	}

	eventually(t, "three clients to share one stable generation", func() bool {
		d := h.describe(g)
		if d.State != "Stable" || len(d.Members) != 3 {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		var gen int32 = -1
		for _, m := range d.Members {
			found := false
			for _, s := range state {
				if s.member == m.MemberID && s.assignment == "for-"+m.MemberID {
					if gen != -1 && s.generation != gen {
						return false
					}
					gen, found = s.generation, true
				}
			}
			if !found {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
}
