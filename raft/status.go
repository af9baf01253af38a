package raft

import (
	"slices"
	"time"

	etcdraft "go.etcd.io/raft/v3"
)

// Status is a replica's published state.
type Status struct {
	Group       uint64
	ID          uint64
	Leader      uint64
	Term        uint64
	State       etcdraft.StateType
	Commit      uint64
	Applied     uint64
	LastIndex   uint64
	LeaderReady bool     // leader whose own term has an applied entry
	Voters      []uint64 // in preference order (the incoming voters of a joint configuration)
	// Learners are the members that replicate but do not vote; Outgoing
	// the voters of the outgoing configuration while the group is in
	// joint consensus (empty otherwise).
	Learners []uint64
	Outgoing []uint64
	// Gagged is set while this replica may not vote or lead (gag.go).
	Gagged bool
	ISR    []uint64 // leader only: voters caught up within the lag time
	Match  map[uint64]uint64
	// InSyncSince is, for each follower in the ISR, since when it has been
	// in it without interruption (leader only).
	InSyncSince map[uint64]time.Time
	// GaggedPeers are the members that told this leader they are gagged
	// (gagnotice.go): never a transfer target. Refilling are the
	// followers this leader sends entries again that they lost
	// (refill.go); Match counts them at what they hold. Leader only.
	GaggedPeers  []uint64
	Refilling    []uint64
	Transferee   uint64
	Failed       bool // a storage error stopped this replica
	LeaderChange time.Time
}

// idlePublishTicks is how many idle ticks pass between status refreshes.
const idlePublishTicks = 10

// publish refreshes the status readers see and wakes watchers on change.
// OnLeaderChange runs here, on the worker with r.mu held (see doc.go).
func (r *Replica) publish() {
	r.mustPublish, r.idleTicks = false, 0
	old := r.status.Load()
	var s *Status
	if r.failed {
		// A failed replica leads nothing and knows no leader, whatever
		// its stopped Raft state says (failure.go).
		s = &Status{Group: r.cfg.Group, ID: r.id, Term: r.term, State: etcdraft.StateFollower,
			Applied: r.applied, LastIndex: r.lastIndex, Voters: r.voters(), Failed: true, Gagged: r.gagged.Load()}
	} else {
		s = r.liveStatus(old)
	}
	if old != nil {
		s.LeaderChange = old.LeaderChange
	}
	if old == nil || old.Leader != s.Leader || old.Term != s.Term {
		s.LeaderChange = time.Now()
	}
	r.status.Store(s)
	if old == nil || old.Leader != s.Leader || old.Term != s.Term || old.State != s.State ||
		old.Applied != s.Applied || old.LeaderReady != s.LeaderReady || old.Transferee != s.Transferee ||
		!slices.Equal(old.ISR, s.ISR) || old.Failed != s.Failed || old.Gagged != s.Gagged ||
		!slices.Equal(old.GaggedPeers, s.GaggedPeers) || !slices.Equal(old.Refilling, s.Refilling) ||
		!slices.Equal(old.Voters, s.Voters) || !slices.Equal(old.Learners, s.Learners) || !slices.Equal(old.Outgoing, s.Outgoing) {
		ch := make(chan struct{})
		oldCh := r.watch.Swap(&ch)
		close(*oldCh)
		if old == nil || old.Leader != s.Leader || old.Term != s.Term || !slices.Equal(old.ISR, s.ISR) || old.Failed != s.Failed ||
			!slices.Equal(old.Voters, s.Voters) || !slices.Equal(old.Learners, s.Learners) || !slices.Equal(old.Outgoing, s.Outgoing) {
			r.host.leaderChanged(r, s)
		}
	}
}

// liveStatus is the status of a replica that drives Raft.
func (r *Replica) liveStatus(old *Status) *Status {
	bs := r.rn.BasicStatus()
	s := &Status{
		Group: r.cfg.Group, ID: r.id, Leader: bs.Lead, Term: bs.GetTerm(), State: bs.RaftState,
		Commit: bs.GetCommit(), Applied: r.applied, LastIndex: r.lastIndex,
		Voters: r.voters(), Transferee: bs.LeadTransferee, Gagged: r.gagged.Load(),
		Learners: append(slices.Clone(r.st.cs.GetLearners()), r.st.cs.GetLearnersNext()...),
		Outgoing: slices.Clone(r.st.cs.GetVotersOutgoing()),
	}
	s.LeaderReady = bs.RaftState == etcdraft.StateLeader && r.appliedTerm == bs.GetTerm()
	if bs.RaftState != etcdraft.StateLeader {
		return s
	}
	s.Match = map[uint64]uint64{}
	r.withProgress(func(id, match uint64) { s.Match[id] = match })
	s.GaggedPeers = r.gaggedMembers()
	for id := range r.refills {
		s.Refilling = append(s.Refilling, id)
	}
	slices.Sort(s.Refilling)
	s.ISR = r.isr(s.Match)
	s.InSyncSince = map[uint64]time.Time{}
	for _, id := range s.ISR {
		if id == r.id {
			continue
		}
		since := now()
		if old != nil && old.InSyncSince != nil && !old.InSyncSince[id].IsZero() {
			since = old.InSyncSince[id]
		}
		s.InSyncSince[id] = since
	}
	return s
}

// voters lists the configured voters in preference order.
func (r *Replica) voters() []uint64 {
	vs := r.st.cs.GetVoters()
	out := make([]uint64, 0, len(vs))
	for _, p := range r.cfg.Peers {
		if slices.Contains(vs, p) {
			out = append(out, p)
		}
	}
	for _, v := range vs {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func now() time.Time { return time.Now() }

// IsLeader reports whether the status is of a leader.
func (s *Status) IsLeader() bool { return s.State == etcdraft.StateLeader }

// StateName is the Raft role as text.
func (s *Status) StateName() string { return s.State.String() }
