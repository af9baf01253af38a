package coordinator

import (
	"context"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (c *Coordinator) offsetCommit(ctx context.Context, req *kmsg.OffsetCommitRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewOffsetCommitResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetCommitResponseTopicPartition()
			rp.Partition = p.Partition
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	// setAll answers every partition not already failed with code.
	setAll := func(code int16) {
		for i := range resp.Topics {
			for j := range resp.Topics[i].Partitions {
				if p := &resp.Topics[i].Partitions[j]; p.ErrorCode == 0 {
					p.ErrorCode = code
				}
			}
		}
	}

	// An empty group id is accepted, as Kafka does for old clients.
	if !c.lockOwner(req.Group) {
		setAll(kerr.NotCoordinator.Code)
		return resp
	}
	generation, memberID := req.Generation, req.MemberID
	if req.Version == 0 {
		generation, memberID = -1, "" // v0 predates group management
	}
	code, unknown := c.validateCommitLocked(req.Group, generation, memberID, req.InstanceID)
	c.mu.Unlock()
	if unknown {
		// No group in memory nor snapshot, yet the commit names a
		// generation: a group with only offsets is Empty and knows no
		// members; otherwise the generation cannot be ours. (Kafka answers
		// v9+ GROUP_ID_NOT_FOUND here, meant for KIP-848 members; classic
		// members of a group whose snapshot was lost or never saved hit
		// this case, and ILLEGAL_GENERATION makes them rejoin instead of
		// failing.)
		if c.hasOffsets(req.Group) {
			code = kerr.UnknownMemberID.Code
		} else {
			code = kerr.IllegalGeneration.Code
		}
	}
	if code != 0 {
		setAll(code)
		return resp
	}

	now := time.Now().UnixMilli()
	offsets := make(map[TopicPartition]Offset)
	for i, t := range req.Topics {
		for j, p := range t.Partitions {
			md := ""
			if p.Metadata != nil {
				md = *p.Metadata
			}
			if len(md) > maxOffsetMetadata {
				resp.Topics[i].Partitions[j].ErrorCode = kerr.OffsetMetadataTooLarge.Code
				continue
			}
			epoch := p.LeaderEpoch
			if req.Version < 6 {
				epoch = -1
			}
			offsets[TopicPartition{Topic: t.Topic, Partition: p.Partition}] = Offset{
				Offset:      p.Offset,
				LeaderEpoch: epoch,
				Metadata:    md,
				CommitTime:  now,
			}
		}
	}
	if len(offsets) == 0 {
		return resp
	}
	if err := c.cfg.Store.Commit(ctx, req.Group, offsets); err != nil {
		code := storeErrorCode(err)
		c.log.Warn("offset commit failed", "group", req.Group, "partitions", len(offsets), "err", err, "error_code", kerr.ErrorForCode(code))
		setAll(code)
	}
	return resp
}

// validateCommitLocked applies Kafka's rules for who may commit, with c.mu
// held. unknown reports that the group is not in memory and the commit names
// a generation, which the caller settles by asking the store.
func (c *Coordinator) validateCommitLocked(name string, generation int32, memberID string, instanceID *string) (code int16, unknown bool) {
	if cg := c.consumers[name]; cg != nil {
		return cg.validateCommit(generation, memberID), false
	}
	g := c.groups[name]
	if g == nil {
		// Generation -1 is a commit from outside group management
		// (admin tools, manual assignment): always welcome.
		return 0, generation >= 0
	}
	if generation < 0 && g.state == stateEmpty {
		return 0, false
	}
	if generation >= 0 || memberID != "" || instanceID != nil {
		if code := g.validateMember(memberID, instanceID); code != 0 {
			return code, false
		}
		if generation != g.generation {
			return kerr.IllegalGeneration.Code, false
		}
	} else {
		// A commit without member or generation would race the members'
		// own commits; Kafka only takes it from an Empty group.
		return kerr.UnknownMemberID.Code, false
	}
	m := g.members[memberID]
	switch g.state {
	case stateCompletingRebalance:
		// The member saw the new generation but not its assignment yet.
		return kerr.RebalanceInProgress.Code, false
	case stateStable, statePreparingRebalance:
		// A commit proves the member alive; during a rebalance the
		// heartbeat response is what tells it to rejoin.
		g.armSession(m, m.sessionTimeout)
	}
	return 0, false
}

type fetchTopic struct {
	topic      string
	partitions []int32
}

type fetchedPartition struct {
	partition int32
	offset    Offset
}

type fetchedTopic struct {
	topic      string
	partitions []fetchedPartition
}

// fetchOffsets reads a group's committed offsets: all of them when want is
// nil, else the requested partitions, with offset -1 for those never
// committed (a group that never committed is no error, as in Kafka).
func (c *Coordinator) fetchOffsets(group string, want []fetchTopic, all bool) ([]fetchedTopic, int16) {
	if !c.owns(group) {
		return nil, kerr.NotCoordinator.Code
	}
	stored := c.cfg.Store.Offsets(group)
	var out []fetchedTopic
	if all {
		byTopic := make(map[string][]fetchedPartition)
		for tp, o := range stored {
			byTopic[tp.Topic] = append(byTopic[tp.Topic], fetchedPartition{partition: tp.Partition, offset: o})
		}
		for _, topic := range sortedKeys(byTopic) {
			ps := byTopic[topic]
			slices.SortFunc(ps, func(a, b fetchedPartition) int { return int(a.partition) - int(b.partition) })
			out = append(out, fetchedTopic{topic: topic, partitions: ps})
		}
		return out, 0
	}
	for _, t := range want {
		ft := fetchedTopic{topic: t.topic}
		for _, p := range t.partitions {
			o, ok := stored[TopicPartition{Topic: t.topic, Partition: p}]
			if !ok {
				o = Offset{Offset: -1, LeaderEpoch: -1}
			}
			ft.partitions = append(ft.partitions, fetchedPartition{partition: p, offset: o})
		}
		out = append(out, ft)
	}
	return out, 0
}

func (c *Coordinator) offsetFetch(req *kmsg.OffsetFetchRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)

	if req.Version >= 8 {
		for _, rg := range req.Groups {
			want := make([]fetchTopic, 0, len(rg.Topics))
			for _, t := range rg.Topics {
				want = append(want, fetchTopic{topic: t.Topic, partitions: t.Partitions})
			}
			// RequireStable needs no wait: there are no transactional
			// offsets pending here. MemberID/MemberEpoch (v9) only
			// apply to KIP-848 groups.
			topics, code := c.fetchOffsets(rg.Group, want, rg.Topics == nil)
			sg := kmsg.NewOffsetFetchResponseGroup()
			sg.Group = rg.Group
			sg.ErrorCode = code
			for _, t := range topics {
				st := kmsg.NewOffsetFetchResponseGroupTopic()
				st.Topic = t.topic
				for _, p := range t.partitions {
					sp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
					sp.Partition = p.partition
					sp.Offset = p.offset.Offset
					sp.LeaderEpoch = p.offset.LeaderEpoch
					sp.Metadata = kmsg.StringPtr(p.offset.Metadata)
					st.Partitions = append(st.Partitions, sp)
				}
				sg.Topics = append(sg.Topics, st)
			}
			resp.Groups = append(resp.Groups, sg)
		}
		return resp
	}

	want := make([]fetchTopic, 0, len(req.Topics))
	for _, t := range req.Topics {
		want = append(want, fetchTopic{topic: t.Topic, partitions: t.Partitions})
	}
	// A null topic list (v2+) asks for every committed partition.
	all := req.Topics == nil && req.Version >= 2
	topics, code := c.fetchOffsets(req.Group, want, all)
	if code != 0 {
		if req.Version >= 2 {
			resp.ErrorCode = code
			return resp
		}
		// v0-1 have no top-level error: every partition carries it.
		topics = nil
		for _, t := range want {
			ft := fetchedTopic{topic: t.topic}
			for _, p := range t.partitions {
				ft.partitions = append(ft.partitions, fetchedPartition{partition: p, offset: Offset{Offset: -1, LeaderEpoch: -1}})
			}
			topics = append(topics, ft)
		}
	}
	for _, t := range topics {
		st := kmsg.NewOffsetFetchResponseTopic()
		st.Topic = t.topic
		for _, p := range t.partitions {
			sp := kmsg.NewOffsetFetchResponseTopicPartition()
			sp.Partition = p.partition
			sp.Offset = p.offset.Offset
			sp.LeaderEpoch = p.offset.LeaderEpoch
			sp.Metadata = kmsg.StringPtr(p.offset.Metadata)
			sp.ErrorCode = code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

func (c *Coordinator) offsetDelete(ctx context.Context, req *kmsg.OffsetDeleteRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	if resp.ErrorCode = c.lockGroup(req.Group); resp.ErrorCode != 0 {
		return resp
	}
	g := c.groups[req.Group]
	inMemory := g != nil
	var subscribed map[string]bool
	allSubscribed := false
	if g != nil && g.state != stateEmpty {
		if g.protocolType != "consumer" {
			resp.ErrorCode = kerr.NonEmptyGroup.Code
			c.mu.Unlock()
			return resp
		}
		var known bool
		subscribed, known = g.subscribedTopics()
		allSubscribed = !known // when in doubt, protect the offsets
	}
	c.mu.Unlock()

	if !inMemory && !c.hasOffsets(req.Group) {
		resp.ErrorCode = kerr.GroupIDNotFound.Code
		return resp
	}

	var tps []TopicPartition
	for _, t := range req.Topics {
		rt := kmsg.NewOffsetDeleteResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetDeleteResponseTopicPartition()
			rp.Partition = p.Partition
			if allSubscribed || subscribed[t.Topic] {
				rp.ErrorCode = kerr.GroupSubscribedToTopic.Code
			} else {
				tps = append(tps, TopicPartition{Topic: t.Topic, Partition: p.Partition})
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	// An empty list would make the store delete every offset of the group.
	if len(tps) == 0 {
		return resp
	}
	if err := c.cfg.Store.Delete(ctx, req.Group, tps); err != nil {
		code := storeErrorCode(err)
		c.log.Warn("offset delete failed", "group", req.Group, "err", err, "error_code", kerr.ErrorForCode(code))
		resp.ErrorCode = code
		resp.Topics = nil
	}
	return resp
}
