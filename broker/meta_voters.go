package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/raft"
)

// Moving the metadata group's votes. The group is bootstrapped with the
// bootstrap nodes as voters and every broker added later as a learner
// (rejoin.go). Unregistering a voter (`cluster decommission`) first moves
// its vote to another broker: UnregisterBroker proposes the target voters
// (meta_voters), which the metadata state keeps, so the move survives the
// loss of whoever drives it; the metadata leader's rejoin loop takes the
// group there with Reconfigure (the new voter is caught up as a learner,
// then one joint change promotes it and demotes the old one to learner,
// left automatically; a leader that is demoted hands leadership over
// first) and reports it with meta_voters_done. The broker's learner is
// dropped once it is marked removed, like any removed broker's.
//
// A restarting node starts its metadata replica from the configuration
// its own log and configuration history hold (raft/confhistory.go); only
// a fresh replica starts from the bootstrap voters in node.json, its
// configuration at index 0, and replays the changes after it.

// minMetaVoters is the smallest metadata group a vote move may leave
// when the group was bootstrapped larger: 3 voters survive one failure,
// 2 survive none.
const minMetaVoters = 3

// metaVoteWait bounds how long UnregisterBroker waits for a vote move
// before it answers REASSIGNMENT_IN_PROGRESS (the move goes on).
const metaVoteWait = 10 * time.Second

// applyMetaVoters runs meta_voters (start a move to voters) and
// meta_voters_done (the group reached voters); it must be deterministic.
func (m *metaSM) applyMetaVoters(op string, voters []int32) metaResult {
	if msg := validReplicaList(voters); msg != "" {
		return metaResult{Err: kerr.InvalidRequest.Code, Msg: "metadata voters: " + msg}
	}
	switch op {
	case "meta_voters":
		if m.st.MetaTarget != nil && !slices.Equal(m.st.MetaTarget, voters) {
			return metaResult{Err: kerr.ReassignmentInProgress.Code,
				Msg: fmt.Sprintf("the metadata group's voters are moving to %v already", m.st.MetaTarget)}
		}
		for _, id := range voters {
			if bm := m.st.Brokers[brokerKey(id)]; bm == nil || bm.State != brokerActive {
				return metaResult{Err: kerr.BrokerNotAvailable.Code, Msg: fmt.Sprintf("broker %d is not an active registered broker", id)}
			}
		}
		m.st.MetaTarget = slices.Clone(voters)
		return metaResult{}
	case "meta_voters_done":
		if !slices.Equal(m.st.MetaTarget, voters) {
			return metaResult{Err: kerr.NoReassignmentInProgress.Code} // stale report
		}
		m.st.MetaVoters, m.st.MetaTarget = m.st.MetaTarget, nil
		return metaResult{}
	}
	return metaResult{Err: kerr.InvalidRequest.Code, Msg: "unknown metadata command " + op}
}

// metaVoterMove returns the voters of the latest finished move (nil: the
// bootstrap ones) and the target of the move under way (nil: none).
func (m *metaSM) metaVoterMove() (voters, target []int32) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.st.MetaVoters), slices.Clone(m.st.MetaTarget)
}

// intendedMetaVoters is who should vote in the metadata group: the
// target of a move under way, else the latest move's, else the bootstrap
// voters.
func (b *Broker) intendedMetaVoters() []int32 {
	voters, target := b.metaSM.metaVoterMove()
	switch {
	case target != nil:
		return target
	case voters != nil:
		return voters
	}
	if vs := b.ident().MetaVoters; len(vs) > 0 {
		return vs
	}
	return b.metaVoters()
}

// metaVoteStep, on the metadata leader, takes the group one step towards
// a target in the metadata and reports whether the move is still under
// way (false when there is none, or this node does not lead).
func (b *Broker) metaVoteStep(brokers []brokerMeta) bool {
	_, target := b.metaSM.metaVoterMove()
	if target == nil {
		return false
	}
	st := b.meta.Status()
	if !st.IsLeader() {
		return false // the leader's loop drives it
	}
	if !st.LeaderReady {
		return true // no event says when it is: look again shortly
	}
	want := raft.Membership{Voters: toUint64s(target)}
	// Everyone else stays (or becomes) a learner, removed brokers aside.
	removed := map[uint64]bool{}
	for _, bm := range brokers {
		if bm.State == brokerRemoved {
			removed[uint64(bm.ID)] = true
		}
	}
	for _, set := range [][]uint64{st.Voters, st.Outgoing, st.Learners} {
		for _, id := range set {
			if !removed[id] && !slices.Contains(want.Voters, id) && !slices.Contains(want.Learners, id) {
				want.Learners = append(want.Learners, id)
			}
		}
	}
	ctx, cancel := context.WithTimeout(b.ctx, rejoinStepTimeout)
	defer cancel()
	p, err := b.meta.Reconfigure(ctx, want)
	var nl *raft.NotLeaderError
	switch {
	case errors.As(err, &nl):
		b.logger.Info("metadata vote move handed to the new leader", "leader", nl.Leader)
		return false // the new leader's loop continues
	case err != nil:
		b.noteRejoinError(metaGroup, target[0], err)
		return true
	case !p.Done:
		if p.Step != "" && p.Step != "in progress" && p.Step != "catch up" {
			b.logger.Info("metadata vote move step", "step", p.Step, "target", target, "behind", p.Behind)
		}
		return true
	}
	pctx, pcancel := context.WithTimeout(b.ctx, 3*time.Second)
	res, err := b.metaPropose(pctx, metaCmd{Op: "meta_voters_done", Voters: target})
	pcancel()
	if err != nil {
		return true
	}
	if res.Err == 0 {
		b.logger.Info("metadata group voters moved", "voters", target, "learners", p.Learners)
	}
	return false
}

// moveMetaVote is UnregisterBroker's first half for a broker that votes
// in the metadata group: it starts moving that vote to another active
// broker (the group keeps its size) and waits for the move until ctx
// ends. It returns 0 once id no longer votes, or why not.
func (b *Broker) moveMetaVote(ctx context.Context, id int32) (int16, string) {
	_, target := b.metaSM.metaVoterMove()
	if target == nil {
		voters := toInt32s(b.meta.Status().Voters)
		next, why := b.metaVoteTarget(voters, id)
		if why != "" {
			return kerr.InvalidRequest.Code, why
		}
		res, err := b.metaPropose(ctx, metaCmd{Op: "meta_voters", Voters: next})
		if err != nil {
			return kerr.RequestTimedOut.Code, err.Error()
		}
		if res.Err != 0 && res.Err != kerr.ReassignmentInProgress.Code {
			return res.Err, res.Msg
		}
		b.logger.Info("moving a metadata vote", "from", id, "voters", voters, "target", next)
		b.leaderEvents.fire()
	} else if slices.Contains(target, id) {
		return kerr.ReassignmentInProgress.Code, fmt.Sprintf("the metadata group's voters are moving to %v; retry once that is done", target)
	}
	// Answer before a client's request timeout; the caller retries.
	ctx, cancel := context.WithTimeout(ctx, metaVoteWait)
	defer cancel()
	for {
		changed := b.leaderEvents.wait()
		st := b.meta.Status()
		_, target = b.metaSM.metaVoterMove()
		if target == nil && !slices.Contains(st.Voters, uint64(id)) && !slices.Contains(st.Outgoing, uint64(id)) {
			return 0, ""
		}
		select {
		case <-changed:
		case <-time.After(rejoinPoll):
		case <-ctx.Done():
			return kerr.ReassignmentInProgress.Code, fmt.Sprintf("broker %d's metadata vote is moving (target voters %v); retry to follow it", id, target)
		}
	}
}

// metaVoteTarget is the metadata voters without id, plus the active,
// connected broker that is not a voter yet and best replaces it (same
// rack first, then the lowest id), or why there is none that is safe.
func (b *Broker) metaVoteTarget(voters []int32, id int32) ([]int32, string) {
	gone, _ := b.metaSM.broker(id)
	var pick *brokerMeta
	for _, bm := range b.metaSM.brokers() {
		if bm.ID == id || bm.State != brokerActive || slices.Contains(voters, bm.ID) || !b.peerUp(bm.ID) {
			continue
		}
		if pick == nil || (bm.Rack == gone.Rack && pick.Rack != gone.Rack) {
			c := bm
			pick = &c
		}
	}
	next := slices.DeleteFunc(slices.Clone(voters), func(v int32) bool { return v == id })
	if pick != nil {
		next = append(next, pick.ID)
	} else if len(next) < min(len(voters), minMetaVoters) {
		return nil, fmt.Sprintf("broker %d votes in the cluster metadata group %v and no other active broker is up to take that vote; "+
			"without it %d voter(s) would be left, which cannot survive the loss of one: add a broker first (cluster add-node)", id, voters, len(next))
	}
	return next, b.checkMetaTarget(voters, next)
}

func (b *Broker) peerUp(n int32) bool { return n == b.cfg.NodeID || b.host.PeerAlive(uint64(n)) }

// checkMetaTarget says why the metadata group must not move from voters
// to next ("" when it may): every new voter must be an active broker that
// is up, the group must not shrink below minMetaVoters (or its size, if
// smaller), and the joint change needs a majority of both sets up.
func (b *Broker) checkMetaTarget(voters, next []int32) string {
	if msg := validReplicaList(next); msg != "" {
		return "metadata voters: " + msg
	}
	for _, n := range minus(next, voters) {
		if bm, ok := b.metaSM.broker(n); !ok || bm.State != brokerActive || !b.peerUp(n) {
			return fmt.Sprintf("broker %d cannot take a metadata vote: it is not an active broker that is up", n)
		}
	}
	if len(next) < min(len(voters), minMetaVoters) {
		return fmt.Sprintf("the metadata group would shrink from %d voters to %d, which cannot survive the loss of one", len(voters), len(next))
	}
	for _, set := range [][]int32{voters, next} {
		live := 0
		for _, v := range set {
			if b.peerUp(v) {
				live++
			}
		}
		if live < len(set)/2+1 {
			return fmt.Sprintf("moving the metadata votes needs a majority of voters %v up; only %d are (bring the others back first)", set, live)
		}
	}
	return ""
}

// reassignMetaVoters is AlterPartitionReassignments of the metadata group
// (__cluster_metadata-0): it starts a vote move to target, after the
// checks above. A move cannot be cancelled, only followed by another.
func (b *Broker) reassignMetaVoters(ctx context.Context, target []int32) (int16, string) {
	if target == nil {
		return kerr.InvalidRequest.Code, "a metadata vote move cannot be cancelled; reassign the metadata group again once it is done"
	}
	if _, moving := b.metaSM.metaVoterMove(); moving != nil {
		if slices.Equal(moving, target) {
			return 0, ""
		}
		return kerr.ReassignmentInProgress.Code, fmt.Sprintf("the metadata group's voters are moving to %v already", moving)
	}
	voters := toInt32s(b.meta.Status().Voters)
	if sameSet(voters, target) {
		return 0, ""
	}
	if why := b.checkMetaTarget(voters, target); why != "" {
		return kerr.InvalidReplicaAssignment.Code, why
	}
	res, err := b.metaPropose(ctx, metaCmd{Op: "meta_voters", Voters: target})
	if err != nil {
		return kerr.RequestTimedOut.Code, "metadata change did not complete: " + err.Error()
	}
	if res.Err == 0 {
		b.logger.Info("moving metadata votes", "voters", voters, "target", target)
		b.leaderEvents.fire()
	}
	return res.Err, res.Msg
}
