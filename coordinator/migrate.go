package coordinator

import (
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Online migration between the classic and the KIP-848 protocol (Kafka's
// group.consumer.migration.policy). The first ConsumerGroupHeartbeat for a
// Stable classic group of the "consumer" protocol type converts it to a
// consumer group: every classic member becomes a member at the classic
// generation, owning the partitions of its classic assignment (and those
// its JoinGroup still reported owning, which it may be revoking), so the
// new member gets only what nobody holds. Classic members then go on with
// JoinGroup, SyncGroup and Heartbeat against the consumer group
// (migrate_classic.go): the coordinator computes their assignment, and a
// heartbeat answers REBALANCE_IN_PROGRESS while a member's assignment is
// to change, so it rejoins. New classic members may join a consumer group,
// even one of KIP-848 members only, as long as upgrades are allowed. The
// group stays a consumer group when the last classic member leaves; when
// the last KIP-848 member leaves and only classic members remain, a
// policy that allows downgrades turns it back into a classic group, which
// rebalances.

// MigrationPolicy is group.consumer.migration.policy.
type MigrationPolicy string

const (
	MigrationDisabled      MigrationPolicy = "disabled"
	MigrationUpgrade       MigrationPolicy = "upgrade"
	MigrationDowngrade     MigrationPolicy = "downgrade"
	MigrationBidirectional MigrationPolicy = "bidirectional"
)

// ParseMigrationPolicy reads a policy name, case-insensitively as Kafka.
func ParseMigrationPolicy(s string) (MigrationPolicy, bool) {
	for _, p := range []MigrationPolicy{MigrationDisabled, MigrationUpgrade, MigrationDowngrade, MigrationBidirectional} {
		if len(s) == len(p) && equalFold(s, string(p)) {
			return p, true
		}
	}
	return "", false
}

func equalFold(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// policy is the configured policy; unset is Kafka's default.
func (c *Coordinator) policy() MigrationPolicy {
	if p, ok := ParseMigrationPolicy(string(c.cfg.Migration)); ok {
		return p
	}
	return MigrationBidirectional
}

func (c *Coordinator) upgrades() bool {
	p := c.policy()
	return p == MigrationUpgrade || p == MigrationBidirectional
}

func (c *Coordinator) downgrades() bool {
	p := c.policy()
	return p == MigrationDowngrade || p == MigrationBidirectional
}

// classicMember is what a member that speaks the classic protocol keeps
// in a consumer group.
type classicMember struct {
	protocols []kmsg.JoinGroupRequestProtocol
	session   time.Duration
}

// upgradeLocked converts classic group cg, which has members, to a
// consumer group, or says why it may not. c.mu is held.
func (c *Coordinator) upgradeLocked(cg *group, topics map[string]TopicMeta) (*cgroup, int16, string) {
	switch {
	case !c.upgrades():
		return nil, kerr.GroupIDNotFound.Code, "Group " + cg.name + " is a classic group with members; it cannot be upgraded online " +
			"(group.consumer.migration.policy=" + string(c.policy()) + "). It becomes a consumer group, keeping its offsets, once its classic members have left."
	case cg.protocolType != "consumer":
		return nil, kerr.GroupIDNotFound.Code, "Group " + cg.name + " is a classic group of protocol type " + cg.protocolType + ", not consumer; it cannot be upgraded."
	case len(cg.members) >= maxConsumerMembers:
		return nil, kerr.GroupMaxSizeReached.Code, ""
	case cg.state != stateStable:
		// Mid-rebalance, what each member owns is not settled; the
		// client retries this error.
		return nil, kerr.CoordinatorLoadInProgress.Code, "Group " + cg.name + " is rebalancing; it is upgraded once Stable."
	}
	g := &cgroup{c: c, name: cg.name, epoch: cg.generation, assignEpoch: cg.generation, members: map[string]*cmember{},
		target: map[string]tpSet{}, owners: map[tp]string{}, names: map[[16]byte]string{}}
	for _, om := range cg.sortedMembers() {
		var meta kmsg.ConsumerMemberMetadata
		if err := meta.ReadFrom(om.metadata(cg.protocol)); err != nil {
			return nil, kerr.GroupIDNotFound.Code, "Group " + cg.name + ": member " + om.id + " sent unreadable consumer metadata; the group cannot be upgraded."
		}
		var asg kmsg.ConsumerMemberAssignment
		assigned := tpSet{}
		if len(om.assignment) > 0 {
			if err := asg.ReadFrom(om.assignment); err != nil {
				return nil, kerr.GroupIDNotFound.Code, "Group " + cg.name + ": the assignment of member " + om.id + " is unreadable; the group cannot be upgraded."
			}
			for _, t := range asg.Topics {
				addParts(assigned, topics, t.Topic, t.Partitions)
			}
		}
		// A cooperative member may still hold what the leader took from
		// it this generation: it is revoking those.
		revoking := tpSet{}
		for _, t := range meta.OwnedPartitions {
			addParts(revoking, topics, t.Topic, t.Partitions)
		}
		for p := range assigned {
			delete(revoking, p)
		}
		m := &cmember{id: om.id, instanceID: om.instanceID, clientID: om.clientID, clientHost: om.clientHost,
			subscribed: sortedSet(meta.Topics), rebalance: om.rebalanceTimeout, epoch: cg.generation, prevEpoch: cg.generation,
			assigned: assigned, revoking: revoking,
			classic: &classicMember{protocols: om.protocols, session: om.sessionTimeout}}
		for p := range assigned {
			g.owners[p] = m.id
		}
		for p := range revoking {
			if _, taken := g.owners[p]; !taken {
				g.owners[p] = m.id
			} else {
				delete(revoking, p)
			}
		}
		if len(revoking) > 0 {
			m.state = memberUnrevoked
		}
		g.members[m.id], g.target[m.id] = m, assigned.clone()
	}
	for n, tm := range topics {
		g.names[tm.ID] = n
	}
	g.topicSig = g.topicSignature(topics)
	cg.drop(kerr.RebalanceInProgress.Code)
	delete(c.groups, cg.name)
	if c.consumers == nil {
		c.consumers = map[string]*cgroup{}
	}
	c.consumers[g.name] = g
	for _, m := range g.members {
		g.armSession(m)
		if m.state == memberUnrevoked {
			g.armRevoke(m)
		}
	}
	c.log.Info("classic group upgraded to a consumer group", "group", g.name, "generation", cg.generation, "classic_members", len(g.members))
	return g, 0, ""
}

// maybeDowngrade turns g back into a classic group when only classic
// members are left and the policy allows it; the classic group then
// rebalances, as Kafka's does. c.mu is held. It reports whether it did.
func (g *cgroup) maybeDowngrade() bool {
	c := g.c
	if len(g.members) == 0 || !c.downgrades() {
		return false
	}
	for _, m := range g.members {
		if m.classic == nil {
			return false
		}
	}
	protocol := g.classicProtocol()
	if protocol == "" {
		return false
	}
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	g.drop()
	delete(c.consumers, g.name)
	// The generation is the members' epoch (all the same once they have
	// reconciled), so their heartbeats hear REBALANCE_IN_PROGRESS and
	// they rejoin keeping their partitions; a member behind it hears
	// ILLEGAL_GENERATION, which makes it rejoin too.
	gen := int32(0)
	for _, m := range g.members {
		gen = max(gen, m.epoch)
	}
	cg := c.newGroup(g.name)
	cg.protocolType, cg.protocol, cg.generation = "consumer", protocol, gen
	cg.transition(stateStable)
	for _, id := range ids {
		m := g.members[id]
		c.joinSeq++
		nm := &member{id: m.id, instanceID: m.instanceID, clientID: m.clientID, clientHost: m.clientHost, seq: c.joinSeq,
			sessionTimeout: m.classic.session, rebalanceTimeout: m.rebalance, protocolType: "consumer",
			protocols: m.classic.protocols, assignment: g.encodeAssignment(m.assigned)}
		cg.members[nm.id] = nm
		if nm.instanceID != nil {
			cg.static[*nm.instanceID] = nm.id
		}
		if cg.leader == "" {
			cg.leader = nm.id
		}
		cg.armSession(nm, nm.sessionTimeout)
	}
	c.log.Info("consumer group downgraded to a classic group", "group", g.name, "generation", cg.generation, "members", len(cg.members))
	cg.persist()
	cg.prepareRebalance()
	return true
}

// classicProtocol is the protocol every classic member supports that most
// of them prefer (Kafka's vote), "" when they share none.
func (g *cgroup) classicProtocol() string { return g.classicProtocolWith(nil, nil) }

// classicProtocolWith is classicProtocol with member m (nil: a new one)
// sending protocols instead of its own (nil: as they are).
func (g *cgroup) classicProtocolWith(m *cmember, protocols []kmsg.JoinGroupRequestProtocol) string {
	type voter struct {
		id        string
		protocols []kmsg.JoinGroupRequestProtocol
	}
	var vs []voter
	for _, o := range g.members {
		if o.classic == nil || (o == m && protocols != nil) {
			continue
		}
		vs = append(vs, voter{o.id, o.classic.protocols})
	}
	if protocols != nil {
		id := "\xff" // a new member sorts last
		if m != nil {
			id = m.id
		}
		vs = append(vs, voter{id, protocols})
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].id < vs[j].id })
	counts := map[string]int{}
	for _, v := range vs {
		seen := map[string]bool{}
		for _, p := range v.protocols {
			if !seen[p.Name] {
				seen[p.Name] = true
				counts[p.Name]++
			}
		}
	}
	votes := map[string]int{}
	for _, v := range vs {
		for _, p := range v.protocols {
			if counts[p.Name] == len(vs) {
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, v := range vs {
		for _, p := range v.protocols {
			if votes[p.Name] > votes[best] {
				best = p.Name
			}
		}
	}
	return best
}

// encodeAssignment is a member's partitions as a classic consumer
// assignment.
func (g *cgroup) encodeAssignment(s tpSet) []byte {
	var a kmsg.ConsumerMemberAssignment
	for _, t := range assignmentTopics(s) {
		a.Topics = append(a.Topics, kmsg.ConsumerMemberAssignmentTopic{Topic: g.names[t.TopicID], Partitions: t.Partitions})
	}
	return a.AppendTo(nil)
}

// addParts adds a topic's partitions by name; unknown topics and
// partitions are skipped (nobody can be assigned them).
func addParts(s tpSet, topics map[string]TopicMeta, topic string, parts []int32) {
	tm, ok := topics[topic]
	if !ok {
		return
	}
	for _, p := range parts {
		if p >= 0 && p < tm.Partitions {
			s[tp{tm.ID, p}] = struct{}{}
		}
	}
}

func sortedSet(ss []string) []string {
	out := slices.Clone(ss)
	sort.Strings(out)
	return slices.Compact(out)
}
