package coordinator

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Classic members of a consumer group (migrate.go). Their generation is
// their member epoch. A JoinGroup is their heartbeat with a subscription:
// it reports what they still own (a cooperative member lists its
// partitions, an eager one has given all up), which frees what they no
// longer hold, and moves them toward their target as reconcile does; the
// answer comes at once, with no leader (the coordinator assigns), and
// SyncGroup returns the partitions they own now. When a member must give
// partitions up, SyncGroup leaves them out: a cooperative client revokes
// them and rejoins, which releases them.

// joinConsumerLocked serves a classic JoinGroup for consumer group g. save,
// when not nil, is the state write the response waits for. c.mu is held.
func (c *Coordinator) joinConsumerLocked(ctx context.Context, g *cgroup, req *kmsg.JoinGroupRequest,
	resp *kmsg.JoinGroupResponse, topics map[string]TopicMeta) *storeOp {
	fail := func(code int16) *storeOp {
		resp.ErrorCode = code
		return nil
	}
	session := millis(req.SessionTimeoutMillis)
	if session < c.cfg.MinSessionTimeout || session > c.cfg.MaxSessionTimeout {
		return fail(kerr.InvalidSessionTimeout.Code)
	}
	rebalance := millis(max(req.RebalanceTimeoutMillis, 0))
	if req.Version == 0 {
		rebalance = session
	}
	var m *cmember
	if req.MemberID != "" {
		m = g.members[req.MemberID]
		if code := g.checkInstance(req.MemberID, req.InstanceID); code != 0 {
			return fail(code)
		}
		if m == nil || m.classic == nil {
			return fail(kerr.UnknownMemberID.Code)
		}
	}
	if req.ProtocolType != "consumer" || !g.supportsClassic(m, req.Protocols) {
		return fail(kerr.InconsistentGroupProtocol.Code)
	}
	// The metadata of the protocol the group will use, counting the
	// sender's protocols.
	var md []byte
	chosen := g.classicProtocolWith(m, req.Protocols)
	for _, p := range req.Protocols {
		if p.Name == chosen {
			md = p.Metadata
		}
	}
	var meta kmsg.ConsumerMemberMetadata
	if err := meta.ReadFrom(md); err != nil {
		return fail(kerr.InconsistentGroupProtocol.Code)
	}
	bump := false
	if m == nil && req.InstanceID != nil {
		// A static member back from a restart takes its old place, and
		// its partitions, under a new member id; nothing rebalances.
		if old := g.staticMember(*req.InstanceID); old != nil {
			if old.classic == nil && !old.left {
				// A live KIP-848 member would go on consuming what
				// the classic one is given.
				return fail(kerr.UnreleasedInstanceID.Code)
			}
			m = g.replaceStatic(old, newMemberID(clientFrom(ctx).id, req.InstanceID))
			if m.classic == nil { // a KIP-848 member that left, restarted as a classic one
				m.classic = &classicMember{}
			}
		}
	}
	if m == nil {
		// A new classic member joins a consumer group, migrating or of
		// KIP-848 members only, when the policy lets classic groups be
		// upgraded (Kafka's classic join to a consumer group).
		if !c.upgrades() {
			return fail(kerr.InconsistentGroupProtocol.Code)
		}
		if len(g.members) >= maxConsumerMembers {
			return fail(kerr.GroupMaxSizeReached.Code)
		}
		ci := clientFrom(ctx)
		m = &cmember{id: newMemberID(ci.id, req.InstanceID), instanceID: req.InstanceID, clientID: ci.id, clientHost: ci.host,
			assigned: tpSet{}, revoking: tpSet{}, classic: &classicMember{}}
		g.members[m.id] = m
		bump = true
		c.log.Info("consumer group classic member joined", "group", g.name, "member", m.id, "group_epoch", g.epoch+1)
	}
	m.classic.protocols, m.classic.session, m.rebalance = req.Protocols, session, rebalance
	protocol := g.classicProtocol()
	if subs := sortedSet(meta.Topics); !slices.Equal(subs, m.subscribed) {
		m.subscribed, bump = subs, true
	}
	if sig := g.topicSignature(topics); sig != g.topicSig {
		g.topicSig, bump = sig, true
	}
	if bump {
		g.epoch++
	}
	if g.epoch > g.assignEpoch {
		g.computeTarget(topics)
	}
	owned := tpSet{}
	for _, t := range meta.OwnedPartitions {
		addParts(owned, topics, t.Topic, t.Partitions)
	}
	g.release(m, owned)
	if m.state == memberStable && !m.assigned.equal(g.target[m.id]) {
		// It gave up some of its target (an eager member rejoining
		// revokes everything): take them back.
		m.state = memberUnreleased
	}
	g.reconcile(m, owned)
	g.armSession(m)

	resp.MemberID, resp.Generation = m.id, m.epoch
	resp.ProtocolType, resp.Protocol = kmsg.StringPtr("consumer"), kmsg.StringPtr(protocol)
	resp.LeaderID = "" // the coordinator assigns: every member is a follower
	return g.persist()
}

// supportsClassic reports whether protocols share one with every other
// classic member (m, if known, is the member that sends them).
func (g *cgroup) supportsClassic(m *cmember, protocols []kmsg.JoinGroupRequestProtocol) bool {
	return len(protocols) > 0 && g.classicProtocolWith(m, protocols) != ""
}

// release frees what a classic member no longer reports owning: it has
// revoked it (an eager member revokes everything before it rejoins).
func (g *cgroup) release(m *cmember, owned tpSet) {
	for _, s := range []tpSet{m.assigned, m.revoking} {
		for p := range s {
			if _, ok := owned[p]; ok {
				continue
			}
			delete(s, p)
			if g.owners[p] == m.id {
				delete(g.owners, p)
			}
		}
	}
}

// staticMember is the member with instance id, nil if none.
func (g *cgroup) staticMember(instance string) *cmember {
	for _, m := range g.members {
		if m.instanceID != nil && *m.instanceID == instance {
			return m
		}
	}
	return nil
}

// checkInstance fences a request that names an instance id held by
// another member id: an older incarnation of a restarted static member
// (KIP-345's FENCED_INSTANCE_ID).
func (g *cgroup) checkInstance(memberID string, instance *string) int16 {
	if instance == nil {
		return 0
	}
	if m := g.staticMember(*instance); m != nil && m.id != memberID {
		return kerr.FencedInstanceID.Code
	}
	return 0
}

// replaceStatic moves static member old to member id newID, keeping its
// epoch, target and partitions, so its restarted client carries on where
// the old one stopped; the caller sets the protocol it now speaks. The
// old id is fenced from then on.
func (g *cgroup) replaceStatic(old *cmember, newID string) *cmember {
	oldID := old.id
	delete(g.members, oldID)
	old.id = newID
	g.members[newID] = old
	if t, ok := g.target[oldID]; ok {
		delete(g.target, oldID)
		g.target[newID] = t
	}
	for p, o := range g.owners {
		if o == oldID {
			g.owners[p] = newID
		}
	}
	old.left = false
	g.c.log.Info("consumer group static member rejoined", "group", g.name, "instance", *old.instanceID,
		"old_member", oldID, "member", newID, "epoch", old.epoch)
	return old
}

// classicMemberLocked finds a classic member of consumer group g for a
// SyncGroup or Heartbeat and checks its instance id and generation.
func (g *cgroup) classicMemberLocked(memberID string, instance *string, generation int32) (*cmember, int16) {
	if code := g.checkInstance(memberID, instance); code != 0 {
		return nil, code
	}
	m := g.members[memberID]
	switch {
	case m == nil || m.classic == nil:
		return nil, kerr.UnknownMemberID.Code
	case generation != m.epoch:
		return nil, kerr.IllegalGeneration.Code
	}
	return m, 0
}

func (g *cgroup) syncClassic(req *kmsg.SyncGroupRequest, resp *kmsg.SyncGroupResponse) {
	m, code := g.classicMemberLocked(req.MemberID, req.InstanceID, req.Generation)
	if code != 0 {
		resp.ErrorCode = code
		return
	}
	// The protocol its JoinGroup answer named, which a later member may
	// have changed: any the member supports will do.
	protocol := g.classicProtocol()
	if req.Protocol != nil {
		protocol = *req.Protocol
	}
	supported := slices.ContainsFunc(m.classic.protocols, func(p kmsg.JoinGroupRequestProtocol) bool { return p.Name == protocol })
	if (req.ProtocolType != nil && *req.ProtocolType != "consumer") || !supported {
		resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		return
	}
	g.armSession(m)
	resp.ProtocolType, resp.Protocol = kmsg.StringPtr("consumer"), kmsg.StringPtr(protocol)
	resp.MemberAssignment = g.encodeAssignment(m.assigned)
}

// heartbeatClassic answers REBALANCE_IN_PROGRESS while the member's
// assignment is to change, so that it rejoins.
func (g *cgroup) heartbeatClassic(req *kmsg.HeartbeatRequest) int16 {
	m, code := g.classicMemberLocked(req.MemberID, req.InstanceID, req.Generation)
	if code != 0 {
		return code
	}
	g.armSession(m)
	// A group epoch not assigned yet (a member left) is assigned by the
	// rejoin, which reads the topics.
	if m.state != memberStable || m.epoch != g.assignEpoch || g.epoch > g.assignEpoch {
		return kerr.RebalanceInProgress.Code
	}
	return 0
}

// leaveClassic removes the classic members a LeaveGroup names.
func (g *cgroup) leaveClassic(req *kmsg.LeaveGroupRequest, resp *kmsg.LeaveGroupResponse) {
	leaving := req.Members
	if req.Version < 3 {
		leaving = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}
	removed := false
	for _, lm := range leaving {
		r := kmsg.NewLeaveGroupResponseMember()
		r.MemberID, r.InstanceID = lm.MemberID, lm.InstanceID
		id := lm.MemberID
		if id == "" && lm.InstanceID != nil {
			for _, m := range g.members {
				if m.instanceID != nil && *m.instanceID == *lm.InstanceID {
					id = m.id
				}
			}
		}
		if code := g.checkInstance(id, lm.InstanceID); code != 0 {
			r.ErrorCode = code
		} else if m := g.members[id]; m == nil || m.classic == nil {
			r.ErrorCode = kerr.UnknownMemberID.Code
		} else {
			g.removeMember(m, "left")
			removed = true
		}
		resp.Members = append(resp.Members, r)
	}
	if removed {
		g.persist()
	}
	if req.Version < 3 {
		resp.ErrorCode = resp.Members[0].ErrorCode
		resp.Members = nil
	}
}
