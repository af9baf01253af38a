package broker

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronik-dev/chronik/raft"
)

// Rejoining. A node that comes back with an empty data directory under an
// id the cluster knows registers with a new incarnation; the registry then
// lists every group it has to rejoin (meta_brokers.go). The node opens
// those groups gagged (raft ReplicaConfig.Joining: it never votes), and
// each group's leader demotes it to learner, lets it catch up and promotes
// it again by a change naming its new incarnation, which lifts the gag
// (raft Replica.Reconfigure with Membership.Rejoin). The leader then
// reports the group done (broker_rejoined). The same loop adds registered
// brokers the metadata group does not have yet as its learners.

// rejoinPoll is how often the driver looks again while a step waits for a
// learner to catch up (Reconfigure returns rather than block).
const rejoinPoll = 200 * time.Millisecond

// rejoinStepTimeout bounds one Reconfigure call.
const rejoinStepTimeout = 5 * time.Second

// markRejoins flags the groups this node must open gagged: in join mode,
// every group that existed when this incarnation registered (a fresh
// replica of one opened ungagged would vote with an empty log). It
// reports false until the registration has applied here: before that,
// which groups those are is unknown, and nothing opens.
func (b *Broker) markRejoins(want map[uint64]wantedReplica) bool {
	id := b.ident()
	if id.Mode != modeJoin {
		return true
	}
	reg, ok := b.metaSM.broker(b.cfg.NodeID)
	if !ok || reg.Incarnation != id.Incarnation {
		return false
	}
	for g, w := range want {
		if g < reg.JoinedBelow || slices.Contains(reg.Rejoin, g) {
			w.joining = true
			want[g] = w
		}
	}
	return true
}

// rejoinState is the driver's bookkeeping, for /nodes and logs.
type rejoinState struct {
	mu sync.Mutex
	// wasVoter remembers members seen as voters of a group before this
	// leader demoted them, so they are promoted back (group -> node).
	wasVoter map[uint64]map[int32]bool
	lastErr  time.Time
}

// rejoinLoop drives rejoins and metadata learners on the groups this node
// leads until the broker stops. It wakes on leader and metadata changes,
// and every rejoinPoll while a learner catches up. (A leader whose Raft
// progress still holds a wiped node's old position re-sends what the node
// lacks itself: raft/refill.go.)
func (b *Broker) rejoinLoop() {
	defer b.wg.Done()
	for {
		changed := b.leaderEvents.wait()
		var poll <-chan time.Time
		if b.rejoinStep() {
			poll = time.After(rejoinPoll)
		}
		select {
		case <-changed:
		case <-poll:
		case <-b.ctx.Done():
			return
		}
	}
}

// rejoinStep moves every rejoin and learner addition led here one step and
// reports whether any is still under way.
func (b *Broker) rejoinStep() (more bool) {
	if b.host.Stopping() {
		return false
	}
	brokers := b.metaSM.brokers()
	pending := map[uint64][]brokerMeta{}
	for _, bm := range brokers {
		if bm.State == brokerRemoved {
			continue
		}
		for _, g := range bm.Rejoin {
			pending[g] = append(pending[g], bm)
		}
	}
	if b.metaVoteStep(brokers) {
		more = true
	} else if b.addMetaLearners(brokers) {
		more = true
	}
	done := map[int32][]uint64{}
	incs := map[int32]string{}
	for g, bms := range pending {
		r := b.host.Replica(g)
		if r == nil {
			continue
		}
		if st := r.Status(); !st.IsLeader() || !st.LeaderReady {
			continue
		}
		for _, bm := range bms {
			finished, err := b.rejoinGroup(r, g, bm)
			switch {
			case err != nil:
				b.noteRejoinError(g, bm.ID, err)
				more = true
			case finished:
				done[bm.ID] = append(done[bm.ID], g)
				incs[bm.ID] = bm.Incarnation
			default:
				more = true
			}
		}
	}
	for id, groups := range done {
		slices.Sort(groups)
		ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
		_, err := b.metaPropose(ctx, metaCmd{Op: "broker_rejoined", Member: &memberCmd{ID: id, Incarnation: incs[id], Groups: groups}})
		cancel()
		if err != nil {
			more = true
			continue
		}
		b.logger.Info("node rejoined groups led here", "node", id, "incarnation", incs[id], "groups", len(groups))
	}
	return more
}

// rejoinGroup takes one step of node bm rejoining group g, which r leads,
// and reports whether it is done.
func (b *Broker) rejoinGroup(r *raft.Replica, g uint64, bm brokerMeta) (bool, error) {
	st := r.Status()
	node := uint64(bm.ID)
	isVoter := slices.Contains(st.Voters, node) || slices.Contains(st.Outgoing, node)
	b.rejoin.mu.Lock()
	if isVoter {
		if b.rejoin.wasVoter == nil {
			b.rejoin.wasVoter = map[uint64]map[int32]bool{}
		}
		if b.rejoin.wasVoter[g] == nil {
			b.rejoin.wasVoter[g] = map[int32]bool{}
		}
		b.rejoin.wasVoter[g][bm.ID] = true
	}
	voter := isVoter || b.rejoin.wasVoter[g][bm.ID] || b.meantAsVoter(g, bm.ID, st)
	b.rejoin.mu.Unlock()
	if !voter {
		// A learner, or not a member: it never voted here, so there is
		// no vote to forget (a learner's gag stays until a promotion).
		return true, nil
	}
	inc := parseIncarnation(bm.Incarnation)
	if b.host.PeerIncarnation(node) != inc {
		// Not connected as the new incarnation yet: what this leader
		// knows of the node's log is the old disk's.
		return false, nil
	}
	want := raft.Membership{Voters: slices.Clone(st.Voters), Rejoin: map[uint64]uint64{node: inc}}
	if !slices.Contains(want.Voters, node) {
		want.Voters = append(want.Voters, node)
	}
	for _, l := range st.Learners {
		if l != node {
			want.Learners = append(want.Learners, l)
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, rejoinStepTimeout)
	defer cancel()
	p, err := r.Reconfigure(ctx, want)
	if err != nil {
		return false, err
	}
	if p.Done {
		b.rejoin.mu.Lock()
		delete(b.rejoin.wasVoter[g], bm.ID)
		b.rejoin.mu.Unlock()
	}
	return p.Done, nil
}

// meantAsVoter reports whether node is to vote in group g although this
// leader did not see it as a voter (another leader demoted it): a
// partition's replicas are its voters; the metadata group's are those it
// was bootstrapped with.
func (b *Broker) meantAsVoter(g uint64, node int32, st *raft.Status) bool {
	if !slices.Contains(st.Learners, uint64(node)) {
		return false
	}
	if g == metaGroup {
		return slices.Contains(b.intendedMetaVoters(), node)
	}
	ref, ok := b.metaSM.group(g)
	if !ok {
		return false
	}
	t, ok := b.metaSM.topic(ref.topic)
	if !ok || int(ref.partition) >= len(t.Partitions) {
		return false
	}
	return slices.Contains(t.Partitions[ref.partition].Replicas, node)
}

// addMetaLearners, on the metadata leader, adds every registered broker
// the metadata group does not have as a learner (and drops removed
// brokers' learners), one step per call, and reports whether a change is
// still under way. Brokers added later get every change as learners, and
// vote only once a vote moves to them (meta_voters.go).
func (b *Broker) addMetaLearners(brokers []brokerMeta) bool {
	st := b.meta.Status()
	if !st.IsLeader() || !st.LeaderReady {
		return false
	}
	var add, drop []uint64
	for _, bm := range brokers {
		id := uint64(bm.ID)
		member := slices.Contains(st.Voters, id) || slices.Contains(st.Learners, id) || slices.Contains(st.Outgoing, id)
		switch {
		case bm.State == brokerRemoved && slices.Contains(st.Learners, id):
			drop = append(drop, id) // a removed broker's learner goes too
		case bm.State != brokerRemoved && !member:
			add = append(add, id)
		}
	}
	if len(add) == 0 && len(drop) == 0 {
		return false
	}
	learners := slices.DeleteFunc(append(slices.Clone(st.Learners), add...), func(id uint64) bool { return slices.Contains(drop, id) })
	want := raft.Membership{Voters: slices.Clone(st.Voters), Learners: learners}
	ctx, cancel := context.WithTimeout(b.ctx, rejoinStepTimeout)
	defer cancel()
	p, err := b.meta.Reconfigure(ctx, want)
	if err != nil {
		b.noteRejoinError(metaGroup, int32(add[0]), err)
		return true
	}
	if p.Done {
		b.logger.Info("metadata group learners changed", "added", add, "removed", drop)
	}
	return !p.Done
}

// noteRejoinError logs a failed step, at most every few seconds (the
// driver retries; a leader change makes every call fail once).
func (b *Broker) noteRejoinError(g uint64, node int32, err error) {
	var nl *raft.NotLeaderError
	if errors.As(err, &nl) {
		return
	}
	b.rejoin.mu.Lock()
	quiet := time.Since(b.rejoin.lastErr) < 5*time.Second
	if !quiet {
		b.rejoin.lastErr = time.Now()
	}
	b.rejoin.mu.Unlock()
	if !quiet {
		b.logger.Warn("membership step failed; retrying", "group", g, "node", node, "err", err)
	}
}

var rejoiningDesc = prometheus.NewDesc("chronik_rejoining_groups",
	"Groups a node that came back with an empty data directory still has to rejoin (from the broker registry).", []string{"node"}, nil)

// rejoinCollector reports chronik_rejoining_groups at scrape time.
type rejoinCollector struct{ b *Broker }

func (c rejoinCollector) Describe(ch chan<- *prometheus.Desc) { ch <- rejoiningDesc }

func (c rejoinCollector) Collect(ch chan<- prometheus.Metric) {
	for _, bm := range c.b.metaSM.brokers() {
		if bm.State == brokerRemoved {
			continue
		}
		ch <- prometheus.MustNewConstMetric(rejoiningDesc, prometheus.GaugeValue, float64(len(bm.Rejoin)), strconv.Itoa(int(bm.ID)))
	}
}
