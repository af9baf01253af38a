package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Membership is the configuration a group should reach (Reconfigure).
type Membership struct {
	// Voters are the voting members wanted, in preference order.
	Voters []uint64
	// Learners are members that replicate without voting.
	Learners []uint64
	// Rejoin names nodes that lost their disk and came back under the
	// same id with a new data directory incarnation (node -> incarnation):
	// each is demoted to learner, caught up, and promoted again by a change
	// that names the incarnation, which lifts its gag (gag.go).
	Rejoin map[uint64]uint64
}

// Progress is where a group stands on its way to a Membership.
type Progress struct {
	// Done is set once the group's configuration is the one wanted.
	Done bool
	// Step names what Reconfigure did or waits for: "done",
	// "in progress" (a configuration change or a leadership transfer of
	// the group is not finished yet), "leave joint", "add learner",
	// "demote", "repromote" (a rejoining voter promoted again where it
	// is), "catch up", "change" (one member), "joint" (several),
	// "transfer".
	Step string
	// Voters, Learners and Outgoing are the configuration after the step
	// (Outgoing: the outgoing voters of a joint configuration), sorted.
	Voters, Learners, Outgoing []uint64
	// Behind is, for each learner to be promoted that is not caught up
	// yet, how many entries it trails the leader's log.
	Behind map[uint64]uint64
}

// ErrBadMembership says a Membership asked of Reconfigure is malformed
// or cannot be reached safely; the error says why.
var ErrBadMembership = errors.New("raft: membership refused")

// errConfChangeBusy fails a configuration change that etcd raft refused
// because another one is pending (Reconfigure reports "in progress").
var errConfChangeBusy = errors.New("raft: a configuration change is pending")

// Reconfigure moves the group one safe step towards want and returns
// where it is; the caller calls it again until Progress.Done (a step
// that waits returns at once: the caller paces its calls, for example on
// Changed). Each step is one configuration change (ConfChangeV2),
// proposed and waited for until it is applied on this leader:
//
//  1. a joint configuration left half-done is left;
//  2. a wanted member missing from the configuration is added as a
//     learner (one per step);
//  3. the voters named in want.Rejoin that were not promoted at that
//     incarnation yet are demoted to learners (a joint change); where
//     that would leave fewer than a quorum of the voters trusted (a
//     2-voter group), a single such voter is instead promoted again in
//     place once caught up ("repromote"), and several are refused (rejoin
//     them one at a time). A voter promoted at its incarnation that still
//     reports being gagged after applying the latest change (a snapshot
//     covered the promotion) is promoted again in place too, and one that
//     has not applied its promotion yet is waited for ("catch up");
//  4. until every learner to be promoted is caught up (the ISR rule:
//     connected and at the leader's log end within Config.LagTime),
//     Reconfigure returns at once with how far behind they are;
//  5. one change promotes those learners, removes the members not wanted
//     and demotes the voters wanted as learners (joint, left
//     automatically, when more than one member changes); its context
//     names each promoted node with its incarnation (from want.Rejoin, or
//     as the node stated it), which lifts the node's gag;
//  6. if this leader itself is to go (or rejoin), it hands leadership to
//     a caught-up voter that stays and returns a NotLeaderError naming
//     it: the caller retries there, where the last change removes it.
//
// It is idempotent: on a new leader after a crash or a leadership change
// it picks up from the configuration the log holds. A configuration
// change or leadership transfer still pending in the group is reported
// as Step "in progress" with no error. A follower returns a
// NotLeaderError.
func (r *Replica) Reconfigure(ctx context.Context, want Membership) (Progress, error) {
	if err := want.validate(); err != nil {
		return Progress{}, err
	}
	v, err := r.memberView(ctx)
	if err != nil {
		return Progress{}, err
	}
	if !v.leader {
		return v.progress(""), &NotLeaderError{Leader: v.lead, Term: v.term, Why: "membership changes go through the leader"}
	}
	st := planStep(r.id, &v, &want, r.host.PeerIncarnation)
	p := v.progress(st.name)
	p.Behind = st.behind
	switch {
	case st.err != nil:
		return p, st.err
	case st.done:
		p.Done = true
		return p, nil
	case st.transferTo != 0:
		r.host.logger.Info("raft membership: handing leadership over before this node leaves the voters",
			"partition", r.cfg.Name, "to", st.transferTo)
		// A leader that has left the voters may never hear of its
		// successor (nobody sends to a non-member): bound the wait.
		timeout := 3 * time.Duration(r.host.cfg.ElectionTicks) * r.host.cfg.TickInterval
		tctx, cancel := context.WithTimeout(ctx, timeout)
		err := r.TransferLeadership(tctx, st.transferTo)
		cancel()
		if ctx.Err() != nil {
			return p, ctx.Err()
		}
		if err != nil && r.Status().IsLeader() {
			return p, nil // not moved yet: the caller calls again
		}
		return p, &NotLeaderError{Leader: st.transferTo, Term: v.term, Why: "leadership handed over: this node leaves the voters"}
	case st.cc == nil:
		return p, nil
	}
	r.host.logger.Info("raft membership change", "partition", r.cfg.Name, "step", st.name, "change", describeChange(st.cc))
	if _, err := r.Wait(ctx, r.submitConfChange(st.cc), true); err != nil {
		if errors.Is(err, errConfChangeBusy) {
			p.Step = "in progress"
			return p, nil
		}
		return p, err
	}
	v, err = r.memberView(ctx)
	if err != nil {
		return p, err
	}
	p = v.progress(st.name)
	if v.leader {
		p.Done = planStep(r.id, &v, &want, r.host.PeerIncarnation).done
	}
	return p, nil
}

func (m *Membership) validate() error {
	if len(m.Voters) == 0 {
		return fmt.Errorf("%w: no voters", ErrBadMembership)
	}
	seen := map[uint64]bool{}
	for _, id := range append(slices.Clone(m.Voters), m.Learners...) {
		if id == 0 || id >= 1<<16 {
			return fmt.Errorf("%w: node id %d out of range", ErrBadMembership, id)
		}
		if seen[id] {
			return fmt.Errorf("%w: node %d named twice", ErrBadMembership, id)
		}
		seen[id] = true
	}
	for id := range m.Rejoin {
		if !slices.Contains(m.Voters, id) {
			return fmt.Errorf("%w: node %d rejoins but is not a wanted voter", ErrBadMembership, id)
		}
	}
	return nil
}

// memberView is what Reconfigure plans with, taken on the worker.
type memberView struct {
	leader, pending bool
	lead, term      uint64
	cs              *pb.ConfState
	lastIndex       uint64
	match           map[uint64]uint64
	caughtUp        map[uint64]bool
	promoted        map[uint64]uint64
	// gagged holds the members that report being gagged, with the index
	// they had applied then; lastConf is the index of the latest applied
	// configuration change.
	gagged   map[uint64]uint64
	lastConf uint64
}

func (r *Replica) memberView(ctx context.Context) (memberView, error) {
	if r.halted.Load() || r.stopped.Load() {
		return memberView{}, ErrStopped
	}
	ch := make(chan memberView, 1)
	r.enqueueUrgent(func() { r.inOps = append(r.inOps, func() { ch <- r.memberViewLocked() }) })
	select {
	case v := <-ch:
		return v, nil
	case <-ctx.Done():
		return memberView{}, ctx.Err()
	}
}

// memberViewLocked runs on the worker.
func (r *Replica) memberViewLocked() memberView {
	bs := r.rn.BasicStatus()
	v := memberView{
		lead: bs.Lead, term: bs.GetTerm(), cs: cloneConfState(r.st.cs), lastIndex: r.lastIndex,
		match: map[uint64]uint64{}, caughtUp: map[uint64]bool{}, promoted: map[uint64]uint64{},
		gagged: map[uint64]uint64{}, lastConf: r.st.hist.lastIndex(),
	}
	for n, inc := range r.st.hist.promoted {
		v.promoted[n] = inc
	}
	v.leader = r.raftState == etcdraft.StateLeader && bs.RaftState == etcdraft.StateLeader
	if !v.leader {
		return v
	}
	// Before the leader applied an entry of its own term, etcd raft
	// refuses configuration changes (one may be pending in the log).
	v.pending = r.appliedTerm != bs.GetTerm() || r.applied < r.confIndex || bs.LeadTransferee != 0
	for _, id := range r.gaggedMembers() {
		v.gagged[id], _ = r.peerGagged(id)
	}
	now := now()
	r.withProgress(func(id, match uint64) {
		v.match[id] = match
		if id == r.id {
			v.caughtUp[id] = true
			return
		}
		r.noteMatch(id, match, now)
		v.caughtUp[id] = r.inSync(id, now)
	})
	return v
}

// holds reports whether member id may be promoted: in sync, and holding
// the latest configuration change. In sync alone is not enough: a member
// counted at an old disk's Match (etcd raft's, before the refill's probe
// is answered) lacks the change that made it a learner.
func (v *memberView) holds(id uint64) bool {
	return v.caughtUp[id] && v.match[id] >= v.lastConf
}

func (v *memberView) progress(step string) Progress {
	return Progress{Step: step, Voters: sortedIDs(v.cs.GetVoters()),
		Learners: sortedIDs(append(slices.Clone(v.cs.GetLearners()), v.cs.GetLearnersNext()...)),
		Outgoing: sortedIDs(v.cs.GetVotersOutgoing())}
}

// plan is the next step towards a Membership.
type plan struct {
	name       string
	cc         *pb.ConfChangeV2 // the change to propose
	transferTo uint64           // hand leadership here first
	behind     map[uint64]uint64
	done       bool
	err        error
}

// planStep decides the next step for the leader self (see Reconfigure);
// incarnation says what a node stated as its incarnation.
func planStep(self uint64, v *memberView, want *Membership, incarnation func(uint64) uint64) plan {
	cs := v.cs
	if v.pending {
		return plan{name: "in progress"}
	}
	if len(cs.GetVotersOutgoing()) > 0 {
		// An empty change leaves the joint configuration.
		return plan{name: "leave joint", cc: &pb.ConfChangeV2{}}
	}
	members := confMembers(cs)
	wanted := append(slices.Clone(want.Voters), want.Learners...)
	for _, id := range wanted {
		if !slices.Contains(members, id) {
			return plan{name: "add learner", cc: confChange(nil, change(pb.ConfChangeAddLearnerNode, id))}
		}
	}
	// Rejoining: named in want.Rejoin and not promoted at that
	// incarnation yet, or promoted but still gagged after applying the
	// promotion (a snapshot covered it: the context never reached the
	// node, see gag.go). A member that reports being gagged but has not
	// applied the latest change yet is left to apply it.
	var rejoining, stuck []uint64
	for id, inc := range want.Rejoin {
		got, ok := v.promoted[id]
		applied, gagged := v.gagged[id]
		switch {
		case !ok || got != inc:
			rejoining = append(rejoining, id)
		case gagged && slices.Contains(cs.GetVoters(), id):
			rejoining = append(rejoining, id)
			if applied >= v.lastConf {
				stuck = append(stuck, id)
			}
		}
	}
	slices.Sort(rejoining)
	slices.Sort(stuck)
	// Promoting again in place a node that states another incarnation
	// would not lift its gag either: leave it until it states the one
	// wanted (a node that just restarted may not have yet).
	stuck = slices.DeleteFunc(stuck, func(id uint64) bool {
		got := incarnation(id)
		return got != 0 && got != want.Rejoin[id]
	})
	// A voter that must go (or rejoin) and leads hands over first, to a
	// caught-up voter that stays and can take leadership.
	handOver := func() plan {
		for _, id := range want.Voters {
			_, gagged := v.gagged[id]
			if id != self && slices.Contains(cs.GetVoters(), id) && v.caughtUp[id] && !slices.Contains(rejoining, id) && !gagged {
				return plan{name: "transfer", transferTo: id}
			}
		}
		for _, id := range cs.GetVoters() {
			if id != self && !slices.Contains(rejoining, id) {
				return plan{name: "transfer"} // wait for a voter to catch up
			}
		}
		return plan{name: "transfer", err: fmt.Errorf("%w: the leader %d rejoins and no other voter of %v holds the log",
			ErrBadMembership, self, cs.GetVoters())}
	}
	if slices.Contains(rejoining, self) && slices.Contains(cs.GetVoters(), self) {
		return handOver()
	}
	var demote, inPlace []uint64
	applying := map[uint64]uint64{}
	for _, id := range rejoining {
		promoted := v.promoted[id] == want.Rejoin[id]
		switch {
		case !slices.Contains(cs.GetVoters(), id):
			// A learner: promoted below once caught up.
		case slices.Contains(stuck, id):
			inPlace = append(inPlace, id)
		case promoted:
			applying[id] = v.lastConf - min(v.lastConf, v.gagged[id])
		default:
			demote = append(demote, id)
		}
	}
	if len(demote) > 0 {
		trusted := 0
		for _, id := range cs.GetVoters() {
			if !slices.Contains(rejoining, id) {
				trusted++
			}
		}
		q := len(cs.GetVoters())/2 + 1
		switch {
		case trusted >= q:
			var chs []*pb.ConfChangeSingle
			for _, id := range demote {
				chs = append(chs, change(pb.ConfChangeAddLearnerNode, id))
			}
			cc := confChange(nil, chs...)
			cc.Transition = pb.ConfChangeTransitionJointImplicit.Enum()
			return plan{name: "demote", cc: cc}
		case len(rejoining) == 1:
			// Too few voters to demote it (a 2-voter group): it stays a
			// voter, gagged, and is promoted again where it is once it
			// holds the log; its acks are true meanwhile, and the leader
			// refills it (refill.go).
			inPlace = demote
		default:
			return plan{name: "demote", err: fmt.Errorf("%w: rejoining %v would leave %d trusted voters of %v, a quorum needs %d: rejoin them one at a time",
				ErrBadMembership, demote, trusted, cs.GetVoters(), q)}
		}
	}
	if len(inPlace) > 0 {
		// One at a time: a change of more than one member is joint.
		id := inPlace[0]
		if !v.holds(id) {
			return plan{name: "catch up", behind: map[uint64]uint64{id: v.lastIndex - min(v.lastIndex, v.match[id])}}
		}
		return plan{name: "repromote", cc: confChange(map[uint64]uint64{id: want.Rejoin[id]}, change(pb.ConfChangeAddNode, id))}
	}
	var promote []uint64
	behind := map[uint64]uint64{}
	for _, id := range cs.GetLearners() {
		if !slices.Contains(want.Voters, id) {
			continue
		}
		promote = append(promote, id)
		if !v.holds(id) {
			behind[id] = v.lastIndex - min(v.lastIndex, v.match[id])
		}
	}
	if len(behind) > 0 {
		return plan{name: "catch up", behind: behind}
	}
	var chs []*pb.ConfChangeSingle
	promos := map[uint64]uint64{}
	for _, id := range promote {
		chs = append(chs, change(pb.ConfChangeAddNode, id))
		if inc, ok := want.Rejoin[id]; ok {
			promos[id] = inc
		} else {
			promos[id] = incarnation(id)
		}
	}
	for _, id := range cs.GetVoters() {
		switch {
		case id == self || slices.Contains(want.Voters, id):
		case slices.Contains(want.Learners, id):
			chs = append(chs, change(pb.ConfChangeAddLearnerNode, id))
		default:
			chs = append(chs, change(pb.ConfChangeRemoveNode, id))
		}
	}
	for _, id := range cs.GetLearners() {
		if !slices.Contains(wanted, id) {
			chs = append(chs, change(pb.ConfChangeRemoveNode, id))
		}
	}
	if len(chs) > 0 {
		name := "change"
		if len(chs) > 1 {
			name = "joint" // etcd raft enters joint consensus, left automatically
		}
		return plan{name: name, cc: confChange(promos, chs...)}
	}
	if !slices.Contains(want.Voters, self) || slices.Contains(rejoining, self) {
		return handOver()
	}
	if len(applying) > 0 {
		// Promoted, but it said it was gagged before applying that.
		return plan{name: "catch up", behind: applying}
	}
	return plan{name: "done", done: true}
}

func change(t pb.ConfChangeType, id uint64) *pb.ConfChangeSingle {
	return &pb.ConfChangeSingle{Type: t.Enum(), NodeId: new(id)}
}

// confChange builds a change whose context names promos; the proposal id
// goes into the context when it is submitted.
func confChange(promos map[uint64]uint64, chs ...*pb.ConfChangeSingle) *pb.ConfChangeV2 {
	return &pb.ConfChangeV2{Changes: chs, Context: encodeConfContext(0, promos)}
}

func describeChange(cc *pb.ConfChangeV2) string {
	if len(cc.GetChanges()) == 0 {
		return "leave joint configuration"
	}
	s := ""
	for i, ch := range cc.GetChanges() {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%v %d", ch.GetType(), ch.GetNodeId())
	}
	return s
}

func sortedIDs(ids []uint64) []uint64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}
