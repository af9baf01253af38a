package coordinator

import (
	"context"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// classicMetaOwning is consumer metadata for topic a listing owned
// partitions, as a cooperative client sends it.
func classicMetaOwning(owned ...int32) []byte {
	m := kmsg.NewConsumerMemberMetadata()
	m.Version, m.Topics = 1, []string{"a"}
	if len(owned) > 0 {
		m.OwnedPartitions = []kmsg.ConsumerMemberMetadataOwnedPartition{{Topic: "a", Partitions: owned}}
	}
	return m.AppendTo(nil)
}

func classicJoin(owned ...int32) joinOpt {
	return withProtocols(proto("range", classicMetaOwning(owned...)))
}

func decodeAssignment(t *testing.T, b []byte) []int32 {
	t.Helper()
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(b); err != nil {
		t.Fatalf("assignment: %v", err)
	}
	var out []int32
	for _, tp := range a.Topics {
		out = append(out, tp.Partitions...)
	}
	slices.Sort(out)
	return out
}

// stableClassic makes group g a Stable classic group of one member owning
// all 4 partitions of a; it returns the member id and generation.
func stableClassic(t *testing.T, h *harness) (string, int32) {
	t.Helper()
	id := h.memberID("g", "c1")
	jr := h.join("c1", joinReq("g", id, classicJoin()))
	wantErr(t, "classic join", jr.ErrorCode, 0)
	var a kmsg.ConsumerMemberAssignment
	a.Topics = []kmsg.ConsumerMemberAssignmentTopic{{Topic: "a", Partitions: []int32{0, 1, 2, 3}}}
	sr := h.sync(syncReq("g", id, jr.Generation, map[string]string{id: string(a.AppendTo(nil))}))
	wantErr(t, "classic sync", sr.ErrorCode, 0)
	return id, jr.Generation
}

// TestClassicGroupUpgrade walks an online upgrade: a KIP-848 member joins
// a Stable classic group, which becomes a consumer group; the classic
// member is told to rejoin, gives up half its partitions through
// JoinGroup and SyncGroup, and only then does the new member get them.
// When the KIP-848 member leaves, the group is classic again.
func TestClassicGroupUpgrade(t *testing.T) {
	h := newHarness(t, with848Topics)
	id, gen := stableClassic(t, h)

	r := hb(t, h.c, "m2", 0, nil)
	wantErr(t, "KIP-848 join of the classic group", r.ErrorCode, 0)
	if got := assigned(r); len(got) != 0 {
		t.Fatalf("the KIP-848 member got %v while the classic member owns everything", got)
	}
	e2 := r.MemberEpoch
	wantErr(t, "classic heartbeat after the upgrade", h.heartbeat("g", id, gen, nil), kerr.RebalanceInProgress.Code)

	// The rejoin reports all 4 owned: the member keeps its generation
	// and is assigned the 2 it keeps.
	jr := h.join("c1", joinReq("g", id, classicJoin(0, 1, 2, 3)))
	wantErr(t, "classic rejoin", jr.ErrorCode, 0)
	if jr.Generation != gen || jr.LeaderID == id || jr.Protocol == nil || *jr.Protocol != "range" {
		t.Fatalf("classic rejoin: generation %d (want %d), leader %q, protocol %v", jr.Generation, gen, jr.LeaderID, jr.Protocol)
	}
	sr := h.sync(syncReq("g", id, gen, nil))
	wantErr(t, "classic sync", sr.ErrorCode, 0)
	keep := decodeAssignment(t, sr.MemberAssignment)
	if len(keep) != 2 {
		t.Fatalf("classic member keeps %v, want 2 partitions", keep)
	}
	if got := assigned(hb(t, h.c, "m2", e2, []int32{})); len(got) != 0 {
		t.Fatalf("the KIP-848 member got %v before the classic member revoked", got)
	}

	// Having revoked, it rejoins at the new epoch.
	jr = h.join("c1", joinReq("g", id, classicJoin(keep...)))
	wantErr(t, "classic rejoin after revoking", jr.ErrorCode, 0)
	if jr.Generation <= gen {
		t.Fatalf("classic rejoin after revoking: generation %d, want above %d", jr.Generation, gen)
	}
	gen2 := jr.Generation
	wantErr(t, "classic heartbeat at the new generation", h.heartbeat("g", id, gen2, nil), 0)
	wantErr(t, "classic heartbeat at the old generation", h.heartbeat("g", id, gen, nil), kerr.IllegalGeneration.Code)
	if e := commitErrs(h.commit("g", id, gen, map[TopicPartition]int64{{Topic: "a", Partition: keep[0]}: 1})); e[kerr.IllegalGeneration.Code] != 1 {
		t.Fatalf("classic commit at the old generation: %v, want ILLEGAL_GENERATION", e)
	}
	if e := commitErrs(h.commit("g", id, gen2, map[TopicPartition]int64{{Topic: "a", Partition: keep[0]}: 1})); e[0] != 1 {
		t.Fatalf("classic commit at its generation: %v", e)
	}
	// An eager client revokes everything before it rejoins: it gets
	// its partitions back at the same generation.
	jr = h.join("c1", joinReq("g", id, classicJoin()))
	wantErr(t, "eager rejoin", jr.ErrorCode, 0)
	if jr.Generation != gen2 {
		t.Fatalf("eager rejoin: generation %d, want %d", jr.Generation, gen2)
	}
	if got := decodeAssignment(t, h.sync(syncReq("g", id, gen2, nil)).MemberAssignment); !slices.Equal(got, keep) {
		t.Fatalf("eager rejoin: assigned %v, want %v back", got, keep)
	}
	r = hb(t, h.c, "m2", e2, []int32{})
	got := assigned(r)
	slices.Sort(got)
	if len(got) != 2 || slices.ContainsFunc(got, func(p int32) bool { return slices.Contains(keep, p) }) {
		t.Fatalf("the KIP-848 member got %v; the classic member keeps %v", got, keep)
	}

	// A new coordinator restores the classic member as it was.
	c2 := New(Config{Store: h.store, Owns: func(string) bool { return true }, Topics: h.c.cfg.Topics})
	defer c2.Close()
	hr := kmsg.NewPtrHeartbeatRequest()
	hr.Version, hr.Group, hr.MemberID, hr.Generation = 4, "g", id, gen2
	wantErr(t, "classic heartbeat to a new coordinator", c2.Handle(context.Background(), hr).(*kmsg.HeartbeatResponse).ErrorCode, 0)

	// The KIP-848 member leaves: the group is classic again and rebalances.
	wantErr(t, "KIP-848 leave", hb(t, h.c, "m2", -1, nil).ErrorCode, 0)
	if d := h.describe("g"); d.State != "PreparingRebalance" || len(d.Members) != 1 {
		t.Fatalf("after the downgrade: %s with %d members, want PreparingRebalance with 1", d.State, len(d.Members))
	}
	wantErr(t, "classic heartbeat after the downgrade", h.heartbeat("g", id, gen2, nil), kerr.RebalanceInProgress.Code)
	jr = h.join("c1", joinReq("g", id, classicJoin(keep...)))
	wantErr(t, "classic join after the downgrade", jr.ErrorCode, 0)
	if jr.LeaderID != id || jr.Generation <= gen2 {
		t.Fatalf("classic join after the downgrade: leader %q generation %d", jr.LeaderID, jr.Generation)
	}
}

// TestClassicGroupUpgradeDisabled: with the policy disabled, a classic
// group with members refuses a KIP-848 join and carries on.
func TestClassicGroupUpgradeDisabled(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { with848Topics(cfg); cfg.Migration = MigrationDisabled })
	id, gen := stableClassic(t, h)
	wantErr(t, "KIP-848 join", hb(t, h.c, "m2", 0, nil).ErrorCode, kerr.GroupIDNotFound.Code)
	wantErr(t, "classic heartbeat", h.heartbeat("g", id, gen, nil), 0)
	if p, ok := ParseMigrationPolicy("BIDIRECTIONAL"); !ok || p != MigrationBidirectional {
		t.Fatalf("ParseMigrationPolicy: %q %v", p, ok)
	}
	if _, ok := ParseMigrationPolicy("sideways"); ok {
		t.Fatal("ParseMigrationPolicy accepted sideways")
	}
}

// TestDescribeGroupsMigrating: the classic DescribeGroups sees a group in
// the middle of an online upgrade as Kafka's coordinator does, which
// describes only classic groups and answers any other as Dead, with no
// members and no protocol type (v5 and below carry no error; the client
// asks ConsumerGroupDescribe first). That holds with committed offsets
// too: the group exists, it is just not a classic one.
func TestDescribeGroupsMigrating(t *testing.T) {
	h := newHarness(t, with848Topics)
	id, gen := stableClassic(t, h)
	if e := commitErrs(h.commit("g", id, gen, map[TopicPartition]int64{{Topic: "a", Partition: 0}: 5})); e[0] != 1 {
		t.Fatalf("classic commit: %v", e)
	}
	wantErr(t, "KIP-848 join", hb(t, h.c, "m2", 0, nil).ErrorCode, 0)

	d := h.describe("g")
	if d.ErrorCode != 0 || d.State != "Dead" || len(d.Members) != 0 || d.ProtocolType != "" || d.Protocol != "" {
		t.Fatalf("DescribeGroups of the migrating group: error %d state %s protocol %q/%q members %d, want Dead, none",
			d.ErrorCode, d.State, d.ProtocolType, d.Protocol, len(d.Members))
	}
	// ConsumerGroupDescribe shows it, classic member included.
	r := kmsg.NewPtrConsumerGroupDescribeRequest()
	r.Groups = []string{"g"}
	cg := h.c.Handle(context.Background(), r).(*kmsg.ConsumerGroupDescribeResponse).Groups[0]
	if cg.ErrorCode != 0 || len(cg.Members) != 2 {
		t.Fatalf("ConsumerGroupDescribe: error %d, %d members, want 2", cg.ErrorCode, len(cg.Members))
	}
	// Back to classic once the KIP-848 member leaves: described again.
	wantErr(t, "KIP-848 leave", hb(t, h.c, "m2", -1, nil).ErrorCode, 0)
	if d := h.describe("g"); d.State != "PreparingRebalance" || len(d.Members) != 1 || d.ProtocolType != "consumer" {
		t.Fatalf("after the downgrade: %s, %d members, protocol type %q", d.State, len(d.Members), d.ProtocolType)
	}
}

// classicJoinsKIP848 has a classic member (instance id instance, if not
// "") join group g, where KIP-848 member m1 owns all 4 partitions, and
// walks both to their shares. It returns the classic member's id, its
// generation and partitions, and m1's epoch.
func classicJoinsKIP848(t *testing.T, h *harness, instance string) (string, int32, []int32, int32) {
	t.Helper()
	r := hb(t, h.c, "m1", 0, nil)
	wantErr(t, "m1 join", r.ErrorCode, 0)
	e1 := r.MemberEpoch
	opts, inst := []joinOpt{classicJoin()}, (*string)(nil)
	if instance != "" {
		opts, inst = append(opts, withInstance(instance)), &instance
	}
	jr := h.join("c1", joinReq("g", "", opts...))
	wantErr(t, "classic join of a consumer group of KIP-848 members", jr.ErrorCode, 0)
	id, gen := jr.MemberID, jr.Generation
	if id == "" || gen <= e1 || jr.LeaderID != "" || jr.Protocol == nil || *jr.Protocol != "range" {
		t.Fatalf("classic join: member %q generation %d (m1 at %d) leader %q protocol %v", id, gen, e1, jr.LeaderID, jr.Protocol)
	}
	if got := decodeAssignment(t, h.sync(syncReq("g", id, gen, nil)).MemberAssignment); len(got) != 0 {
		t.Fatalf("the classic member got %v while m1 owns everything", got)
	}
	wantErr(t, "classic heartbeat while waiting", h.heartbeat("g", id, gen, inst), kerr.RebalanceInProgress.Code)
	// m1 gives half up, then reports only what it keeps.
	r = hb(t, h.c, "m1", e1, []int32{0, 1, 2, 3})
	keep := assigned(r)
	if len(keep) != 2 {
		t.Fatalf("m1 keeps %v, want 2", keep)
	}
	r = hb(t, h.c, "m1", e1, keep)
	wantErr(t, "m1 after revoking", r.ErrorCode, 0)
	if r.MemberEpoch != gen {
		t.Fatalf("m1 epoch %d after revoking, want %d", r.MemberEpoch, gen)
	}
	jr = h.join("c1", joinReq("g", id, opts...))
	wantErr(t, "classic rejoin", jr.ErrorCode, 0)
	got := decodeAssignment(t, h.sync(syncReq("g", id, jr.Generation, nil)).MemberAssignment)
	if len(got) != 2 || slices.ContainsFunc(got, func(p int32) bool { return slices.Contains(keep, p) }) {
		t.Fatalf("the classic member got %v; m1 keeps %v", got, keep)
	}
	return id, jr.Generation, got, r.MemberEpoch
}

// TestClassicJoinsConsumerGroup: a classic member joins a consumer group
// that has only KIP-848 members (Kafka's classic join to a consumer
// group): it gets its share once the KIP-848 member has revoked it, and
// when the KIP-848 member leaves the group becomes classic again.
func TestClassicJoinsConsumerGroup(t *testing.T) {
	h := newHarness(t, with848Topics)
	id, gen, _, _ := classicJoinsKIP848(t, h, "")
	wantErr(t, "classic heartbeat", h.heartbeat("g", id, gen, nil), 0)
	wantErr(t, "KIP-848 leave", hb(t, h.c, "m1", -1, nil).ErrorCode, 0)
	if d := h.describe("g"); d.State != "PreparingRebalance" || len(d.Members) != 1 {
		t.Fatalf("after the KIP-848 member left: %s with %d members, want a classic group rebalancing", d.State, len(d.Members))
	}

	// With upgrades disabled, a classic member cannot join a consumer group.
	h2 := newHarness(t, func(cfg *Config) { with848Topics(cfg); cfg.Migration = MigrationDowngrade })
	wantErr(t, "m1 join", hb(t, h2.c, "m1", 0, nil).ErrorCode, 0)
	wantErr(t, "classic join, upgrades disabled", h2.join("c1", joinReq("g", "", classicJoin())).ErrorCode, kerr.InconsistentGroupProtocol.Code)
}

// TestClassicStaticMemberInConsumerGroup: a static classic member of a
// consumer group that restarts (JoinGroup with its instance id and no
// member id) gets a new member id, its generation and partitions back,
// and nothing rebalances; its old id is fenced, here and on the next
// coordinator.
func TestClassicStaticMemberInConsumerGroup(t *testing.T) {
	h := newHarness(t, with848Topics)
	inst := kmsg.StringPtr("s1")
	id, gen, parts, e1 := classicJoinsKIP848(t, h, "s1")

	jr := h.join("c1", joinReq("g", "", classicJoin(), withInstance("s1")))
	wantErr(t, "static rejoin", jr.ErrorCode, 0)
	if jr.MemberID == id || jr.Generation != gen {
		t.Fatalf("static rejoin: member %q (was %q), generation %d (was %d)", jr.MemberID, id, jr.Generation, gen)
	}
	nid := jr.MemberID
	sr := h.sync(syncReq("g", nid, gen, nil))
	wantErr(t, "static sync", sr.ErrorCode, 0)
	if got := decodeAssignment(t, sr.MemberAssignment); !slices.Equal(got, parts) {
		t.Fatalf("static member after its restart: %v, want %v back", got, parts)
	}
	wantErr(t, "new incarnation's heartbeat", h.heartbeat("g", nid, gen, inst), 0)
	wantErr(t, "old incarnation's heartbeat", h.heartbeat("g", id, gen, inst), kerr.FencedInstanceID.Code)
	r := hb(t, h.c, "m1", e1, nil)
	if r.ErrorCode != 0 || r.MemberEpoch != e1 || r.Assignment != nil {
		t.Fatalf("m1 after the static rejoin: %s epoch %d (was %d) assignment %v: the group rebalanced", errName(r.ErrorCode), r.MemberEpoch, e1, r.Assignment)
	}

	c2 := New(Config{Store: h.store, Owns: func(string) bool { return true }, Topics: h.c.cfg.Topics})
	defer c2.Close()
	for _, tc := range []struct {
		id   string
		want int16
	}{{nid, 0}, {id, kerr.FencedInstanceID.Code}} {
		hr := kmsg.NewPtrHeartbeatRequest()
		hr.Version, hr.Group, hr.MemberID, hr.Generation, hr.InstanceID = 4, "g", tc.id, gen, inst
		wantErr(t, "static heartbeat to a new coordinator", c2.Handle(context.Background(), hr).(*kmsg.HeartbeatResponse).ErrorCode, tc.want)
	}
}

// TestClassicStaticReplacesKIP848: a classic JoinGroup with the instance
// id of a live static KIP-848 member is refused (UNRELEASED_INSTANCE_ID);
// once that member has left with epoch -2, it takes its place and
// partitions.
func TestClassicStaticReplacesKIP848(t *testing.T) {
	h := newHarness(t, with848Topics)
	r := hbStatic(t, h.c, "s1", "i1", 0, nil)
	wantErr(t, "static KIP-848 join", r.ErrorCode, 0)
	epoch := r.MemberEpoch
	wantErr(t, "classic join, instance held", h.join("c1", joinReq("g", "", classicJoin(), withInstance("i1"))).ErrorCode,
		kerr.UnreleasedInstanceID.Code)
	wantErr(t, "static leave", hbStatic(t, h.c, "s1", "i1", -2, nil).ErrorCode, 0)
	jr := h.join("c1", joinReq("g", "", classicJoin(), withInstance("i1")))
	wantErr(t, "classic join after the static leave", jr.ErrorCode, 0)
	if jr.Generation != epoch {
		t.Fatalf("classic join after the static leave: generation %d, want %d", jr.Generation, epoch)
	}
	if got := decodeAssignment(t, h.sync(syncReq("g", jr.MemberID, epoch, nil)).MemberAssignment); len(got) != 4 {
		t.Fatalf("the classic member got %v, want the 4 partitions of the member it replaced", got)
	}
	wantErr(t, "classic heartbeat", h.heartbeat("g", jr.MemberID, epoch, kmsg.StringPtr("i1")), 0)
}
