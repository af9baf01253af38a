package coordinator

import (
	"bytes"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type groupState int8

const (
	stateEmpty groupState = iota
	statePreparingRebalance
	stateCompletingRebalance
	stateStable
	stateDead
)

func (s groupState) String() string {
	switch s {
	case stateEmpty:
		return "Empty"
	case statePreparingRebalance:
		return "PreparingRebalance"
	case stateCompletingRebalance:
		return "CompletingRebalance"
	case stateStable:
		return "Stable"
	default:
		return "Dead"
	}
}

// waiter is a parked JoinGroup or SyncGroup. The channel has room for the one
// response, so the group never blocks handing it over, even to a caller that
// has given up.
type waiter struct {
	ch  chan kmsg.Response
	req kmsg.Request
}

func newWaiter(req kmsg.Request) *waiter {
	return &waiter{ch: make(chan kmsg.Response, 1), req: req}
}

func (w *waiter) deliver(resp kmsg.Response) {
	select {
	case w.ch <- resp:
	default:
	}
}

type member struct {
	id         string
	instanceID *string
	clientID   string
	clientHost string
	seq        uint64 // arrival order; the earliest remaining member succeeds a leader

	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	protocolType     string
	protocols        []kmsg.JoinGroupRequestProtocol
	assignment       []byte

	// isNew is set until the member's first JoinGroup completes; until then
	// it cannot heartbeat, so only newMemberJoinTimeout bounds its wait.
	isNew bool
	join  *waiter // parked JoinGroup, nil when not awaiting join
	sync  *waiter // parked SyncGroup, nil when not awaiting sync
	timer *time.Timer
}

// metadata returns the member's metadata for protocol.
func (m *member) metadata(protocol string) []byte {
	for _, p := range m.protocols {
		if p.Name == protocol {
			return p.Metadata
		}
	}
	return nil
}

// matches reports whether protocols are exactly what the member last sent.
func (m *member) matches(protocols []kmsg.JoinGroupRequestProtocol) bool {
	return slices.EqualFunc(m.protocols, protocols, func(a, b kmsg.JoinGroupRequestProtocol) bool {
		return a.Name == b.Name && bytes.Equal(a.Metadata, b.Metadata)
	})
}

// pendingMember is a member id handed out with MEMBER_ID_REQUIRED; it expires
// unless the client joins with it within its session timeout.
type pendingMember struct {
	timer *time.Timer
}

type group struct {
	c    *Coordinator
	name string

	state, prevState groupState
	generation       int32
	protocolType     string
	protocol         string // chosen for the current generation; "" when none
	leader           string

	members     map[string]*member
	static      map[string]string // instance id -> member id
	pending     map[string]*pendingMember
	pendingSync map[string]struct{} // got this generation's JoinGroup response, no SyncGroup yet

	// newMemberAdded extends the initial rebalance delay while members keep
	// arriving, as Kafka does.
	newMemberAdded bool
	joinTimer      *time.Timer
	syncTimer      *time.Timer
	idleTimer      *time.Timer // runs while Empty; the group is forgotten when it fires
}

func (c *Coordinator) newGroup(name string) *group {
	g := &group{
		c:       c,
		name:    name,
		members: make(map[string]*member),
		static:  make(map[string]string),
		pending: make(map[string]*pendingMember),
	}
	c.groups[name] = g
	return g
}

// forgetIfIdle drops an Empty group from memory once nothing about it is
// worth keeping: it never completed a rebalance, or it has stayed Empty for
// emptyGroupRetention. Its committed offsets stay in the store, and such a
// group still reads as Empty from them.
func (g *group) forgetIfIdle() {
	if g.state != stateEmpty || len(g.members) > 0 || len(g.pending) > 0 {
		return
	}
	if g.generation > 0 && g.idleTimer != nil {
		return
	}
	g.drop(0)
	if g.c.groups[g.name] == g {
		delete(g.c.groups, g.name)
	}
}

func (g *group) transition(s groupState) {
	g.prevState, g.state = g.state, s
}

// schedule arms *slot to run fn with the coordinator lock held after d,
// replacing whatever timer *slot held. fn does not run if the timer was
// replaced or cleared meanwhile, or if the group was dropped.
func (g *group) schedule(slot **time.Timer, d time.Duration, fn func()) {
	if *slot != nil {
		(*slot).Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		g.c.mu.Lock()
		defer g.c.mu.Unlock()
		if g.state == stateDead || *slot != t {
			return
		}
		*slot = nil
		fn()
	})
	*slot = t
}

func stopTimer(slot **time.Timer) {
	if *slot != nil {
		(*slot).Stop()
		*slot = nil
	}
}

// sortedMembers returns the members in arrival order.
func (g *group) sortedMembers() []*member {
	ms := make([]*member, 0, len(g.members))
	for _, m := range g.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	return ms
}

// rebalanceTimeout is the longest rebalance timeout any member asked for.
func (g *group) rebalanceTimeout() time.Duration {
	var d time.Duration
	for _, m := range g.members {
		d = max(d, m.rebalanceTimeout)
	}
	return d
}

// allJoined reports whether every member is parked in JoinGroup and no
// handed-out member id is still expected.
func (g *group) allJoined() bool {
	if len(g.pending) > 0 {
		return false
	}
	for _, m := range g.members {
		if m.join == nil {
			return false
		}
	}
	return true
}

func (g *group) canRebalance() bool {
	return g.state == stateEmpty || g.state == stateStable || g.state == stateCompletingRebalance
}

// supports reports whether a member with these protocols may join: a
// non-empty group only admits members that share one protocol with all
// current members.
func (g *group) supports(protocolType string, protocols []kmsg.JoinGroupRequestProtocol) bool {
	if g.state == stateEmpty {
		return protocolType != "" && len(protocols) > 0
	}
	if protocolType != g.protocolType {
		return false
	}
	counts := g.protocolSupport()
	for _, p := range protocols {
		if counts[p.Name] == len(g.members) {
			return true
		}
	}
	return false
}

// protocolSupport counts the members supporting each protocol.
func (g *group) protocolSupport() map[string]int {
	counts := make(map[string]int)
	for _, m := range g.members {
		seen := make(map[string]bool, len(m.protocols))
		for _, p := range m.protocols {
			if !seen[p.Name] {
				seen[p.Name] = true
				counts[p.Name]++
			}
		}
	}
	return counts
}

// selectProtocol applies Kafka's vote: among the protocols every member
// supports, each member votes for the first one in its own preference order
// and the most votes win. Ties go to the leader's preference so the result is
// deterministic.
func (g *group) selectProtocol() string {
	counts := g.protocolSupport()
	votes := make(map[string]int)
	for _, m := range g.members {
		for _, p := range m.protocols {
			if counts[p.Name] == len(g.members) {
				votes[p.Name]++
				break
			}
		}
	}
	order := g.sortedMembers()
	if l := g.members[g.leader]; l != nil {
		order = append([]*member{l}, order...)
	}
	best, bestVotes := "", 0
	for _, m := range order {
		for _, p := range m.protocols {
			if v := votes[p.Name]; v > bestVotes {
				best, bestVotes = p.Name, v
			}
		}
	}
	return best
}

// validateMember checks a request's member and instance ids as Kafka does: an
// instance id must map to exactly this member id.
func (g *group) validateMember(memberID string, instanceID *string) int16 {
	if instanceID != nil {
		id, ok := g.static[*instanceID]
		switch {
		case !ok:
			return kerr.UnknownMemberID.Code
		case id != memberID:
			return kerr.FencedInstanceID.Code
		}
		return 0
	}
	if _, ok := g.members[memberID]; !ok {
		return kerr.UnknownMemberID.Code
	}
	return 0
}

// armSession (re)starts the member's session timer.
func (g *group) armSession(m *member, d time.Duration) {
	g.schedule(&m.timer, d, func() { g.sessionExpired(m) })
}

func (g *group) sessionExpired(m *member) {
	if g.members[m.id] != m {
		return
	}
	// A member parked in a rebalance cannot heartbeat and counts as alive;
	// its timer restarts when the rebalance answers it.
	if !m.isNew && (m.join != nil || m.sync != nil) {
		return
	}
	g.c.log.Info("member session expired", "group", g.name, "member", m.id, "state", g.state.String())
	g.removeMemberAndUpdate(m)
}

func (g *group) addPending(id string, sessionTimeout time.Duration) {
	p := &pendingMember{}
	g.pending[id] = p
	g.schedule(&p.timer, sessionTimeout, func() {
		if g.pending[id] != p {
			return
		}
		delete(g.pending, id)
		g.c.log.Debug("pending member expired", "group", g.name, "member", id)
		if g.state == statePreparingRebalance && g.allJoined() {
			g.completeJoin()
		}
		g.forgetIfIdle()
	})
}

func (g *group) removePending(id string) {
	if p := g.pending[id]; p != nil {
		stopTimer(&p.timer)
		delete(g.pending, id)
	}
}

// addMember adds a member parked in JoinGroup and moves the rebalance on.
func (g *group) addMember(m *member, w *waiter) {
	g.removePending(m.id)
	g.c.joinSeq++
	m.seq = g.c.joinSeq
	m.isNew = true
	if g.state == statePreparingRebalance && g.prevState == stateEmpty {
		g.newMemberAdded = true
	}
	if len(g.members) == 0 {
		g.protocolType = m.protocolType
	}
	g.members[m.id] = m
	if m.instanceID != nil {
		g.static[*m.instanceID] = m.id
	}
	if g.leader == "" {
		g.leader = m.id
	}
	m.join = w
	g.armSession(m, newMemberJoinTimeout)
	g.c.log.Debug("member joined", "group", g.name, "member", m.id, "state", g.state.String())
	g.maybePrepareRebalanceOrCompleteJoin()
}

// updateMember records a known member's new JoinGroup and parks it.
func (g *group) updateMember(m *member, req *kmsg.JoinGroupRequest, sessionTimeout, rebalanceTimeout time.Duration, w *waiter) {
	m.protocols = req.Protocols
	m.sessionTimeout = sessionTimeout
	m.rebalanceTimeout = rebalanceTimeout
	if m.join != nil {
		// A second JoinGroup from the same member supersedes the first;
		// the first caller is told to rejoin rather than left hanging.
		m.join.deliver(g.joinError(m.join, m.id, kerr.RebalanceInProgress.Code))
	}
	m.join = w
}

// removeMember takes a member out of the group without deciding about a
// rebalance; a request it has parked is answered UNKNOWN_MEMBER_ID.
func (g *group) removeMember(m *member) {
	if m.join != nil {
		m.join.deliver(g.joinError(m.join, "", kerr.UnknownMemberID.Code))
		m.join = nil
	}
	if m.sync != nil {
		m.sync.deliver(g.syncError(m.sync, kerr.UnknownMemberID.Code))
		m.sync = nil
	}
	stopTimer(&m.timer)
	delete(g.members, m.id)
	if m.instanceID != nil && g.static[*m.instanceID] == m.id {
		delete(g.static, *m.instanceID)
	}
	delete(g.pendingSync, m.id)
	if g.leader == m.id {
		g.leader = ""
		if ms := g.sortedMembers(); len(ms) > 0 {
			g.leader = ms[0].id
		}
	}
}

// removeMemberAndUpdate removes a member and starts or finishes a rebalance
// as its departure requires.
func (g *group) removeMemberAndUpdate(m *member) {
	g.removeMember(m)
	switch g.state {
	case stateStable, stateCompletingRebalance:
		g.maybePrepareRebalanceOrCompleteJoin()
	case statePreparingRebalance:
		if g.allJoined() {
			g.completeJoin()
		}
	}
}

func (g *group) maybePrepareRebalanceOrCompleteJoin() {
	if g.canRebalance() {
		g.prepareRebalance()
		return
	}
	g.maybeCompleteJoinPhase()
}

// maybeCompleteJoinPhase completes the join phase once everyone rejoined,
// except during a group's first rebalance, which the initial delay drives.
func (g *group) maybeCompleteJoinPhase() {
	if g.state == statePreparingRebalance && g.allJoined() && g.prevState != stateEmpty {
		g.completeJoin()
	}
}

// prepareRebalance moves the group to PreparingRebalance: members waiting in
// SyncGroup are sent back to rejoin, and the join phase ends when everyone
// rejoined or the rebalance timeout passes.
func (g *group) prepareRebalance() {
	if g.state == stateCompletingRebalance {
		g.resetAssignments(kerr.RebalanceInProgress.Code)
	}
	g.clearPendingSync()

	initial := g.state == stateEmpty
	stopTimer(&g.idleTimer)
	g.transition(statePreparingRebalance)
	g.c.log.Info("preparing rebalance", "group", g.name, "generation", g.generation, "members", len(g.members))

	if initial {
		delay := g.c.cfg.InitialRebalanceDelay
		if delay <= 0 {
			g.completeJoin()
			return
		}
		g.newMemberAdded = false
		g.scheduleInitialJoin(delay, max(g.rebalanceTimeout()-delay, 0))
		return
	}
	if g.allJoined() {
		g.completeJoin()
		return
	}
	g.schedule(&g.joinTimer, g.rebalanceTimeout(), g.completeJoin)
}

// scheduleInitialJoin waits for more members of a new group: each delay that
// saw a new member is followed by another, until the rebalance timeout.
func (g *group) scheduleInitialJoin(delay, remaining time.Duration) {
	g.schedule(&g.joinTimer, delay, func() {
		if g.newMemberAdded && remaining > 0 {
			g.newMemberAdded = false
			next := min(g.c.cfg.InitialRebalanceDelay, remaining)
			g.scheduleInitialJoin(next, max(remaining-delay, 0))
			return
		}
		g.completeJoin()
	})
}

// completeJoin ends the join phase: dynamic members that did not rejoin are
// dropped, the generation advances, and every rejoined member is answered.
func (g *group) completeJoin() {
	if g.state != statePreparingRebalance {
		return
	}
	stopTimer(&g.joinTimer)

	for _, m := range g.sortedMembers() {
		if m.join == nil && m.instanceID == nil {
			g.c.log.Info("removing member that did not rejoin", "group", g.name, "member", m.id)
			g.removeMember(m)
		}
	}

	if len(g.members) > 0 && !g.electJoinedLeader() {
		// Only static members that have not rejoined are left; wait for
		// them to rejoin or for their sessions to expire.
		g.schedule(&g.joinTimer, g.rebalanceTimeout(), g.completeJoin)
		return
	}

	g.generation++
	g.clearPendingSync()
	if len(g.members) == 0 {
		g.protocol = ""
		g.transition(stateEmpty)
		g.schedule(&g.idleTimer, emptyGroupRetention, g.forgetIfIdle)
		g.c.log.Info("group is empty", "group", g.name, "generation", g.generation)
		g.persist() // the next coordinator must know the generation
		return
	}
	g.protocol = g.selectProtocol()
	g.transition(stateCompletingRebalance)
	g.c.log.Info("rebalance joined", "group", g.name, "generation", g.generation, "protocol", g.protocol, "leader", g.leader, "members", len(g.members))

	g.pendingSync = make(map[string]struct{}, len(g.members))
	for _, m := range g.sortedMembers() {
		if m.join != nil {
			resp := g.joinResponse(m.join.req.(*kmsg.JoinGroupRequest), m.id, m.id == g.leader)
			m.join.deliver(resp)
			m.join = nil
		}
		g.armSession(m, m.sessionTimeout)
		m.isNew = false
		g.pendingSync[m.id] = struct{}{}
	}
	gen := g.generation
	g.schedule(&g.syncTimer, g.rebalanceTimeout(), func() { g.expirePendingSync(gen) })
}

// electJoinedLeader keeps the leader if it rejoined, else promotes the
// earliest member that did; false if no member rejoined.
func (g *group) electJoinedLeader() bool {
	if l := g.members[g.leader]; l != nil && l.join != nil {
		return true
	}
	for _, m := range g.sortedMembers() {
		if m.join != nil {
			g.leader = m.id
			return true
		}
	}
	return false
}

// expirePendingSync removes the members that got this generation's JoinGroup
// response but never sent SyncGroup, and rebalances without them.
func (g *group) expirePendingSync(gen int32) {
	if gen != g.generation || len(g.pendingSync) == 0 {
		return
	}
	if g.state != stateCompletingRebalance && g.state != stateStable {
		return
	}
	for _, id := range sortedKeys(g.pendingSync) {
		if m := g.members[id]; m != nil {
			g.c.log.Info("removing member that did not sync", "group", g.name, "member", id)
			g.removeMember(m)
		}
	}
	g.pendingSync = nil
	g.prepareRebalance()
}

func (g *group) removePendingSync(id string) {
	delete(g.pendingSync, id)
	if len(g.pendingSync) == 0 {
		stopTimer(&g.syncTimer)
	}
}

func (g *group) clearPendingSync() {
	g.pendingSync = nil
	stopTimer(&g.syncTimer)
}

// resetAssignments forgets the assignment of every member and answers the
// ones parked in SyncGroup with code.
func (g *group) resetAssignments(code int16) {
	for _, m := range g.members {
		m.assignment = nil
		if m.sync != nil {
			m.sync.deliver(g.syncError(m.sync, code))
			m.sync = nil
			g.armSession(m, m.sessionTimeout)
		}
	}
}

// propagateAssignment answers every member parked in SyncGroup with its
// assignment.
func (g *group) propagateAssignment() {
	for _, m := range g.sortedMembers() {
		if m.sync == nil {
			continue
		}
		resp := m.sync.req.(*kmsg.SyncGroupRequest).ResponseKind().(*kmsg.SyncGroupResponse)
		g.fillSync(resp, m)
		m.sync.deliver(resp)
		m.sync = nil
		g.armSession(m, m.sessionTimeout)
	}
}

func (g *group) fillSync(resp *kmsg.SyncGroupResponse, m *member) {
	resp.ProtocolType = kmsg.StringPtr(g.protocolType)
	resp.Protocol = kmsg.StringPtr(g.protocol)
	resp.MemberAssignment = m.assignment
	if resp.MemberAssignment == nil {
		resp.MemberAssignment = []byte{}
	}
}

// joinResponse is the successful JoinGroup answer of the current generation;
// the leader also gets every member's metadata for the chosen protocol.
func (g *group) joinResponse(req *kmsg.JoinGroupRequest, memberID string, withMembers bool) *kmsg.JoinGroupResponse {
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation = g.generation
	resp.ProtocolType = kmsg.StringPtr(g.protocolType)
	resp.Protocol = kmsg.StringPtr(g.protocol)
	resp.LeaderID = g.leader
	resp.MemberID = memberID
	if withMembers {
		resp.Members = g.memberList()
	}
	return resp
}

func (g *group) memberList() []kmsg.JoinGroupResponseMember {
	ms := g.sortedMembers()
	out := make([]kmsg.JoinGroupResponseMember, 0, len(ms))
	for _, m := range ms {
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID = m.id
		jm.InstanceID = m.instanceID
		jm.ProtocolMetadata = m.metadata(g.protocol)
		out = append(out, jm)
	}
	return out
}

func (g *group) joinError(w *waiter, memberID string, code int16) *kmsg.JoinGroupResponse {
	resp := w.req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.ErrorCode = code
	resp.MemberID = memberID
	return resp
}

func (g *group) syncError(w *waiter, code int16) *kmsg.SyncGroupResponse {
	resp := w.req.ResponseKind().(*kmsg.SyncGroupResponse)
	resp.ErrorCode = code
	return resp
}

// drop ends the group: every timer stops and every parked request is
// answered with code.
func (g *group) drop(code int16) {
	g.transition(stateDead)
	stopTimer(&g.joinTimer)
	stopTimer(&g.syncTimer)
	stopTimer(&g.idleTimer)
	for id, p := range g.pending {
		stopTimer(&p.timer)
		delete(g.pending, id)
	}
	for _, m := range g.members {
		stopTimer(&m.timer)
		if m.join != nil {
			m.join.deliver(g.joinError(m.join, m.id, code))
			m.join = nil
		}
		if m.sync != nil {
			m.sync.deliver(g.syncError(m.sync, code))
			m.sync = nil
		}
	}
}

// subscribedTopics is the union of the topics the members consume, decoded
// from their consumer-protocol metadata; ok is false when it cannot be known
// (another protocol type or undecodable metadata).
func (g *group) subscribedTopics() (topics map[string]bool, ok bool) {
	if g.protocolType != "consumer" {
		return nil, false
	}
	topics = make(map[string]bool)
	for _, m := range g.members {
		md := m.metadata(g.protocol)
		if md == nil && len(m.protocols) > 0 {
			md = m.protocols[0].Metadata
		}
		var meta kmsg.ConsumerMemberMetadata
		if err := meta.ReadFrom(md); err != nil {
			return nil, false
		}
		for _, t := range meta.Topics {
			topics[t] = true
		}
	}
	return topics, true
}
