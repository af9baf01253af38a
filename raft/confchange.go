package raft

import (
	"encoding/binary"
	"slices"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	clog "github.com/chronik-dev/chronik/log"
)

// Configuration changes: proposing them, matching them with their log
// entries, applying them.
//
// The context of a change this package proposes:
//
//	[u8 version 1][u64 proposal id][u8 n] n × ([u64 node][u64 incarnation])
//
// The proposal id lets the proposer find its entry (as the data header of
// other entries does); the pairs say "promoted node N at incarnation I",
// which lifts N's gag when N applies the change at that incarnation.
const confContextV1 = 1

func encodeConfContext(id uint64, promos map[uint64]uint64) []byte {
	nodes := make([]uint64, 0, len(promos))
	for n := range promos {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	nodes = nodes[:min(len(nodes), 255)]
	b := make([]byte, 0, 10+16*len(nodes))
	b = append(b, confContextV1)
	b = binary.BigEndian.AppendUint64(b, id)
	b = append(b, byte(len(nodes)))
	for _, n := range nodes {
		b = binary.BigEndian.AppendUint64(b, n)
		b = binary.BigEndian.AppendUint64(b, promos[n])
	}
	return b
}

// decodeConfContext reads a context; anything else (empty, foreign)
// yields no id and no promotions.
func decodeConfContext(b []byte) (id uint64, promos map[uint64]uint64) {
	if len(b) < 10 || b[0] != confContextV1 {
		return 0, nil
	}
	id = binary.BigEndian.Uint64(b[1:])
	n := int(b[9])
	b = b[10:]
	if len(b) < 16*n {
		return id, nil
	}
	promos = make(map[uint64]uint64, n)
	for i := 0; i < n; i++ {
		promos[binary.BigEndian.Uint64(b[16*i:])] = binary.BigEndian.Uint64(b[16*i+8:])
	}
	return id, promos
}

// entryProposalID is the proposal id an entry carries (0: none).
func entryProposalID(e *pb.Entry) uint64 {
	if e.GetType() == pb.EntryConfChangeV2 {
		var cc pb.ConfChangeV2
		if proto.Unmarshal(e.GetData(), &cc) != nil {
			return 0
		}
		id, _ := decodeConfContext(cc.GetContext())
		return id
	}
	_, id, _, _ := decodeData(e)
	return id
}

// submitConfChange queues a configuration change as a proposal; it
// succeeds once applied here, like an acks=all proposal.
func (r *Replica) submitConfChange(cc *pb.ConfChangeV2) Pending {
	p := &proposal{id: r.host.nextProposalID(), kind: clog.KindConfChangeV2,
		appended: make(chan struct{}), done: make(chan struct{})}
	cc = proto.Clone(cc).(*pb.ConfChangeV2)
	_, promos := decodeConfContext(cc.GetContext())
	cc.Context = encodeConfContext(p.id, promos)
	p.cc = cc
	if r.stopped.Load() {
		p.fail(ErrStopped)
		return p
	}
	r.enqueueUrgent(func() { r.inProps = append(r.inProps, p) })
	return p
}

// proposeConfChange hands a change to etcd raft on the leader. etcd raft
// replaces a change it refuses (another is pending) by an empty entry, so
// a change whose entry is not in this cycle's Ready was refused
// (settleConfProposals).
func (r *Replica) proposeConfChange(p *proposal) {
	r.pending[p.id] = p
	if err := r.rn.ProposeConfChange(p.cc); err != nil {
		delete(r.pending, p.id)
		bs := r.rn.BasicStatus()
		p.fail(&NotLeaderError{Leader: bs.Lead, Term: bs.GetTerm(), Why: "configuration change dropped"})
		return
	}
	r.confProposed = append(r.confProposed, p)
}

// settleConfProposals fails the changes proposed in this cycle that did
// not reach the log.
func (r *Replica) settleConfProposals() {
	for _, p := range r.confProposed {
		if r.pending[p.id] == p {
			delete(r.pending, p.id)
			p.fail(errConfChangeBusy)
		}
	}
	clear(r.confProposed)
	r.confProposed = r.confProposed[:0]
}

// applyConfChange applies a committed change at index: etcd raft's
// configuration, the history, the state file, then what it means for
// this node (its gag, its removal).
func (r *Replica) applyConfChange(index uint64, cc pb.ConfChangeI, context []byte) error {
	before := r.st.cs
	r.st.cs = r.rn.ApplyConfChange(cc)
	_, promos := decodeConfContext(context)
	hist := r.st.hist
	for n, inc := range promos {
		if slices.Contains(r.st.cs.GetVoters(), n) {
			hist.promoted[n] = inc
		}
	}
	members := confMembers(r.st.cs)
	for n := range hist.promoted {
		if !slices.Contains(members, n) {
			delete(hist.promoted, n)
		}
	}
	hist.record(index, r.st.cs)
	if err := hist.save(); err != nil {
		return err
	}
	if err := r.st.saveState(true); err != nil {
		return err
	}
	// A member that becomes a learner proves it is caught up afresh.
	for _, id := range r.st.cs.GetLearners() {
		if !slices.Contains(before.GetLearners(), id) {
			delete(r.caughtUp, id)
		}
	}
	if err := r.maybeLiftGag(r.st.cs, promos); err != nil {
		return err
	}
	if slices.Contains(confMembers(before), r.id) && !slices.Contains(members, r.id) && index >= r.replayUntil {
		r.host.logger.Info("raft replica removed from its group by a configuration change", "partition", r.cfg.Name, "index", index)
		r.removedNotice = true
	}
	r.mustPublish = true
	return nil
}

// withProgress visits the leader's progress of every member: what it
// counts the member as holding (refill.go: less than etcd raft's Match
// while the member is refilled).
func (r *Replica) withProgress(fn func(id, match uint64)) {
	r.rn.WithProgress(func(id uint64, _ etcdraft.ProgressType, pr tracker.Progress) {
		fn(id, r.effectiveMatch(id, pr.Match))
	})
}

func cloneConfState(cs *pb.ConfState) *pb.ConfState {
	if cs == nil {
		return &pb.ConfState{}
	}
	return proto.Clone(cs).(*pb.ConfState)
}

// inSync reports whether member id is connected and was at the leader's
// log end within the lag time (the ISR rule; see noteMatch).
func (r *Replica) inSync(id uint64, now time.Time) bool {
	return r.host.PeerAlive(id) && now.Sub(r.caughtUp[id]) <= r.host.cfg.LagTime
}
