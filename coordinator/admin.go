package coordinator

import (
	"context"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupType and consumerGroupType are what ListGroups v5 reports for
// classic and KIP-848 groups.
const (
	groupType         = "classic"
	consumerGroupType = "consumer"
)

// groupOperations is the authorized-operations bit set DescribeGroups reports
// when asked: every operation a group supports, as there are no ACLs here.
const groupOperations = 1<<kmsg.ACLOperationRead | 1<<kmsg.ACLOperationDelete | 1<<kmsg.ACLOperationDescribe

func (c *Coordinator) describeGroups(req *kmsg.DescribeGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, name := range req.Groups {
		dg := kmsg.NewDescribeGroupsResponseGroup()
		dg.Group = name
		if req.IncludeAuthorizedOperations {
			dg.AuthorizedOperations = groupOperations
		}
		if !c.lockOwner(name) {
			dg.ErrorCode = kerr.NotCoordinator.Code
			resp.Groups = append(resp.Groups, dg)
			continue
		}
		g := c.groups[name]
		if g != nil {
			c.describeLocked(g, &dg)
		}
		// Kafka describes classic groups only: a KIP-848 group, one being
		// migrated with classic members included, is Dead like an unknown
		// one, offsets or not (clients ask ConsumerGroupDescribe first).
		consumer := c.consumers[name] != nil
		c.mu.Unlock()
		if g == nil {
			// Kafka answers an unknown group as Dead, without error; a
			// group known only by its offsets is Empty.
			dg.State = stateDead.String()
			if !consumer && c.hasOffsets(name) {
				dg.State = stateEmpty.String()
			}
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (c *Coordinator) describeLocked(g *group, dg *kmsg.DescribeGroupsResponseGroup) {
	dg.State = g.state.String()
	dg.ProtocolType = g.protocolType
	// Like Kafka, the protocol, metadata and assignments are only shown
	// once they are settled.
	stable := g.state == stateStable
	if stable {
		dg.Protocol = g.protocol
	}
	for _, m := range g.sortedMembers() {
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID = m.id
		dm.InstanceID = m.instanceID
		dm.ClientID = m.clientID
		dm.ClientHost = m.clientHost
		if stable {
			dm.ProtocolMetadata = m.metadata(g.protocol)
			dm.MemberAssignment = m.assignment
		}
		dg.Members = append(dg.Members, dm)
	}
}

func (c *Coordinator) listGroups(req *kmsg.ListGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	// Both filters compare case-insensitively, as Kafka does.
	typeOK := func(typ string) bool {
		return len(req.TypesFilter) == 0 || slices.ContainsFunc(req.TypesFilter, func(t string) bool {
			return strings.EqualFold(strings.TrimSpace(t), typ)
		})
	}
	stateOK := func(state string) bool {
		return len(req.StatesFilter) == 0 || slices.ContainsFunc(req.StatesFilter, func(s string) bool {
			return strings.EqualFold(strings.TrimSpace(s), state)
		})
	}

	type listed struct{ protocolType, state, typ string }
	found := make(map[string]listed)
	c.mu.Lock()
	for name, g := range c.groups {
		found[name] = listed{protocolType: g.protocolType, state: g.state.String(), typ: groupType}
	}
	for name, g := range c.consumers {
		found[name] = listed{protocolType: "consumer", state: g.state(), typ: consumerGroupType}
	}
	c.mu.Unlock()
	for _, name := range c.cfg.Store.Groups() {
		if _, ok := found[name]; ok {
			continue
		}
		// A group with offsets may have a saved snapshot (this node became
		// its coordinator and no request for it came yet): load it.
		found[name] = listed{state: stateEmpty.String(), typ: groupType}
		if c.lockOwner(name) {
			if g := c.groups[name]; g != nil {
				found[name] = listed{protocolType: g.protocolType, state: g.state.String(), typ: groupType}
			} else if g := c.consumers[name]; g != nil {
				found[name] = listed{protocolType: "consumer", state: g.state(), typ: consumerGroupType}
			}
			c.mu.Unlock()
		}
	}

	for _, name := range sortedKeys(found) {
		l := found[name]
		// The store also holds groups of offsets partitions this node
		// only follows.
		if !stateOK(l.state) || !typeOK(l.typ) || !c.owns(name) {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group = name
		lg.ProtocolType = l.protocolType
		lg.GroupState = l.state
		lg.GroupType = l.typ
		resp.Groups = append(resp.Groups, lg)
	}
	return resp
}

func (c *Coordinator) deleteGroups(ctx context.Context, req *kmsg.DeleteGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, name := range req.Groups {
		dg := kmsg.NewDeleteGroupsResponseGroup()
		dg.Group = name
		dg.ErrorCode = c.deleteGroup(ctx, name)
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

// deleteGroup deletes one group if it has no members: its in-memory state
// at once, then its committed offsets and saved snapshot. The store delete
// is queued behind the group's pending snapshot saves, so none of them can
// bring the snapshot back.
func (c *Coordinator) deleteGroup(ctx context.Context, name string) int16 {
	if !c.lockOwner(name) {
		return kerr.NotCoordinator.Code
	}
	if cg := c.consumers[name]; cg != nil {
		if len(cg.members) > 0 {
			c.mu.Unlock()
			return kerr.NonEmptyGroup.Code
		}
		cg.drop()
		delete(c.consumers, name)
	}
	g := c.groups[name]
	if g == nil {
		// Not in memory even after loading: the group exists only if it has
		// offsets (or a snapshot that could not be read).
		c.mu.Unlock()
		if !c.hasOffsets(name) && c.cfg.Store.LoadGroup(name) == nil {
			return kerr.GroupIDNotFound.Code
		}
		if !c.lockOwner(name) {
			return kerr.NotCoordinator.Code
		}
		g = c.groups[name]
	}
	if g != nil && g.state != stateEmpty {
		c.mu.Unlock()
		return kerr.NonEmptyGroup.Code
	}
	if g != nil {
		g.drop(0)
		delete(c.groups, name)
		c.log.Info("group deleted", "group", name)
	}
	op := &storeOp{del: true, ctx: ctx, done: make(chan error, 1)}
	c.enqueue(name, op)
	c.mu.Unlock()

	var err error
	select {
	case err = <-op.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		code := storeErrorCode(err)
		c.log.Warn("group delete failed", "group", name, "err", err, "error_code", kerr.ErrorForCode(code))
		return code
	}
	return 0
}
