package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// KIP-848 consumer groups ("consumer" protocol): members heartbeat with
// ConsumerGroupHeartbeat and the coordinator assigns partitions.
//
// The group epoch grows whenever membership, a subscription or a
// subscribed topic's partition count changes; the target assignment is
// then recomputed for that epoch (the assignment epoch). Each member moves
// to its target on its own heartbeats: it first gives up the partitions
// it must lose (it keeps its epoch until a heartbeat shows it no longer
// owns them), then takes the new epoch and the target partitions that no
// other member still holds; the rest follow as their owners release them.
// No partition is ever owned by two members, and members whose target
// did not change never stop consuming.

const (
	// consumerSessionTimeout and consumerHeartbeatInterval are Kafka's
	// group.consumer.session.timeout.ms and heartbeat.interval.ms defaults.
	consumerSessionTimeout    = 45 * time.Second
	consumerHeartbeatInterval = 5 * time.Second
	// reconcileHeartbeatInterval is the interval given to a member that
	// is still moving to its target: it hears sooner that the partitions
	// it waits for are free, which shortens a rebalance from two
	// heartbeat intervals to about one.
	reconcileHeartbeatInterval = 500 * time.Millisecond
	// maxConsumerMembers bounds a group (Kafka's group.consumer.max.size
	// is unbounded by default; a hostile client must not grow one forever).
	maxConsumerMembers = 1000
	maxSubscribed      = 10000
	// maxIDLength and maxTopicName bound what a member stores in the
	// group's saved state (Kafka's topic names are at most 249 bytes).
	maxIDLength  = 1024
	maxTopicName = 249
)

type memberState int8

const (
	memberStable     memberState = iota
	memberUnrevoked              // must give up revoking before taking the new epoch
	memberUnreleased             // at the new epoch, waiting for others to release some of its target
)

type cmember struct {
	id         string
	instanceID *string
	rack       *string
	clientID   string
	clientHost string
	subscribed []string // sorted
	regex      *string
	re         *regexp.Regexp // regex compiled, anchored
	assignor   string
	rebalance  time.Duration

	epoch, prevEpoch int32
	state            memberState
	assigned         tpSet // owned now
	revoking         tpSet // still owned, to be given up

	session *time.Timer
	revoke  *time.Timer

	// left is set for a static member that left with epoch -2: its
	// partitions stay reserved for its instance until its session ends.
	left bool

	classic *classicMember // nil for a KIP-848 member
}

type cgroup struct {
	c           *Coordinator
	name        string
	epoch       int32
	assignEpoch int32
	members     map[string]*cmember
	target      map[string]tpSet
	owners      map[tp]string       // partition -> member holding it (assigned or revoking)
	topicSig    string              // subscribed topics' metadata when the epoch last grew
	names       map[[16]byte]string // topic names, for describe
}

func (c *Coordinator) newConsumerGroup(name string) *cgroup {
	g := &cgroup{c: c, name: name, members: map[string]*cmember{}, target: map[string]tpSet{},
		owners: map[tp]string{}, names: map[[16]byte]string{}}
	if c.consumers == nil {
		c.consumers = map[string]*cgroup{}
	}
	c.consumers[name] = g
	return g
}

// assignor is the one most members ask for, uniform when none asks.
func (g *cgroup) assignor() string {
	votes := map[string]int{}
	best := assignorUniform
	for _, m := range g.members {
		if m.assignor != "" {
			votes[m.assignor]++
		}
	}
	for _, name := range []string{assignorUniform, assignorRange} {
		if votes[name] > votes[best] {
			best = name
		}
	}
	return best
}

func (c *Coordinator) consumerHeartbeat(ctx context.Context, req *kmsg.ConsumerGroupHeartbeatRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
	fail := func(code int16, msg string) kmsg.Response {
		resp.ErrorCode = code
		if msg != "" {
			resp.ErrorMessage = &msg
		}
		return resp
	}
	if code, msg := checkHeartbeat(req); code != 0 {
		return fail(code, msg)
	}
	// Topic metadata is read before the lock (it may block on the broker).
	topics := c.cfg.Topics()
	if code := c.lockGroup(req.Group); code != 0 {
		return fail(code, "")
	}
	save, code, msg := c.consumerHeartbeatLocked(ctx, req, resp, topics)
	c.mu.Unlock()
	if code != 0 {
		return fail(code, msg)
	}
	return c.answerSaved(ctx, save, req.Group, func(code int16) kmsg.Response { return fail(code, "") }, resp)
}

// answerSaved returns resp once save, if any, is durable: the response
// tells a member its new epoch and partitions, so it goes out only once
// the group state that backs it is, and a new coordinator knows what the
// member knows. On failure it returns fail's answer.
func (c *Coordinator) answerSaved(ctx context.Context, save *storeOp, group string, fail func(int16) kmsg.Response, resp kmsg.Response) kmsg.Response {
	if save == nil {
		return resp
	}
	if err := save.wait(ctx); err != nil {
		c.log.Warn("consumer group state save failed", "group", group, "err", err)
		return fail(storeErrorCode(err))
	}
	return resp
}

// checkHeartbeat validates a heartbeat as Kafka does before looking at the
// group.
func checkHeartbeat(req *kmsg.ConsumerGroupHeartbeatRequest) (int16, string) {
	switch {
	case req.Group == "":
		return kerr.InvalidRequest.Code, "GroupId can't be empty."
	case req.MemberEpoch < -2:
		return kerr.InvalidRequest.Code, "MemberEpoch is invalid."
	case req.Version >= 1 && req.MemberID == "":
		return kerr.InvalidRequest.Code, "MemberId can't be empty."
	case len(req.SubscribedTopicNames) > maxSubscribed:
		return kerr.InvalidRequest.Code, "too many subscribed topics"
	case len(req.MemberID) > maxIDLength || (req.InstanceID != nil && len(*req.InstanceID) > maxIDLength) ||
		(req.RackID != nil && len(*req.RackID) > maxIDLength) || (req.SubscribedTopicRegex != nil && len(*req.SubscribedTopicRegex) > maxIDLength):
		return kerr.InvalidRequest.Code, fmt.Sprintf("member, instance and rack ids and the regex are at most %d bytes", maxIDLength)
	}
	for _, t := range req.SubscribedTopicNames {
		if len(t) > maxTopicName {
			return kerr.InvalidRequest.Code, fmt.Sprintf("topic names are at most %d bytes", maxTopicName)
		}
	}
	if req.MemberEpoch == 0 {
		if req.RebalanceTimeoutMillis == -1 {
			return kerr.InvalidRequest.Code, "RebalanceTimeoutMs must be provided in first request."
		}
		if len(req.Topics) > 0 {
			return kerr.InvalidRequest.Code, "TopicPartitions must be empty when (re-)joining."
		}
		if req.SubscribedTopicNames == nil && req.SubscribedTopicRegex == nil {
			return kerr.InvalidRequest.Code, "SubscribedTopicNames or SubscribedTopicRegex must be set in first request."
		}
	}
	if req.SubscribedTopicRegex != nil {
		if _, err := regexp.Compile(*req.SubscribedTopicRegex); err != nil {
			return kerr.InvalidRegularExpression.Code, err.Error()
		}
	}
	if a := req.ServerAssignor; a != nil && *a != assignorUniform && *a != assignorRange {
		return kerr.UnsupportedAssignor.Code, "ServerAssignor " + *a + " is not supported. Supported assignors: uniform, range."
	}
	return 0, ""
}

// consumerHeartbeatLocked serves a validated heartbeat with c.mu held. save, when
// not nil, is the state write the response must wait for.
func (c *Coordinator) consumerHeartbeatLocked(ctx context.Context, req *kmsg.ConsumerGroupHeartbeatRequest,
	resp *kmsg.ConsumerGroupHeartbeatResponse, topics map[string]TopicMeta) (save *storeOp, code int16, msg string) {
	g, code, msg := c.heartbeatGroupLocked(req, topics)
	if code != 0 {
		return nil, code, msg
	}
	memberID := req.MemberID
	if memberID == "" { // v0 join: the coordinator names the member
		memberID = newMemberID(clientFrom(ctx).id, nil)
	}
	m := g.members[memberID]
	before := g.stateKey(m)
	bump := false // one new group epoch per heartbeat, whatever changed
	switch {
	case req.MemberEpoch == -2 && m != nil && m.instanceID != nil:
		// A static member's temporary leave (KIP-848): it keeps its
		// place until its session times out or its instance rejoins.
		m.left = true
		resp.MemberID, resp.MemberEpoch = &memberID, req.MemberEpoch
		c.log.Info("consumer group static member left for now", "group", g.name, "member", memberID, "instance", *m.instanceID)
		return g.persist(), 0, ""
	case req.MemberEpoch == 0 && m == nil && req.InstanceID != nil && g.staticMember(*req.InstanceID) != nil:
		old := g.staticMember(*req.InstanceID)
		if !old.left && old.classic == nil {
			return nil, kerr.UnreleasedInstanceID.Code, "Static member " + old.id + " with instance id " + *req.InstanceID +
				" is still in the group: it must leave (or time out) before the instance rejoins."
		}
		// Its restart, or a classic static member's upgraded one
		// (which cannot announce leaving): it takes the old member's
		// place, epoch and partitions.
		m = g.replaceStatic(old, memberID)
		m.classic = nil
	case req.MemberEpoch < 0: // leave
		if m == nil {
			return nil, kerr.UnknownMemberID.Code, ""
		}
		g.removeMember(m, "left")
		resp.MemberID, resp.MemberEpoch = &memberID, req.MemberEpoch
		if g.maybeDowngrade() {
			return nil, 0, ""
		}
		return g.persist(), 0, ""
	case req.MemberEpoch == 0:
		if m != nil { // rejoin: the member lost its state; start over
			g.removeMember(m, "rejoined")
		}
		if len(g.members) >= maxConsumerMembers {
			return nil, kerr.GroupMaxSizeReached.Code, ""
		}
		ci := clientFrom(ctx)
		m = &cmember{id: memberID, clientID: ci.id, clientHost: ci.host, assigned: tpSet{}, revoking: tpSet{}}
		g.members[memberID] = m
		bump = true
		c.log.Info("consumer group member joined", "group", g.name, "member", memberID, "group_epoch", g.epoch+1)
	default:
		if m == nil {
			return nil, kerr.UnknownMemberID.Code, ""
		}
		if req.MemberEpoch != m.epoch && !(req.MemberEpoch == m.prevEpoch && req.Topics != nil && ownedWithin(req.Topics, m.assigned)) {
			return nil, kerr.FencedMemberEpoch.Code, "The consumer group member has a smaller member epoch than expected."
		}
		m.left = false // it is back: its instance may no longer take its place
	}
	if g.update(m, req) {
		bump = true
	}
	if sig := g.topicSignature(topics); sig != g.topicSig {
		g.topicSig = sig
		bump = true
	}
	if bump {
		g.epoch++
	}
	if g.epoch > g.assignEpoch {
		g.computeTarget(topics)
	}
	oldAssigned := m.assigned.clone()
	g.reconcile(m, ownedSet(req.Topics))
	g.armSession(m)

	resp.MemberID, resp.MemberEpoch = &memberID, m.epoch
	resp.HeartbeatIntervalMillis = int32(consumerHeartbeatInterval.Milliseconds())
	if m.state != memberStable || m.epoch != g.assignEpoch {
		resp.HeartbeatIntervalMillis = int32(reconcileHeartbeatInterval.Milliseconds())
	}
	full := req.RebalanceTimeoutMillis != -1 && (req.SubscribedTopicNames != nil || req.SubscribedTopicRegex != nil) && req.Topics != nil
	if req.MemberEpoch == 0 || full || !oldAssigned.equal(m.assigned) {
		resp.Assignment = &kmsg.ConsumerGroupHeartbeatResponseAssignment{Topics: assignmentTopics(m.assigned)}
	}
	if g.stateKey(m) != before {
		save = g.persist()
	}
	return save, 0, ""
}

// heartbeatGroupLocked finds the heartbeat's group, creating it for a
// join. An Empty classic group of that name becomes a consumer group (its
// committed offsets stay); one with members is upgraded online when
// group.consumer.migration.policy allows it (migrate.go), else refused
// with GROUP_ID_NOT_FOUND, as Kafka does.
func (c *Coordinator) heartbeatGroupLocked(req *kmsg.ConsumerGroupHeartbeatRequest, topics map[string]TopicMeta) (*cgroup, int16, string) {
	if g := c.consumers[req.Group]; g != nil {
		return g, 0, ""
	}
	cg := c.groups[req.Group]
	if cg != nil && (cg.state != stateEmpty || len(cg.members) > 0) {
		if req.MemberEpoch != 0 {
			return nil, kerr.UnknownMemberID.Code, ""
		}
		return c.upgradeLocked(cg, topics)
	}
	if req.MemberEpoch != 0 {
		return nil, kerr.UnknownMemberID.Code, ""
	}
	if cg != nil {
		cg.drop(0)
		delete(c.groups, req.Group)
	}
	return c.newConsumerGroup(req.Group), 0, ""
}

// update applies the heartbeat's member fields and reports whether the
// subscription or assignor changed (which calls for a new epoch).
func (g *cgroup) update(m *cmember, req *kmsg.ConsumerGroupHeartbeatRequest) bool {
	changed := false
	if req.InstanceID != nil {
		m.instanceID = req.InstanceID
	}
	if req.RackID != nil {
		m.rack = req.RackID
	}
	if req.RebalanceTimeoutMillis > 0 {
		m.rebalance = millis(req.RebalanceTimeoutMillis)
	}
	if req.SubscribedTopicNames != nil {
		subs := slices.Clone(req.SubscribedTopicNames)
		sort.Strings(subs)
		subs = slices.Compact(subs)
		if !slices.Equal(subs, m.subscribed) {
			m.subscribed, changed = subs, true
		}
	}
	if req.SubscribedTopicRegex != nil && (m.regex == nil || *m.regex != *req.SubscribedTopicRegex) {
		m.setRegex(*req.SubscribedTopicRegex)
		changed = true
	}
	if req.ServerAssignor != nil && *req.ServerAssignor != m.assignor {
		old := g.assignor()
		m.assignor = *req.ServerAssignor
		changed = changed || g.assignor() != old
	}
	return changed
}

// setRegex sets the member's topic regex ("" clears it). Kafka matches
// the whole topic name; checkHeartbeat has compiled it once already.
func (m *cmember) setRegex(s string) {
	m.regex, m.re = nil, nil
	if s == "" {
		return
	}
	if re, err := regexp.Compile("^(?:" + s + ")$"); err == nil {
		m.regex, m.re = &s, re
	}
}

// subscribedTopics resolves a member's subscription against the topics.
func (m *cmember) subscribedTopics(topics map[string]TopicMeta) []string {
	out := []string{}
	for _, t := range m.subscribed {
		if _, ok := topics[t]; ok {
			out = append(out, t)
		}
	}
	if m.re != nil {
		for t := range topics {
			if m.re.MatchString(t) && !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	sort.Strings(out)
	return out
}

// topicSignature describes the metadata of every subscribed topic, so a
// new topic or partition count shows as a change.
func (g *cgroup) topicSignature(topics map[string]TopicMeta) string {
	seen := map[string]bool{}
	for _, m := range g.members {
		for _, t := range m.subscribedTopics(topics) {
			seen[t] = true
		}
	}
	names := make([]string, 0, len(seen))
	for t := range seen {
		names = append(names, t)
	}
	sort.Strings(names)
	b := make([]byte, 0, 64*len(names))
	for _, t := range names {
		tm := topics[t]
		b = append(b, t...)
		b = append(b, 0)
		b = append(b, tm.ID[:]...)
		b = append(b, byte(tm.Partitions>>24), byte(tm.Partitions>>16), byte(tm.Partitions>>8), byte(tm.Partitions))
	}
	return string(b)
}

// computeTarget assigns the group at its current epoch.
func (g *cgroup) computeTarget(topics map[string]TopicMeta) {
	in := assignInput{subs: map[string][]TopicMeta{}, prev: g.target}
	for id, m := range g.members {
		in.members = append(in.members, id)
		for _, t := range m.subscribedTopics(topics) {
			tm := topics[t]
			g.names[tm.ID] = t
			in.subs[id] = append(in.subs[id], tm)
		}
	}
	sort.Strings(in.members)
	g.target = assign(g.assignor(), in)
	g.assignEpoch = g.epoch
	g.c.log.Info("consumer group assignment computed", "group", g.name, "epoch", g.epoch, "assignor", g.assignor(), "members", len(g.members))
}

// reconcile moves a member toward its target; owned is what the heartbeat
// says the member holds (nil: not said).
func (g *cgroup) reconcile(m *cmember, owned tpSet) {
	if m.state == memberUnrevoked {
		if owned == nil || intersects(owned, m.revoking) {
			return
		}
		for p := range m.revoking {
			if g.owners[p] == m.id {
				delete(g.owners, p)
			}
		}
		m.revoking = tpSet{}
		stopTimer(&m.revoke)
		m.state = memberStable
	}
	if m.state == memberStable && m.epoch == g.assignEpoch {
		return
	}
	tgt := g.target[m.id]
	keep, revoke := tpSet{}, tpSet{}
	for p := range m.assigned {
		if _, ok := tgt[p]; ok {
			keep[p] = struct{}{}
		} else {
			revoke[p] = struct{}{}
		}
	}
	if len(revoke) > 0 {
		m.assigned, m.revoking, m.state = keep, revoke, memberUnrevoked
		g.armRevoke(m)
		return
	}
	for p := range tgt {
		if o, held := g.owners[p]; !held || o == m.id {
			keep[p] = struct{}{}
			g.owners[p] = m.id
		}
	}
	if m.epoch != g.assignEpoch {
		m.prevEpoch, m.epoch = m.epoch, g.assignEpoch
	}
	m.assigned = keep
	if len(keep) == len(tgt) {
		m.state = memberStable
	} else {
		m.state = memberUnreleased
	}
}

// removeMember drops a member, frees its partitions and bumps the epoch.
func (g *cgroup) removeMember(m *cmember, why string) {
	stopTimer(&m.session)
	stopTimer(&m.revoke)
	for p, o := range g.owners {
		if o == m.id {
			delete(g.owners, p)
		}
	}
	delete(g.members, m.id)
	delete(g.target, m.id)
	g.epoch++
	g.c.log.Info("consumer group member removed", "group", g.name, "member", m.id, "reason", why, "group_epoch", g.epoch)
}

func (g *cgroup) armSession(m *cmember) {
	stopTimer(&m.session)
	d := consumerSessionTimeout
	if m.classic != nil {
		d = m.classic.session
	}
	m.session = time.AfterFunc(d, func() { g.expire(m, &m.session, "session timed out") })
}

// armRevoke fences a member that does not give its partitions up within
// its rebalance timeout, as Kafka does.
func (g *cgroup) armRevoke(m *cmember) {
	stopTimer(&m.revoke)
	d := m.rebalance
	if d <= 0 {
		d = consumerSessionTimeout
	}
	m.revoke = time.AfterFunc(d, func() { g.expire(m, &m.revoke, "did not revoke partitions within its rebalance timeout") })
}

// expire runs from a timer: it removes the member if the timer is still
// the member's current one and the group still this node's.
func (g *cgroup) expire(m *cmember, slot **time.Timer, why string) {
	c := g.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consumers[g.name] != g || g.members[m.id] != m || *slot == nil {
		return
	}
	*slot = nil
	g.removeMember(m, why)
	if m.classic == nil && g.maybeDowngrade() {
		return
	}
	g.persist()
}

// drop stops every timer (the group is released or closed).
func (g *cgroup) drop() {
	for _, m := range g.members {
		stopTimer(&m.session)
		stopTimer(&m.revoke)
	}
}

// stateKey summarizes what a heartbeat of m can change in the snapshot,
// to tell whether it changed anything worth saving: the group's epochs
// and size, and m's own entry (other members' entries only change when
// the epochs or the membership do).
func (g *cgroup) stateKey(m *cmember) string {
	k := fmt.Sprintf("%d/%d/%d/%q", g.epoch, g.assignEpoch, len(g.members), g.topicSig)
	if m != nil {
		b, _ := json.Marshal(g.memberSnapshot(m)) // cannot fail: every field marshals
		k += string(b)
	}
	return k
}

func ownedSet(ts []kmsg.ConsumerGroupHeartbeatRequestTopic) tpSet {
	if ts == nil {
		return nil
	}
	out := tpSet{}
	for _, t := range ts {
		for _, p := range t.Partitions {
			out[tp{t.TopicID, p}] = struct{}{}
		}
	}
	return out
}

// ownedWithin reports whether the partitions a heartbeat reports are all
// in assigned (nil reports nothing and passes).
func ownedWithin(ts []kmsg.ConsumerGroupHeartbeatRequestTopic, assigned tpSet) bool {
	for p := range ownedSet(ts) {
		if _, ok := assigned[p]; !ok {
			return false
		}
	}
	return true
}

func intersects(a, b tpSet) bool {
	for p := range a {
		if _, ok := b[p]; ok {
			return true
		}
	}
	return false
}

func assignmentTopics(s tpSet) []kmsg.ConsumerGroupHeartbeatResponseAssignmentTopic {
	out := []kmsg.ConsumerGroupHeartbeatResponseAssignmentTopic{}
	for _, p := range s.sorted() {
		if n := len(out); n > 0 && out[n-1].TopicID == p.topic {
			out[n-1].Partitions = append(out[n-1].Partitions, p.part)
			continue
		}
		out = append(out, kmsg.ConsumerGroupHeartbeatResponseAssignmentTopic{TopicID: p.topic, Partitions: []int32{p.part}})
	}
	return out
}
