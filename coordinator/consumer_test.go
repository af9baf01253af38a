package coordinator

import (
	"context"
	"slices"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var topicA = [16]byte{1}

func with848Topics(cfg *Config) {
	cfg.Topics = func() map[string]TopicMeta { return map[string]TopicMeta{"a": {ID: topicA, Partitions: 4}} }
}

// hb sends a full heartbeat (owned nil: a keepalive without partitions).
func hb(t *testing.T, c *Coordinator, member string, epoch int32, owned []int32) *kmsg.ConsumerGroupHeartbeatResponse {
	t.Helper()
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Version, req.Group, req.MemberID, req.MemberEpoch = 1, "g", member, epoch
	req.RebalanceTimeoutMillis = 60000
	req.SubscribedTopicNames = []string{"a"}
	if owned != nil {
		req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{{TopicID: topicA, Partitions: owned}}
	} else if epoch == 0 {
		req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	}
	return c.Handle(context.Background(), req).(*kmsg.ConsumerGroupHeartbeatResponse)
}

func assigned(r *kmsg.ConsumerGroupHeartbeatResponse) []int32 {
	if r.Assignment == nil {
		return nil
	}
	var out []int32
	for _, t := range r.Assignment.Topics {
		out = append(out, t.Partitions...)
	}
	return out
}

// TestConsumerGroupReconcile walks a second member joining a one-member
// group: the first gives up half its partitions before the second gets
// them, and no partition is ever handed to both.
func TestConsumerGroupReconcile(t *testing.T) {
	h := newHarness(t, with848Topics)
	r := hb(t, h.c, "m1", 0, nil)
	wantErr(t, "m1 join", r.ErrorCode, 0)
	if got := assigned(r); len(got) != 4 || r.MemberEpoch != 1 {
		t.Fatalf("m1 join: epoch %d, partitions %v; want epoch 1 and all 4", r.MemberEpoch, got)
	}
	r = hb(t, h.c, "m2", 0, nil)
	wantErr(t, "m2 join", r.ErrorCode, 0)
	if got := assigned(r); len(got) != 0 {
		t.Fatalf("m2 got %v while m1 still owns everything", got)
	}
	e2 := r.MemberEpoch
	// m1 learns it must give two up, keeping its epoch until it has.
	r = hb(t, h.c, "m1", 1, []int32{0, 1, 2, 3})
	kept := assigned(r)
	if len(kept) != 2 || r.MemberEpoch != 1 {
		t.Fatalf("m1 revoke step: epoch %d, partitions %v; want epoch 1 and 2 partitions", r.MemberEpoch, kept)
	}
	// m2 still gets nothing: m1 has not said it let go.
	if got := assigned(hb(t, h.c, "m2", e2, []int32{})); len(got) != 0 {
		t.Fatalf("m2 got %v before m1 released them", got)
	}
	r = hb(t, h.c, "m1", 1, kept)
	if r.MemberEpoch <= 1 {
		t.Fatalf("m1 at epoch %d after revoking; want the new epoch", r.MemberEpoch)
	}
	r = hb(t, h.c, "m2", e2, []int32{})
	got := assigned(r)
	if len(got) != 2 {
		t.Fatalf("m2 after the release: %v", got)
	}
	for _, p := range got {
		for _, k := range kept {
			if p == k {
				t.Fatalf("partition %d given to both members", p)
			}
		}
	}
	// Fencing and unknown members.
	// The previous epoch passes only while the member claims no more than
	// it has now (a lost response), as in Kafka.
	wantErr(t, "previous epoch, kept partitions", hb(t, h.c, "m1", 1, kept).ErrorCode, 0)
	wantErr(t, "previous epoch, revoked partitions", hb(t, h.c, "m1", 1, []int32{0, 1, 2, 3}).ErrorCode, kerr.FencedMemberEpoch.Code)
	wantErr(t, "future epoch", hb(t, h.c, "m1", 9, kept).ErrorCode, kerr.FencedMemberEpoch.Code)
	wantErr(t, "unknown member", hb(t, h.c, "nobody", 3, nil).ErrorCode, kerr.UnknownMemberID.Code)
	// An offset commit carries the member epoch.
	commit := func(member string, epoch int32) int16 {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Version, req.Group, req.MemberID, req.Generation = 9, "g", member, epoch
		req.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "a", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: got[0], Offset: 5}}}}
		return h.c.Handle(context.Background(), req).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode
	}
	wantErr(t, "commit at the member's epoch", commit("m2", r.MemberEpoch), 0)
	wantErr(t, "commit from a future epoch", commit("m2", r.MemberEpoch+5), kerr.FencedMemberEpoch.Code)
	wantErr(t, "commit from an unknown member", commit("x", 1), kerr.UnknownMemberID.Code)
}

// TestConsumerGroupSurvivesMove moves a consumer group to a new coordinator
// over the same store mid-rebalance: members go on at their epochs with
// their partitions, and the pending revocation completes there.
func TestConsumerGroupSurvivesMove(t *testing.T) {
	h := newHarness(t, with848Topics)
	hb(t, h.c, "m1", 0, nil)
	r2 := hb(t, h.c, "m2", 0, nil)
	r1 := hb(t, h.c, "m1", 1, []int32{0, 1, 2, 3})
	kept := assigned(r1)
	if len(kept) != 2 {
		t.Fatalf("m1 revoke step: %v", kept)
	}
	h.disown("g")
	h.c.Release()

	c2 := New(Config{Store: h.store, Owns: func(string) bool { return true }, Topics: func() map[string]TopicMeta {
		return map[string]TopicMeta{"a": {ID: topicA, Partitions: 4}}
	}})
	defer c2.Close()
	// m2 keeps its epoch and still waits.
	r := hb(t, c2, "m2", r2.MemberEpoch, []int32{})
	wantErr(t, "m2 after the move", r.ErrorCode, 0)
	if r.MemberEpoch != r2.MemberEpoch || len(assigned(r)) != 0 {
		t.Fatalf("m2 after the move: epoch %d (was %d), partitions %v", r.MemberEpoch, r2.MemberEpoch, assigned(r))
	}
	// m1 completes its revocation on the new coordinator.
	r = hb(t, c2, "m1", 1, kept)
	wantErr(t, "m1 after the move", r.ErrorCode, 0)
	if r.MemberEpoch <= 1 {
		t.Fatalf("m1 after the move: epoch %d", r.MemberEpoch)
	}
	if got := assigned(hb(t, c2, "m2", r2.MemberEpoch, []int32{})); len(got) != 2 {
		t.Fatalf("m2 after m1 released on the new coordinator: %v", got)
	}
	d := c2.Handle(context.Background(), &kmsg.ConsumerGroupDescribeRequest{Groups: []string{"g"}}).(*kmsg.ConsumerGroupDescribeResponse)
	if g := d.Groups[0]; g.ErrorCode != 0 || len(g.Members) != 2 || g.AssignorName != "uniform" {
		t.Fatalf("describe after the move: %+v", g)
	}
}

func TestAssignorsBalanced(t *testing.T) {
	b := [16]byte{2}
	in := assignInput{members: []string{"a", "b", "c"}, subs: map[string][]TopicMeta{
		"a": {{ID: topicA, Partitions: 5}, {ID: b, Partitions: 2}},
		"b": {{ID: topicA, Partitions: 5}, {ID: b, Partitions: 2}},
		"c": {{ID: topicA, Partitions: 5}, {ID: b, Partitions: 2}},
	}}
	for _, name := range []string{assignorUniform, assignorRange} {
		out := assign(name, in)
		total, seen := 0, tpSet{}
		for _, s := range out {
			for p := range s {
				if _, dup := seen[p]; dup {
					t.Fatalf("%s: %v assigned twice", name, p)
				}
				seen[p] = struct{}{}
			}
			total += len(s)
		}
		if total != 7 {
			t.Fatalf("%s: %d of 7 partitions assigned", name, total)
		}
		if name == assignorUniform {
			for m, s := range out {
				if len(s) < 2 || len(s) > 3 {
					t.Fatalf("uniform: %s has %d partitions", m, len(s))
				}
			}
			// Sticky: with a member gone, the others keep what they had.
			prev := out
			out2 := assign(name, assignInput{members: []string{"a", "b"}, subs: in.subs, prev: prev})
			for _, m := range []string{"a", "b"} {
				for p := range prev[m] {
					if _, ok := out2[m][p]; !ok {
						t.Fatalf("uniform: %s lost %v when c left", m, p)
					}
				}
			}
		}
	}
}

// TestConsumerGroupProtocolSwitch: with migration disabled, a classic
// join is refused while the consumer group has members and accepted once
// it is empty; an empty classic group becomes a consumer group on a
// heartbeat. (Under the default policy the classic member joins the
// consumer group: TestClassicJoinsConsumerGroup.)
func TestConsumerGroupProtocolSwitch(t *testing.T) {
	h := newHarness(t, func(cfg *Config) { with848Topics(cfg); cfg.Migration = MigrationDisabled })
	r := hb(t, h.c, "m1", 0, nil)
	wantErr(t, "join", r.ErrorCode, 0)
	wantErr(t, "classic join of a live consumer group", h.join("client", joinReq("g", "")).ErrorCode, kerr.InconsistentGroupProtocol.Code)
	wantErr(t, "delete of a live consumer group", h.c.Handle(context.Background(),
		&kmsg.DeleteGroupsRequest{Groups: []string{"g"}}).(*kmsg.DeleteGroupsResponse).Groups[0].ErrorCode, kerr.NonEmptyGroup.Code)
	wantErr(t, "leave", hb(t, h.c, "m1", -1, nil).ErrorCode, 0)
	wantErr(t, "classic join of an empty consumer group", h.join("client", joinReq("g", "")).ErrorCode, kerr.MemberIDRequired.Code)
	wantErr(t, "heartbeat to an empty classic group", hb(t, h.c, "m2", 0, nil).ErrorCode, 0)
}

// TestConsumerGroupRegex: a member subscribed by regex gets the topics
// whose whole name matches.
func TestConsumerGroupRegex(t *testing.T) {
	h := newHarness(t, func(cfg *Config) {
		cfg.Topics = func() map[string]TopicMeta {
			return map[string]TopicMeta{"a": {ID: topicA, Partitions: 2}, "ab": {ID: [16]byte{2}, Partitions: 3}, "ba": {ID: [16]byte{3}, Partitions: 5}}
		}
	})
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	re := "a.*"
	req.Version, req.Group, req.MemberID, req.MemberEpoch, req.RebalanceTimeoutMillis = 1, "g", "m", 0, 1000
	req.SubscribedTopicRegex, req.Topics = &re, []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	r := h.c.Handle(context.Background(), req).(*kmsg.ConsumerGroupHeartbeatResponse)
	wantErr(t, "regex join", r.ErrorCode, 0)
	if got := len(assigned(r)); got != 5 {
		t.Fatalf("regex %q: %d partitions, want the 5 of a and ab", re, got)
	}
	bad := "("
	req.MemberID, req.SubscribedTopicRegex = "m2", &bad
	wantErr(t, "bad regex", h.c.Handle(context.Background(), req).(*kmsg.ConsumerGroupHeartbeatResponse).ErrorCode, kerr.InvalidRegularExpression.Code)
}

// hbStatic is hb for a static member (instance id inst).
func hbStatic(t *testing.T, c *Coordinator, member, inst string, epoch int32, owned []int32) *kmsg.ConsumerGroupHeartbeatResponse {
	t.Helper()
	req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	req.Version, req.Group, req.MemberID, req.MemberEpoch, req.InstanceID = 1, "g", member, epoch, &inst
	req.RebalanceTimeoutMillis = 60000
	req.SubscribedTopicNames = []string{"a"}
	if owned != nil {
		req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{{TopicID: topicA, Partitions: owned}}
	} else if epoch == 0 {
		req.Topics = []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	}
	return c.Handle(context.Background(), req).(*kmsg.ConsumerGroupHeartbeatResponse)
}

// TestConsumerGroupStaticMember: a static KIP-848 member that leaves
// with epoch -2 keeps its place; its instance rejoining under a new
// member id gets its epoch and partitions back and nothing rebalances,
// also on the next coordinator. While a static member is in the group,
// another member with its instance id is refused.
func TestConsumerGroupStaticMember(t *testing.T) {
	h := newHarness(t, with848Topics)
	r := hbStatic(t, h.c, "s1", "i1", 0, nil)
	wantErr(t, "static join", r.ErrorCode, 0)
	r = hb(t, h.c, "m2", 0, nil)
	e2 := r.MemberEpoch
	keep := assigned(hbStatic(t, h.c, "s1", "i1", 1, []int32{0, 1, 2, 3}))
	r = hbStatic(t, h.c, "s1", "i1", 1, keep)
	es := r.MemberEpoch
	if len(keep) != 2 || es != e2 {
		t.Fatalf("static member keeps %v at epoch %d, want 2 partitions at %d", keep, es, e2)
	}
	other := assigned(hb(t, h.c, "m2", e2, []int32{}))
	slices.Sort(other)
	if len(other) != 2 {
		t.Fatalf("m2 got %v, want the other 2", other)
	}
	wantErr(t, "a second member with the instance id", hbStatic(t, h.c, "s2", "i1", 0, nil).ErrorCode, kerr.UnreleasedInstanceID.Code)

	r = hbStatic(t, h.c, "s1", "i1", -2, nil)
	if r.ErrorCode != 0 || r.MemberEpoch != -2 {
		t.Fatalf("static leave: %s epoch %d", errName(r.ErrorCode), r.MemberEpoch)
	}
	if r := hb(t, h.c, "m2", e2, other); r.ErrorCode != 0 || r.MemberEpoch != e2 || !sameParts(assigned(r), other) {
		t.Fatalf("m2 after the static leave: %s epoch %d assignment %v: the group rebalanced", errName(r.ErrorCode), r.MemberEpoch, r.Assignment)
	}

	// The next coordinator knows the member left for now.
	c2 := New(Config{Store: h.store, Owns: func(string) bool { return true }, Topics: h.c.cfg.Topics})
	defer c2.Close()
	r = hbStatic(t, c2, "s1b", "i1", 0, nil)
	wantErr(t, "static rejoin", r.ErrorCode, 0)
	got := assigned(r)
	slices.Sort(got)
	slices.Sort(keep)
	if r.MemberEpoch != es || !slices.Equal(got, keep) {
		t.Fatalf("static rejoin: epoch %d (was %d), partitions %v (had %v)", r.MemberEpoch, es, got, keep)
	}
	if r := hb(t, c2, "m2", e2, other); r.ErrorCode != 0 || r.MemberEpoch != e2 || !sameParts(assigned(r), other) {
		t.Fatalf("m2 after the static rejoin: %s epoch %d assignment %v: the group rebalanced", errName(r.ErrorCode), r.MemberEpoch, r.Assignment)
	}
	wantErr(t, "the old member id", hbStatic(t, c2, "s1", "i1", es, keep).ErrorCode, kerr.UnknownMemberID.Code)
}

func sameParts(got, want []int32) bool {
	got = slices.Clone(got)
	slices.Sort(got)
	return slices.Equal(got, want)
}
