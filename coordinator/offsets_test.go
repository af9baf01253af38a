package coordinator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func fetchReq(version int16, group string, topics map[string][]int32) *kmsg.OffsetFetchRequest {
	r := kmsg.NewPtrOffsetFetchRequest()
	r.Version = version
	r.Group = group
	for t, ps := range topics {
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic = t
		rt.Partitions = ps
		r.Topics = append(r.Topics, rt)
	}
	return r
}

func (h *harness) fetch(req *kmsg.OffsetFetchRequest) *kmsg.OffsetFetchResponse {
	return h.c.Handle(context.Background(), req).(*kmsg.OffsetFetchResponse)
}

func TestCommitFetchRoundTrip(t *testing.T) {
	h := newHarness(t, nil)
	ids, gen := h.stableGroup("g", "a")

	before := time.Now().UnixMilli()
	resp := h.commit("g", ids[0], gen, map[TopicPartition]int64{{"t1", 0}: 10, {"t1", 1}: 11, {"t2", 0}: 20})
	if errs := commitErrs(resp); len(errs) != 1 || errs[0] != 3 {
		t.Fatalf("commit errors %v", errs)
	}
	stored := h.store.Offsets("g")[TopicPartition{"t1", 1}]
	if stored.Offset != 11 || stored.LeaderEpoch != 3 || stored.Metadata != "md" || stored.CommitTime < before {
		t.Fatalf("stored %+v", stored)
	}

	for _, v := range []int16{1, 5, 7} {
		f := h.fetch(fetchReq(v, "g", map[string][]int32{"t1": {1, 7}}))
		wantErr(t, "fetch", f.ErrorCode, 0)
		if f.Version != v || len(f.Topics) != 1 || len(f.Topics[0].Partitions) != 2 {
			t.Fatalf("v%d fetch: %+v", v, f)
		}
		p1, p7 := f.Topics[0].Partitions[0], f.Topics[0].Partitions[1]
		if p1.Offset != 11 || *p1.Metadata != "md" || p1.LeaderEpoch != 3 {
			t.Fatalf("v%d committed partition: %+v", v, p1)
		}
		if p7.Offset != -1 || *p7.Metadata != "" || p7.LeaderEpoch != -1 || p7.ErrorCode != 0 {
			t.Fatalf("v%d uncommitted partition: %+v", v, p7)
		}
	}

	// Null topics: everything the group committed, sorted.
	all := h.fetch(fetchReq(6, "g", nil))
	if len(all.Topics) != 2 || all.Topics[0].Topic != "t1" || len(all.Topics[0].Partitions) != 2 || all.Topics[1].Topic != "t2" {
		t.Fatalf("fetch all: %+v", all.Topics)
	}

	// v8+: several groups at once, unknown ones without error.
	multi := kmsg.NewPtrOffsetFetchRequest()
	multi.Version = 9
	multi.RequireStable = true
	for _, name := range []string{"g", "never"} {
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = name
		rt := kmsg.NewOffsetFetchRequestGroupTopic()
		rt.Topic = "t2"
		rt.Partitions = []int32{0}
		rg.Topics = []kmsg.OffsetFetchRequestGroupTopic{rt}
		multi.Groups = append(multi.Groups, rg)
	}
	allGroup := kmsg.NewOffsetFetchRequestGroup()
	allGroup.Group = "g"
	multi.Groups = append(multi.Groups, allGroup)
	mr := h.fetch(multi)
	if len(mr.Groups) != 3 {
		t.Fatalf("multi-group fetch answered %d groups", len(mr.Groups))
	}
	if p := mr.Groups[0].Topics[0].Partitions[0]; mr.Groups[0].ErrorCode != 0 || p.Offset != 20 {
		t.Fatalf("group g: %+v", mr.Groups[0])
	}
	if p := mr.Groups[1].Topics[0].Partitions[0]; mr.Groups[1].ErrorCode != 0 || p.Offset != -1 || p.ErrorCode != 0 {
		t.Fatalf("unknown group: %+v", mr.Groups[1])
	}
	if len(mr.Groups[2].Topics) != 2 {
		t.Fatalf("all-topics group: %+v", mr.Groups[2])
	}

	// Wrong generation and strangers are refused.
	wantErr(t, "old generation", commitErr(h.commit("g", ids[0], gen-1, map[TopicPartition]int64{{"t1", 0}: 1})), kerr.IllegalGeneration.Code)
	wantErr(t, "stranger", commitErr(h.commit("g", "who", gen, map[TopicPartition]int64{{"t1", 0}: 1})), kerr.UnknownMemberID.Code)
	wantErr(t, "simple commit to active group", commitErr(h.commit("g", "", -1, map[TopicPartition]int64{{"t1", 0}: 1})), kerr.UnknownMemberID.Code)
	if got := h.store.Offsets("g")[TopicPartition{"t1", 0}].Offset; got != 10 {
		t.Fatalf("refused commits changed the offset to %d", got)
	}
}

func TestOffsetFetchUnknownGroup(t *testing.T) {
	h := newHarness(t, nil)
	for _, v := range []int16{0, 3, 7} {
		f := h.fetch(fetchReq(v, "nobody", map[string][]int32{"t": {0, 1}}))
		wantErr(t, "fetch", f.ErrorCode, 0)
		for _, p := range f.Topics[0].Partitions {
			if p.Offset != -1 || p.Metadata == nil || *p.Metadata != "" || p.ErrorCode != 0 {
				t.Fatalf("v%d partition %+v", v, p)
			}
		}
	}
	if all := h.fetch(fetchReq(5, "nobody", nil)); all.ErrorCode != 0 || len(all.Topics) != 0 {
		t.Fatalf("fetch all of an unknown group: %+v", all)
	}
	// An empty group id is allowed for offset fetches, as in Kafka.
	if f := h.fetch(fetchReq(1, "", map[string][]int32{"t": {0}})); f.Topics[0].Partitions[0].Offset != -1 {
		t.Fatalf("empty group id: %+v", f)
	}
}

func TestSimpleCommits(t *testing.T) {
	h := newHarness(t, nil)

	// No group at all: generation -1 commits are welcome...
	wantErr(t, "simple commit", commitErr(h.commit("manual", "", -1, map[TopicPartition]int64{{"t", 0}: 5})), 0)
	if h.store.Offsets("manual")[TopicPartition{"t", 0}].Offset != 5 {
		t.Fatal("simple commit not stored")
	}
	if h.c.Stats().Groups != 0 {
		t.Fatal("a simple commit created in-memory group state")
	}
	// ...and v0, which has no generation at all.
	v0 := kmsg.NewPtrOffsetCommitRequest()
	v0.Version = 0
	v0.Group = "manual"
	v0.Generation = 7 // not on the wire in v0
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = "t"
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition = 1
	rp.Offset = 9
	rt.Partitions = append(rt.Partitions, rp)
	v0.Topics = append(v0.Topics, rt)
	wantErr(t, "v0 commit", commitErr(h.c.Handle(context.Background(), v0).(*kmsg.OffsetCommitResponse)), 0)

	// A generation names a group that must exist.
	wantErr(t, "generation on unknown group", commitErr(h.commit("ghost", "m", 3, map[TopicPartition]int64{{"t", 0}: 1})), kerr.IllegalGeneration.Code)
	wantErr(t, "generation on offsets-only group", commitErr(h.commit("manual", "m", 3, map[TopicPartition]int64{{"t", 0}: 1})), kerr.UnknownMemberID.Code)

	// Once the group empties, simple commits are accepted again.
	ids, _ := h.stableGroup("grp", "a")
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Version = 2
	leave.Group = "grp"
	leave.MemberID = ids[0]
	h.c.Handle(context.Background(), leave)
	h.waitState("grp", "Empty")
	wantErr(t, "simple commit to empty group", commitErr(h.commit("grp", "", -1, map[TopicPartition]int64{{"t", 0}: 1})), 0)
}

func TestCommitMetadataAndStoreErrors(t *testing.T) {
	h := newHarness(t, nil)

	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version = 9
	r.Group = "g"
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = "t"
	for i, md := range []string{"ok", strings.Repeat("x", 4097)} {
		p := kmsg.NewOffsetCommitRequestTopicPartition()
		p.Partition = int32(i)
		p.Offset = 1
		p.Metadata = kmsg.StringPtr(md)
		rt.Partitions = append(rt.Partitions, p)
	}
	r.Topics = append(r.Topics, rt)
	resp := h.c.Handle(context.Background(), r).(*kmsg.OffsetCommitResponse)
	wantErr(t, "small metadata", resp.Topics[0].Partitions[0].ErrorCode, 0)
	wantErr(t, "large metadata", resp.Topics[0].Partitions[1].ErrorCode, kerr.OffsetMetadataTooLarge.Code)
	if _, ok := h.store.Offsets("g")[TopicPartition{"t", 1}]; ok {
		t.Fatal("oversized metadata was stored")
	}

	for _, tc := range []struct {
		err  error
		want int16
	}{
		{context.DeadlineExceeded, kerr.RequestTimedOut.Code},
		{errors.New("raft: not leader"), kerr.NotCoordinator.Code},
	} {
		h.store.setErr(tc.err)
		wantErr(t, tc.err.Error(), commitErr(h.commit("g", "", -1, map[TopicPartition]int64{{"t", 0}: 2})), tc.want)
	}
	h.store.setErr(nil)
	if got := h.store.Offsets("g")[TopicPartition{"t", 0}].Offset; got != 1 {
		t.Fatalf("failed commits changed the offset to %d", got)
	}
}

func deleteGroups(h *harness, groups ...string) map[string]int16 {
	r := kmsg.NewPtrDeleteGroupsRequest()
	r.Version = 2
	r.Groups = groups
	out := map[string]int16{}
	for _, g := range h.c.Handle(context.Background(), r).(*kmsg.DeleteGroupsResponse).Groups {
		out[g.Group] = g.ErrorCode
	}
	return out
}

func TestDeleteGroups(t *testing.T) {
	h := newHarness(t, nil)
	h.stableGroup("active", "a")
	h.commit("offsets-only", "", -1, map[TopicPartition]int64{{"t", 0}: 1})

	ids, gen := h.stableGroup("emptied", "b")
	h.commit("emptied", ids[0], gen, map[TopicPartition]int64{{"t", 0}: 1})
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Version = 0
	leave.Group = "emptied"
	leave.MemberID = ids[0]
	h.c.Handle(context.Background(), leave)
	h.waitState("emptied", "Empty")

	got := deleteGroups(h, "active", "offsets-only", "emptied", "unknown")
	wantErr(t, "active", got["active"], kerr.NonEmptyGroup.Code)
	wantErr(t, "offsets-only", got["offsets-only"], 0)
	wantErr(t, "emptied", got["emptied"], 0)
	wantErr(t, "unknown", got["unknown"], kerr.GroupIDNotFound.Code)

	if len(h.store.Offsets("offsets-only")) != 0 || len(h.store.Offsets("emptied")) != 0 {
		t.Fatal("offsets survived the delete")
	}
	if d := h.describe("emptied"); d.State != "Dead" {
		t.Fatalf("deleted group is %s", d.State)
	}
	if d := h.describe("active"); d.State != "Stable" {
		t.Fatalf("refused delete changed the group: %s", d.State)
	}
	wantErr(t, "delete again", deleteGroups(h, "offsets-only")["offsets-only"], kerr.GroupIDNotFound.Code)
}

func TestOffsetDelete(t *testing.T) {
	h := newHarness(t, nil)
	ids, gen := h.stableGroup("g", "a") // subscribed to t1
	h.commit("g", ids[0], gen, map[TopicPartition]int64{{"t1", 0}: 1, {"old", 0}: 2, {"old", 1}: 3})

	del := func(group string, tps ...TopicPartition) *kmsg.OffsetDeleteResponse {
		r := kmsg.NewPtrOffsetDeleteRequest()
		r.Group = group
		for _, tp := range tps {
			rt := kmsg.NewOffsetDeleteRequestTopic()
			rt.Topic = tp.Topic
			rp := kmsg.NewOffsetDeleteRequestTopicPartition()
			rp.Partition = tp.Partition
			rt.Partitions = append(rt.Partitions, rp)
			r.Topics = append(r.Topics, rt)
		}
		return h.c.Handle(context.Background(), r).(*kmsg.OffsetDeleteResponse)
	}

	resp := del("g", TopicPartition{"t1", 0}, TopicPartition{"old", 0})
	wantErr(t, "top-level", resp.ErrorCode, 0)
	wantErr(t, "subscribed topic", resp.Topics[0].Partitions[0].ErrorCode, kerr.GroupSubscribedToTopic.Code)
	wantErr(t, "unsubscribed topic", resp.Topics[1].Partitions[0].ErrorCode, 0)
	left := h.store.Offsets("g")
	if _, ok := left[TopicPartition{"old", 0}]; ok || len(left) != 2 {
		t.Fatalf("offsets left: %v", left)
	}
	// Refusing every partition must not turn into "delete everything".
	del("g", TopicPartition{"t1", 0})
	if len(h.store.Offsets("g")) != 2 {
		t.Fatal("a fully refused delete removed offsets")
	}

	wantErr(t, "unknown group", del("nobody", TopicPartition{"t", 0}).ErrorCode, kerr.GroupIDNotFound.Code)
	wantErr(t, "empty group id", del("", TopicPartition{"t", 0}).ErrorCode, kerr.InvalidGroupID.Code)

	// A non-consumer group with members cannot lose offsets.
	connect := joinReq("connect", "", withVersion(3))
	connect.ProtocolType = "connect"
	h.join("w", connect)
	wantErr(t, "non-consumer group", del("connect", TopicPartition{"t", 0}).ErrorCode, kerr.NonEmptyGroup.Code)
}

func TestDescribeAndListGroups(t *testing.T) {
	h := newHarness(t, nil)
	h.stableGroup("stable", "a")
	h.commit("offsets-only", "", -1, map[TopicPartition]int64{{"t", 0}: 1})
	h.commit("elsewhere", "", -1, map[TopicPartition]int64{{"t", 0}: 1})
	h.disown("elsewhere")

	d := kmsg.NewPtrDescribeGroupsRequest()
	d.Version = 5
	d.IncludeAuthorizedOperations = true
	d.Groups = []string{"stable", "offsets-only", "missing", "elsewhere"}
	dr := h.c.Handle(context.Background(), d).(*kmsg.DescribeGroupsResponse)
	states := map[string]string{}
	for _, g := range dr.Groups {
		states[g.Group] = g.State
		if g.Group == "elsewhere" {
			wantErr(t, "describe unowned", g.ErrorCode, kerr.NotCoordinator.Code)
		} else {
			wantErr(t, "describe "+g.Group, g.ErrorCode, 0)
		}
		if g.AuthorizedOperations <= 0 {
			t.Fatalf("authorized operations %d", g.AuthorizedOperations)
		}
	}
	if states["stable"] != "Stable" || states["offsets-only"] != "Empty" || states["missing"] != "Dead" {
		t.Fatalf("described states %v", states)
	}

	list := func(states, types []string) map[string]kmsg.ListGroupsResponseGroup {
		r := kmsg.NewPtrListGroupsRequest()
		r.Version = 5
		r.StatesFilter = states
		r.TypesFilter = types
		resp := h.c.Handle(context.Background(), r).(*kmsg.ListGroupsResponse)
		wantErr(t, "list", resp.ErrorCode, 0)
		out := map[string]kmsg.ListGroupsResponseGroup{}
		for _, g := range resp.Groups {
			out[g.Group] = g
		}
		return out
	}
	all := list(nil, nil)
	if len(all) != 2 || all["stable"].GroupState != "Stable" || all["stable"].ProtocolType != "consumer" ||
		all["offsets-only"].GroupState != "Empty" || all["stable"].GroupType != "classic" {
		t.Fatalf("list: %+v", all)
	}
	if got := list([]string{"empty"}, nil); len(got) != 1 || got["offsets-only"].Group == "" {
		t.Fatalf("state filter: %+v", got)
	}
	if got := list(nil, []string{"consumer"}); len(got) != 0 {
		t.Fatalf("type filter consumer: %+v", got)
	}
	if got := list(nil, []string{"Classic"}); len(got) != 2 {
		t.Fatalf("type filter classic: %+v", got)
	}
}

func TestNotCoordinator(t *testing.T) {
	h := newHarness(t, nil)
	h.disown("g")
	ctx := context.Background()
	nc := kerr.NotCoordinator.Code

	wantErr(t, "join", h.join("c", joinReq("g", "")).ErrorCode, nc)
	wantErr(t, "sync", h.sync(syncReq("g", "m", 1, nil)).ErrorCode, nc)
	wantErr(t, "heartbeat", h.heartbeat("g", "m", 1, nil), nc)
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = "g"
	wantErr(t, "leave", h.c.Handle(ctx, leave).(*kmsg.LeaveGroupResponse).ErrorCode, nc)
	wantErr(t, "commit", commitErr(h.commit("g", "", -1, map[TopicPartition]int64{{"t", 0}: 1})), nc)
	wantErr(t, "fetch v7", h.fetch(fetchReq(7, "g", map[string][]int32{"t": {0}})).ErrorCode, nc)
	wantErr(t, "fetch v1", h.fetch(fetchReq(1, "g", map[string][]int32{"t": {0}})).Topics[0].Partitions[0].ErrorCode, nc)
	wantErr(t, "describe", h.describe("g").ErrorCode, nc)
	wantErr(t, "delete", deleteGroups(h, "g")["g"], nc)
	od := kmsg.NewPtrOffsetDeleteRequest()
	od.Group = "g"
	wantErr(t, "offset delete", h.c.Handle(ctx, od).(*kmsg.OffsetDeleteResponse).ErrorCode, nc)
	if len(h.store.Groups()) != 0 {
		t.Fatal("a request for an unowned group reached the store")
	}
}
