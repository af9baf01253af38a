package coordinator

import (
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// validateCommit applies KIP-848's rules to an offset commit of a
// consumer group, whose generation field carries the member epoch. The
// member's previous epoch is accepted too: a member that just moved to a
// new epoch may still commit what it consumed under the old one (the
// partitions it kept are the same).
func (g *cgroup) validateCommit(epoch int32, memberID string) int16 {
	if memberID == "" && epoch < 0 {
		if len(g.members) == 0 {
			return 0
		}
		return kerr.UnknownMemberID.Code
	}
	m := g.members[memberID]
	switch {
	case m == nil:
		return kerr.UnknownMemberID.Code
	case m.classic != nil && epoch != m.epoch:
		// A classic client knows generations, not member epochs.
		return kerr.IllegalGeneration.Code
	case epoch == m.epoch || (epoch == m.prevEpoch && epoch > 0):
		return 0
	case epoch > m.epoch:
		return kerr.FencedMemberEpoch.Code
	default:
		return kerr.StaleMemberEpoch.Code
	}
}

// state is the group state ConsumerGroupDescribe and ListGroups report.
func (g *cgroup) state() string {
	switch {
	case len(g.members) == 0:
		return "Empty"
	case g.epoch > g.assignEpoch:
		return "Assigning"
	}
	for _, m := range g.members {
		if m.epoch != g.assignEpoch || m.state != memberStable {
			return "Reconciling"
		}
	}
	return "Stable"
}

func (c *Coordinator) consumerDescribe(req *kmsg.ConsumerGroupDescribeRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
	for _, name := range req.Groups {
		dg := kmsg.NewConsumerGroupDescribeResponseGroup()
		dg.Group = name
		dg.AuthorizedOperations = -2147483648 // not requested or not computed, as Kafka
		if code := c.lockGroup(name); code != 0 {
			dg.ErrorCode = code
			resp.Groups = append(resp.Groups, dg)
			continue
		}
		if g := c.consumers[name]; g != nil {
			g.describe(&dg)
		} else if cg := c.groups[name]; cg != nil && (cg.state != stateEmpty || len(cg.members) > 0) {
			dg.ErrorCode = kerr.GroupIDNotFound.Code
			msg := "Group " + name + " is not a consumer group."
			dg.ErrorMessage = &msg
		} else {
			dg.ErrorCode = kerr.GroupIDNotFound.Code
			msg := "Group " + name + " not found."
			dg.ErrorMessage = &msg
		}
		c.mu.Unlock()
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}

func (g *cgroup) describe(dg *kmsg.ConsumerGroupDescribeResponseGroup) {
	dg.State = g.state()
	dg.Epoch, dg.AssignmentEpoch = g.epoch, g.assignEpoch
	dg.AssignorName = g.assignor()
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := g.members[id]
		dm := kmsg.NewConsumerGroupDescribeResponseGroupMember()
		dm.MemberID, dm.InstanceID, dm.RackID, dm.MemberEpoch = m.id, m.instanceID, m.rack, m.epoch
		dm.ClientID, dm.ClientHost = m.clientID, m.clientHost
		dm.SubscribedTopics, dm.SubscribedTopicRegex = append([]string{}, m.subscribed...), m.regex
		dm.Assignment = g.describeAssignment(m.assigned)
		dm.TargetAssignment = g.describeAssignment(g.target[id])
		dm.MemberType = 1 // a consumer-protocol member
		if m.classic != nil {
			dm.MemberType = 0
		}
		dg.Members = append(dg.Members, dm)
	}
}

func (g *cgroup) describeAssignment(s tpSet) kmsg.Assignment {
	var a kmsg.Assignment
	for _, t := range assignmentTopics(s) {
		a.TopicPartitions = append(a.TopicPartitions, kmsg.AssignmentTopicPartition{TopicID: t.TopicID, Topic: g.names[t.TopicID], Partitions: t.Partitions})
	}
	return a
}

// classicJoinLocked lets a classic JoinGroup through unless the group is a
// consumer group with members (INCONSISTENT_GROUP_PROTOCOL, as Kafka
// answers; joinGroup serves such a group's classic members first); an
// empty consumer group goes back to the classic protocol, keeping its
// offsets. c.mu is held.
func (c *Coordinator) classicJoinLocked(name string) int16 {
	cg := c.consumers[name]
	if cg == nil {
		return 0
	}
	if len(cg.members) > 0 {
		return kerr.InconsistentGroupProtocol.Code
	}
	cg.drop()
	delete(c.consumers, name)
	return 0
}
