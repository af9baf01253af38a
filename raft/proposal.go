package raft

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	clog "github.com/chronik-dev/chronik/log"
)

// Errors returned by Propose and TransferLeadership.
var (
	ErrStopped      = errors.New("raft: replica stopped")
	ErrTransferFail = errors.New("raft: leadership transfer failed")
)

// NotLeaderError says this replica cannot take proposals; Leader is the
// known leader (0 when none).
type NotLeaderError struct {
	Leader uint64
	Term   uint64
	Why    string
}

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("raft: not the leader (leader %d, term %d): %s", e.Leader, e.Term, e.Why)
}

// Result is what a proposal became.
type Result struct {
	Index      uint64
	Term       uint64
	BaseOffset int64
	Count      int32
}

type proposal struct {
	id      uint64
	kind    clog.Kind
	payload []byte
	cc      *pb.ConfChangeV2 // a configuration change (confchange.go)
	guard   Guard            // SubmitGuarded; After is dropped once proposed
	res     Result
	// appended is closed once the entry is in the local log (and synced
	// under the always policy); done once it is applied or has failed.
	// Each outcome is written once, by the worker, before its channel is
	// closed, and never again: a reader woken by appended reads appendErr,
	// one woken by done reads err. (A later failure of an appended entry
	// must not rewrite the answer an acks=1 caller is reading.)
	appended  chan struct{}
	done      chan struct{}
	appendErr error
	err       error
	// Worker-owned: which channels are closed.
	isAppended bool
	finished   bool
}

// markAppended closes appended once.
func (p *proposal) markAppended() {
	if !p.isAppended {
		p.isAppended = true
		close(p.appended)
	}
}

// succeed finishes an applied proposal.
func (p *proposal) succeed() {
	if p.finished {
		return
	}
	p.markAppended()
	p.finished = true
	close(p.done)
}

// fail finishes a proposal with err; if it was not appended yet, the
// append fails with err too.
func (p *proposal) fail(err error) {
	if p.finished {
		return
	}
	if !p.isAppended {
		p.appendErr = err
		p.markAppended()
	}
	p.finished = true
	p.err = err
	close(p.done)
}

type transferWait struct {
	to   uint64
	term uint64 // this node's term when it asked Raft for the transfer
	once sync.Once
	done chan error
	// endedAt is when the outcome was known (unix ns), written in end
	// before done: a waiter that is scheduled late still reports the
	// transfer's own duration (Transfer.EndedAt).
	endedAt atomic.Int64
}

// end reports the outcome, once: the worker and the transport's receiver
// (watchLeaderMsg) may both see the transfer end.
func (w *transferWait) end(err error) {
	w.once.Do(func() {
		w.endedAt.Store(time.Now().UnixNano())
		w.done <- err
	})
}

// setTransfers replaces r.transfers and what the receiver watches for
// (watchLeaderMsg). The worker calls it with r.mu held.
func (r *Replica) setTransfers(ws []*transferWait) {
	r.transfers = ws
	r.watchMu.Lock()
	r.watching = append(r.watching[:0], ws...)
	r.watchMu.Unlock()
	r.nWatching.Store(int32(len(ws)))
}

// watchLeaderMsg ends a transfer as soon as its target's first message as
// leader of a newer term arrives (an append, heartbeat or snapshot: only a
// leader sends those in its term), on the transport's receiver, before a
// worker steps it. The step may wait: when this node voted for the target
// its replica sits in the fsync round of that vote, and the target may
// have won with the other voter's answer first. Raft learns the same from
// the message moments later; held proposals are answered then.
func (r *Replica) watchLeaderMsg(m *pb.Message) {
	switch m.GetType() {
	case pb.MsgApp, pb.MsgHeartbeat, pb.MsgSnap:
	default:
		return
	}
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	for _, w := range r.watching {
		if w.to == m.GetFrom() && m.GetTerm() > w.term {
			w.end(nil)
		}
	}
}

// Propose appends an entry. With commit false it returns once the entry is
// in the local log (Kafka acks=1); with commit true once it is committed and
// applied (acks=all). A proposal that was appended keeps waiting across a
// leadership change: it succeeds if the new leader commits it and fails
// with NotLeaderError if its index is overwritten.
func (r *Replica) Propose(ctx context.Context, kind clog.Kind, payload []byte, commit bool) (Result, error) {
	p := r.Submit(kind, payload)
	return r.Wait(ctx, p, commit)
}

// Pending is a submitted proposal.
type Pending = *proposal

// Submit queues a proposal without waiting. Submissions from one goroutine
// are proposed in order, which idempotent producers rely on.
func (r *Replica) Submit(kind clog.Kind, payload []byte) Pending {
	return r.SubmitGuarded(kind, payload, Guard{})
}

// Guard conditions a proposal (SubmitGuarded). The broker checks an
// idempotent producer's sequence against the state it sees under a given
// leader term and chains each batch to the one before it; a guard makes
// Raft refuse the batch when that check no longer holds, so the log never
// holds a batch whose predecessor is missing.
type Guard struct {
	// Term, when set, fails the proposal (NotLeaderError) unless this
	// replica still leads in that term when it is proposed.
	Term uint64
	// After, when set, fails the proposal with After's error if After
	// (a proposal of this replica) failed before this one was proposed.
	// With Term set too, one that fails later, once both are in the log,
	// takes this one with it: both go with the same term's log suffix.
	After Pending
}

// SubmitGuarded is Submit with a Guard checked when Raft proposes it.
func (r *Replica) SubmitGuarded(kind clog.Kind, payload []byte, g Guard) Pending {
	p := &proposal{id: r.host.nextProposalID(), kind: kind, payload: payload, guard: g,
		appended: make(chan struct{}), done: make(chan struct{})}
	if r.stopped.Load() {
		p.fail(ErrStopped)
		return p
	}
	r.enqueue(func() { r.inProps = append(r.inProps, p) })
	return p
}

// Err is the error a finished proposal failed with: nil when it was
// applied or has not finished.
func Err(p Pending) error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Wait waits for a submitted proposal (see Propose).
func (r *Replica) Wait(ctx context.Context, p Pending, commit bool) (Result, error) {
	ch, errp := p.appended, &p.appendErr
	if commit {
		ch, errp = p.done, &p.err
	}
	select {
	case <-ch:
		if err := *errp; err != nil {
			return Result{}, err
		}
		return p.res, nil
	case <-ctx.Done():
		if commit {
			r.forget(p)
		}
		return Result{}, ctx.Err()
	}
}

// forget drops a proposal that nobody waits for anymore and that never
// reached the log (a forwarded proposal the leader dropped).
func (r *Replica) forget(p *proposal) {
	r.enqueue(func() {
		r.inOps = append(r.inOps, func() {
			if r.pending[p.id] == p {
				delete(r.pending, p.id)
				p.fail(context.DeadlineExceeded)
			}
		})
	})
}

// Done reports whether a proposal has finished (applied or failed).
func Done(p Pending) <-chan struct{} { return p.done }

// TransferLeadership asks Raft to hand leadership to node to and waits
// until it has moved, failed, or ctx ends. A transfer to a member that
// reports being gagged (gagnotice.go) fails at once with ErrTransferFail:
// it would refuse leadership.
func (r *Replica) TransferLeadership(ctx context.Context, to uint64) error {
	return r.BeginTransfer(to).Wait(ctx)
}

// Transfer is a leadership transfer in progress (BeginTransfer).
type Transfer struct{ w *transferWait }

// BeginTransfer starts what TransferLeadership does and returns at once,
// so a caller can do other work (log it) while the hand-over is in flight.
func (r *Replica) BeginTransfer(to uint64) Transfer {
	w := &transferWait{to: to, done: make(chan error, 1)}
	if r.halted.Load() {
		w.end(ErrStopped)
		return Transfer{w}
	}
	r.enqueueUrgent(func() {
		r.inOps = append(r.inOps, func() {
			if r.raftState != etcdraft.StateLeader {
				if r.lead == to {
					w.end(nil)
				} else {
					w.end(&NotLeaderError{Leader: r.lead, Term: r.term, Why: "transfer target is not the leader"})
				}
				return
			}
			if _, gagged := r.peerGagged(to); gagged {
				w.end(fmt.Errorf("%w: node %d is gagged (it lost its disk and is not promoted at its new incarnation yet)", ErrTransferFail, to))
				return
			}
			w.term = r.rn.BasicStatus().GetTerm()
			r.setTransfers(append(r.transfers, w))
			r.rn.TransferLeader(to)
		})
	})
	return Transfer{w}
}

// Wait waits until the transfer has ended (nil once leadership is with its
// target) or ctx ends; the transfer itself goes on in Raft after ctx ends.
// EndedAt is when the transfer's outcome was known, once Wait returned
// it (zero before).
func (t Transfer) EndedAt() time.Time {
	if ns := t.w.endedAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (t Transfer) Wait(ctx context.Context) error {
	select {
	case err := <-t.w.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Campaign makes this replica stand for election now (not while the node
// is stopping or the replica is gagged).
func (r *Replica) Campaign() {
	r.enqueue(func() {
		r.inOps = append(r.inOps, func() {
			if !r.host.stopping.Load() && !r.gagged.Load() {
				r.rn.Campaign()
			}
		})
	})
}

func (r *Replica) propose(p *proposal) {
	// Read Raft's live state: messages stepped earlier in this round may
	// have changed it since the last Ready updated r.raftState.
	bs := r.rn.BasicStatus()
	lead, term := bs.Lead, bs.GetTerm()
	if p.cc != nil {
		switch {
		case bs.RaftState != etcdraft.StateLeader:
			p.fail(&NotLeaderError{Leader: lead, Term: term, Why: "configuration changes go through the leader"})
		case bs.LeadTransferee != 0:
			p.fail(errConfChangeBusy)
		default:
			r.proposeConfChange(p)
		}
		return
	}
	if bs.RaftState == etcdraft.StateLeader && (bs.LeadTransferee != 0 || len(r.held) > 0) {
		// etcd raft drops proposals during a transfer; hold them until it
		// ends, then propose them or send the client to the new leader.
		// Behind held ones too: submission order is log order.
		r.held = append(r.held, p)
		return
	}
	if a := p.guard.After; a != nil {
		p.guard.After = nil // keep no chain of finished proposals alive
		if err := Err(a); err != nil {
			p.fail(err)
			return
		}
	}
	if t := p.guard.Term; t != 0 && (bs.RaftState != etcdraft.StateLeader || term != t) {
		p.fail(&NotLeaderError{Leader: lead, Term: term, Why: fmt.Sprintf("leadership changed since term %d, when the proposal was checked", t)})
		return
	}
	if bs.RaftState != etcdraft.StateLeader {
		if r.cfg.ForwardProposals && lead != 0 {
			// The leader may drop a forwarded proposal silently; the
			// caller's deadline and cancel clean it up.
			r.pending[p.id] = p
			if err := r.rn.Propose(encodeData(p.kind, p.id, p.payload)); err != nil {
				delete(r.pending, p.id)
				p.fail(&NotLeaderError{Leader: lead, Term: term, Why: "forwarding failed"})
			}
			return
		}
		p.fail(&NotLeaderError{Leader: lead, Term: term, Why: "follower"})
		return
	}
	r.pending[p.id] = p
	if err := r.rn.Propose(encodeData(p.kind, p.id, p.payload)); err != nil {
		delete(r.pending, p.id)
		if errors.Is(err, etcdraft.ErrProposalDropped) {
			bs = r.rn.BasicStatus()
			p.fail(&NotLeaderError{Leader: bs.Lead, Term: bs.GetTerm(), Why: "proposal dropped"})
			return
		}
		p.fail(err)
	}
}

func (r *Replica) proposeHeld() {
	if len(r.held) == 0 {
		return
	}
	if bs := r.rn.BasicStatus(); bs.RaftState == etcdraft.StateLeader && bs.LeadTransferee != 0 {
		return
	}
	held := r.held
	r.held = nil
	for _, p := range held {
		r.propose(p)
	}
}

// noteAppended matches this node's proposals with their log positions and
// fails proposals whose entries a new leader overwrote.
func (r *Replica) noteAppended(out []clog.Entry) {
	first := out[0].Index
	keep := r.waiting[:0]
	for _, p := range r.waiting {
		if p.res.Index >= first {
			p.fail(&NotLeaderError{Leader: r.lead, Term: r.term, Why: "entry overwritten by a new leader"})
			continue
		}
		keep = append(keep, p)
	}
	r.waiting = keep
	for i := range out {
		e := &out[i]
		if e.Kind == clog.KindConfChange || e.Kind == clog.KindConfChangeV2 {
			r.confIndex = max(r.confIndex, e.Index)
		}
		if len(r.pending) == 0 {
			continue
		}
		re := r.rdEntry(e.Index)
		if re == nil {
			continue
		}
		id := entryProposalID(re)
		p := r.pending[id]
		if p == nil {
			continue
		}
		delete(r.pending, id)
		p.res = Result{Index: e.Index, Term: e.Term, BaseOffset: e.BaseOffset, Count: e.Count}
		r.waiting = append(r.waiting, p)
		r.unsynced = append(r.unsynced, p)
	}
}

// rdEntry finds the raft entry with index in the Ready being handled.
func (r *Replica) rdEntry(index uint64) *pb.Entry {
	ents := r.curEntries
	if len(ents) == 0 {
		return nil
	}
	i := index - ents[0].GetIndex()
	if i >= uint64(len(ents)) {
		return nil
	}
	return ents[i]
}

func (r *Replica) expireOrphans() {
	if len(r.waiting) == 0 || r.raftState == etcdraft.StateLeader || r.leaderLostAt.IsZero() {
		return
	}
	since := time.Since(r.leaderLostAt)
	if (r.lead == 0 && since > orphanWaitNoLeader) || since > orphanWait {
		for _, p := range r.waiting {
			p.fail(&NotLeaderError{Leader: r.lead, Term: r.term, Why: "leadership lost; outcome unknown"})
		}
		r.waiting = nil
	}
}

func (r *Replica) checkTransfers() {
	if len(r.transfers) == 0 {
		return
	}
	bs := r.rn.BasicStatus()
	keep := r.transfers[:0]
	for _, w := range r.transfers {
		switch {
		case bs.RaftState != etcdraft.StateLeader && bs.Lead == w.to:
			w.end(nil)
		case bs.RaftState != etcdraft.StateLeader && bs.Lead != 0:
			w.end(fmt.Errorf("%w: node %d became leader instead", ErrTransferFail, bs.Lead))
		case bs.RaftState == etcdraft.StateLeader && bs.LeadTransferee == 0:
			w.end(fmt.Errorf("%w: transfer to %d aborted", ErrTransferFail, w.to))
		default:
			keep = append(keep, w)
		}
	}
	if len(keep) != len(r.transfers) {
		r.setTransfers(keep)
	}
}
