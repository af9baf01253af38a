package coordinator

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func millis(ms int32) time.Duration { return time.Duration(ms) * time.Millisecond }

func (c *Coordinator) joinGroup(ctx context.Context, req *kmsg.JoinGroupRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.MemberID = req.MemberID
	// Read before the lock, for a consumer group's classic members.
	topics := c.cfg.Topics()
	if resp.ErrorCode = c.lockGroup(req.Group); resp.ErrorCode != 0 {
		return resp
	}
	if cg := c.consumers[req.Group]; cg != nil && len(cg.members) > 0 {
		save := c.joinConsumerLocked(ctx, cg, req, resp, topics)
		c.mu.Unlock()
		return c.answerSaved(ctx, save, req.Group, func(code int16) kmsg.Response {
			r := req.ResponseKind().(*kmsg.JoinGroupResponse)
			r.ErrorCode, r.MemberID = code, req.MemberID
			return r
		}, resp)
	}
	w, memberID := c.joinLocked(ctx, req, resp)
	c.mu.Unlock()
	if w == nil {
		return resp
	}
	return await(ctx, w, func() kmsg.Response {
		r := req.ResponseKind().(*kmsg.JoinGroupResponse)
		r.ErrorCode = kerr.NotCoordinator.Code
		r.MemberID = memberID
		return r
	})
}

// joinLocked handles a JoinGroup with c.mu held. It either fills resp and
// returns a nil waiter, or parks the member and returns the waiter the
// response will arrive on, with the member's id.
func (c *Coordinator) joinLocked(ctx context.Context, req *kmsg.JoinGroupRequest, resp *kmsg.JoinGroupResponse) (*waiter, string) {
	sessionTimeout := millis(req.SessionTimeoutMillis)
	if sessionTimeout < c.cfg.MinSessionTimeout || sessionTimeout > c.cfg.MaxSessionTimeout {
		resp.ErrorCode = kerr.InvalidSessionTimeout.Code
		return nil, ""
	}
	rebalanceTimeout := millis(max(req.RebalanceTimeoutMillis, 0))
	if req.Version == 0 {
		rebalanceTimeout = sessionTimeout // v0 has no rebalance timeout
	}

	if code := c.classicJoinLocked(req.Group); code != 0 {
		resp.ErrorCode = code
		return nil, ""
	}
	g := c.groups[req.Group]
	if g == nil {
		if req.MemberID != "" {
			resp.ErrorCode = kerr.UnknownMemberID.Code
			return nil, ""
		}
		g = c.newGroup(req.Group)
		defer g.forgetIfIdle() // a refused first join leaves nothing behind
	}

	if !g.supports(req.ProtocolType, req.Protocols) {
		resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		return nil, ""
	}

	newMember := func(id string) *member {
		ci := clientFrom(ctx)
		return &member{
			id:               id,
			instanceID:       req.InstanceID,
			clientID:         ci.id,
			clientHost:       ci.host,
			sessionTimeout:   sessionTimeout,
			rebalanceTimeout: rebalanceTimeout,
			protocolType:     req.ProtocolType,
			protocols:        req.Protocols,
		}
	}

	if req.MemberID == "" {
		id := newMemberID(clientFrom(ctx).id, req.InstanceID)
		if req.InstanceID != nil {
			if old, ok := g.static[*req.InstanceID]; ok {
				return g.replaceStaticMember(old, id, req, resp, sessionTimeout, rebalanceTimeout), id
			}
			w := newWaiter(req)
			g.addMember(newMember(id), w)
			return w, id
		}
		if req.Version >= 4 {
			// KIP-394: hand out the id first, so a client that dies
			// before joining leaves no member behind.
			g.addPending(id, sessionTimeout)
			resp.MemberID = id
			resp.ErrorCode = kerr.MemberIDRequired.Code
			return nil, ""
		}
		w := newWaiter(req)
		g.addMember(newMember(id), w)
		return w, id
	}

	if _, ok := g.pending[req.MemberID]; ok && req.InstanceID == nil {
		w := newWaiter(req)
		g.addMember(newMember(req.MemberID), w)
		return w, req.MemberID
	}
	if code := g.validateMember(req.MemberID, req.InstanceID); code != 0 {
		resp.ErrorCode = code
		return nil, ""
	}
	m := g.members[req.MemberID]

	park := func() (*waiter, string) {
		w := newWaiter(req)
		g.updateMember(m, req, sessionTimeout, rebalanceTimeout, w)
		g.maybePrepareRebalanceOrCompleteJoin()
		return w, m.id
	}
	switch g.state {
	case statePreparingRebalance:
		return park()
	case stateCompletingRebalance:
		if !m.matches(req.Protocols) {
			return park()
		}
		// The member probably lost our response; repeat it.
		*resp = *g.joinResponse(req, m.id, m.id == g.leader)
		return nil, ""
	case stateStable:
		// A leader's rejoin always rebalances: it is how the leader asks for
		// a new assignment after, say, a metadata change.
		if m.id == g.leader || !m.matches(req.Protocols) {
			return park()
		}
		*resp = *g.joinResponse(req, m.id, false)
		return nil, ""
	default:
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return nil, ""
	}
}

// replaceStaticMember gives a rejoining static member (KIP-345) a new member
// id in place of its old one, which is fenced. A Stable group whose protocol
// would not change keeps its assignment and skips the rebalance.
func (g *group) replaceStaticMember(oldID, newID string, req *kmsg.JoinGroupRequest, resp *kmsg.JoinGroupResponse, sessionTimeout, rebalanceTimeout time.Duration) *waiter {
	old := g.members[oldID]
	oldLeader := g.leader

	if old.join != nil {
		old.join.deliver(g.joinError(old.join, oldID, kerr.FencedInstanceID.Code))
		old.join = nil
	}
	if old.sync != nil {
		old.sync.deliver(g.syncError(old.sync, kerr.FencedInstanceID.Code))
		old.sync = nil
	}
	stopTimer(&old.timer)
	delete(g.members, oldID)

	m := &member{
		id:               newID,
		instanceID:       old.instanceID,
		clientID:         old.clientID,
		clientHost:       old.clientHost,
		seq:              old.seq,
		sessionTimeout:   old.sessionTimeout,
		rebalanceTimeout: old.rebalanceTimeout,
		protocolType:     old.protocolType,
		protocols:        old.protocols,
		assignment:       old.assignment,
	}
	g.members[newID] = m
	g.static[*req.InstanceID] = newID
	if g.leader == oldID {
		g.leader = newID
	}
	if _, ok := g.pendingSync[oldID]; ok {
		delete(g.pendingSync, oldID)
		g.pendingSync[newID] = struct{}{}
	}
	g.armSession(m, m.sessionTimeout)
	g.c.log.Info("static member rejoined", "group", g.name, "instance", *req.InstanceID, "old_member", oldID, "member", newID, "state", g.state.String())

	w := newWaiter(req)
	g.updateMember(m, req, sessionTimeout, rebalanceTimeout, w)

	switch g.state {
	case stateStable:
		if g.selectProtocol() != g.protocol {
			g.maybePrepareRebalanceOrCompleteJoin()
			return w
		}
		m.join = nil
		g.persist() // the old member id is fenced for the next coordinator too
		*resp = *g.joinResponse(req, newID, false)
		if req.Version >= 9 {
			// KIP-814: a returning leader learns it leads but need not
			// compute a new assignment.
			isLeader := g.leader == newID
			if isLeader {
				resp.Members = g.memberList()
			}
			resp.SkipAssignment = isLeader
		} else {
			// Older clients cannot skip the assignment; naming the previous
			// leader id makes the member act as a follower, so it fetches
			// its unchanged assignment with SyncGroup.
			resp.LeaderID = oldLeader
		}
		return nil
	case stateCompletingRebalance:
		// The leader may be assigning to the old member id; start over so
		// the new id gets an assignment.
		g.prepareRebalance()
		return w
	default: // PreparingRebalance: the rejoin counts toward this rebalance.
		g.maybeCompleteJoinPhase()
		return w
	}
}

func (c *Coordinator) syncGroup(ctx context.Context, req *kmsg.SyncGroupRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	if resp.ErrorCode = c.lockGroup(req.Group); resp.ErrorCode != 0 {
		return resp
	}
	w := c.syncLocked(req, resp)
	c.mu.Unlock()
	if w == nil {
		return resp
	}
	return await(ctx, w, func() kmsg.Response {
		r := req.ResponseKind().(*kmsg.SyncGroupResponse)
		r.ErrorCode = kerr.NotCoordinator.Code
		return r
	})
}

func (c *Coordinator) syncLocked(req *kmsg.SyncGroupRequest, resp *kmsg.SyncGroupResponse) *waiter {
	g := c.groups[req.Group]
	if cg := c.consumers[req.Group]; g == nil && cg != nil {
		cg.syncClassic(req, resp)
		return nil
	}
	if g == nil {
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return nil
	}
	if code := g.validateMember(req.MemberID, req.InstanceID); code != 0 {
		resp.ErrorCode = code
		return nil
	}
	if req.Generation != g.generation {
		resp.ErrorCode = kerr.IllegalGeneration.Code
		return nil
	}
	if (req.ProtocolType != nil && g.protocolType != "" && *req.ProtocolType != g.protocolType) ||
		(req.Protocol != nil && g.protocol != "" && *req.Protocol != g.protocol) {
		resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		return nil
	}
	m := g.members[req.MemberID]

	switch g.state {
	case statePreparingRebalance:
		resp.ErrorCode = kerr.RebalanceInProgress.Code
		return nil
	case stateCompletingRebalance:
		if m.sync != nil {
			m.sync.deliver(g.syncError(m.sync, kerr.RebalanceInProgress.Code))
		}
		w := newWaiter(req)
		m.sync = w
		g.removePendingSync(m.id)
		if m.id == g.leader {
			assigned := make(map[string][]byte, len(req.GroupAssignment))
			for _, a := range req.GroupAssignment {
				assigned[a.MemberID] = a.MemberAssignment
			}
			for id, gm := range g.members {
				gm.assignment = assigned[id] // members the leader left out get an empty assignment
			}
			g.transition(stateStable)
			g.c.log.Info("group stable", "group", g.name, "generation", g.generation, "members", len(g.members))
			g.propagateAssignment()
			g.persist()
		}
		return w
	case stateStable:
		g.removePendingSync(m.id)
		g.fillSync(resp, m)
		g.armSession(m, m.sessionTimeout)
		return nil
	default:
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return nil
	}
}

func (c *Coordinator) heartbeat(req *kmsg.HeartbeatRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	if resp.ErrorCode = c.lockGroup(req.Group); resp.ErrorCode != 0 {
		return resp
	}
	defer c.mu.Unlock()
	resp.ErrorCode = c.heartbeatLocked(req)
	return resp
}

func (c *Coordinator) heartbeatLocked(req *kmsg.HeartbeatRequest) int16 {
	g := c.groups[req.Group]
	if cg := c.consumers[req.Group]; g == nil && cg != nil {
		return cg.heartbeatClassic(req)
	}
	if g == nil {
		return kerr.UnknownMemberID.Code
	}
	if code := g.validateMember(req.MemberID, req.InstanceID); code != 0 {
		return code
	}
	if req.Generation != g.generation {
		return kerr.IllegalGeneration.Code
	}
	m := g.members[req.MemberID]
	switch g.state {
	case statePreparingRebalance:
		g.armSession(m, m.sessionTimeout)
		return kerr.RebalanceInProgress.Code
	case stateCompletingRebalance, stateStable:
		// Members may heartbeat between their JoinGroup response and
		// SyncGroup; that counts as liveness too.
		g.armSession(m, m.sessionTimeout)
		return 0
	default:
		return kerr.UnknownMemberID.Code
	}
}

func (c *Coordinator) leaveGroup(req *kmsg.LeaveGroupRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	if resp.ErrorCode = c.lockGroup(req.Group); resp.ErrorCode != 0 {
		return resp
	}
	defer c.mu.Unlock()

	g := c.groups[req.Group]
	if cg := c.consumers[req.Group]; g == nil && cg != nil {
		cg.leaveClassic(req, resp)
		return resp
	}
	if g == nil {
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp
	}
	leaving := req.Members
	if req.Version < 3 {
		leaving = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}

	removed := false
	for _, lm := range leaving {
		r := kmsg.NewLeaveGroupResponseMember()
		r.MemberID = lm.MemberID
		r.InstanceID = lm.InstanceID
		switch {
		case lm.MemberID == "":
			// Admin tools remove static members by instance id alone.
			id, ok := "", false
			if lm.InstanceID != nil {
				id, ok = g.static[*lm.InstanceID]
			}
			if !ok {
				r.ErrorCode = kerr.UnknownMemberID.Code
				break
			}
			g.c.log.Info("member left", "group", g.name, "member", id, "instance", *lm.InstanceID)
			g.removeMember(g.members[id])
			removed = true
		case g.pending[lm.MemberID] != nil:
			g.removePending(lm.MemberID)
			removed = true
		default:
			if code := g.validateMember(lm.MemberID, lm.InstanceID); code != 0 {
				r.ErrorCode = code
				break
			}
			g.c.log.Info("member left", "group", g.name, "member", lm.MemberID)
			g.removeMember(g.members[lm.MemberID])
			removed = true
		}
		resp.Members = append(resp.Members, r)
	}

	if removed {
		switch g.state {
		case stateStable, stateCompletingRebalance:
			g.maybePrepareRebalanceOrCompleteJoin()
		case statePreparingRebalance:
			g.maybeCompleteJoinPhase()
		}
	}
	g.forgetIfIdle()
	if req.Version < 3 {
		resp.ErrorCode = resp.Members[0].ErrorCode
		resp.Members = nil
	}
	return resp
}
