package raft

import (
	"errors"
	"fmt"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	clog "github.com/chronik-dev/chronik/log"
)

// The Ready cycle. A worker holding r.mu drains the inbox and handles one
// Ready in three phases so the host can share fsyncs between replicas:
// prepare (step, propose, write), then sync, then finish (send, apply,
// advance). See doc.go for the order and what each phase may do.

// readyWork carries one Ready from prepare through sync to finish.
type readyWork struct {
	rd        etcdraft.Ready
	has       bool
	needSync  bool
	stateSync bool
	// stateRec is the hard-state record to commit to the node's log in
	// the sync phase (term or vote changed, Host.states set).
	stateRec []byte
}

func (r *Replica) drainInbox() {
	r.inMu.Lock()
	msgs, props, ticks, ops := r.inMsgs, r.inProps, r.inTicks, r.inOps
	msgsAt := r.inMsgsAt
	r.inMsgs, r.inProps, r.inTicks, r.inOps = nil, nil, 0, nil
	r.inMu.Unlock()
	if len(msgs) > 0 && !msgsAt.IsZero() {
		noteMax(&r.host.stalls.inbox, time.Since(msgsAt))
	}
	if len(msgs) > 0 || len(props) > 0 || len(ops) > 0 {
		r.mustPublish = true
	}
	r.idleTicks += ticks
	if r.failed {
		for _, p := range props {
			p.fail(ErrStopped)
		}
		// Raft's state is not to be trusted: only a recovery runs.
		if r.takeRecover() {
			r.recover()
		}
		return
	}
	stopping := r.host.stopping.Load()
	if len(props) > 0 || len(ops) > 0 {
		r.wake()
	}
	gagged := r.gagged.Load()
	for _, m := range msgs {
		if stopping && m.GetType() == pb.MsgTimeoutNow {
			continue // a stopping node must not take leadership
		}
		if gagged && gagDrops(m) {
			continue // neither votes nor leads (gag.go)
		}
		if r.quiesced.Load() && !isResponse(m.GetType()) {
			r.wake()
		}
		if f := m.GetFrom(); f != 0 && f != r.id {
			r.heardFrom[f] = time.Now()
		}
		if clampCommit(m, r.lastIndex) {
			r.host.guard.clamped.Add(1)
			r.reportLostTail(m)
		}
		if m.GetType() == pb.MsgAppResp && r.raftState == etcdraft.StateLeader {
			r.noteRefillErr(r.noteAppResp(m)) // before etcd raft sees it (refill.go)
		}
		// The answer of a follower being refilled makes etcd raft send it
		// an append it cannot take (it lacks what comes before): none of
		// its entries is read from the log for that (behind.go).
		r.st.refilling = r.refills[m.GetFrom()] != nil && r.raftState == etcdraft.StateLeader
		err := r.rn.Step(m)
		r.st.refilling = false
		if err != nil && !errors.Is(err, etcdraft.ErrStepPeerNotFound) && !errors.Is(err, etcdraft.ErrStepLocalMsg) {
			r.host.logger.Debug("raft step failed", "group", r.cfg.Name, "err", err)
		}
		if t := m.GetType(); (t == pb.MsgAppResp || t == pb.MsgHeartbeatResp) && r.raftState == etcdraft.StateLeader {
			r.noteRefillErr(r.checkBehind(m.GetFrom())) // behind.go
		}
	}
	if r.quiesced.Load() {
		ticks = 0 // a quiet group's clocks stand still
	}
	ticks = min(ticks, maxTicksPerDrain(r.host.cfg.ElectionTicks))
	for i := 0; i < ticks; i++ {
		if (stopping || gagged) && r.raftState != etcdraft.StateLeader {
			// Let leases expire so this node still votes for others, but
			// never campaign.
			r.rn.TickQuiesced()
		} else {
			r.rn.Tick()
		}
	}
	if ticks > 0 {
		r.noteRefillErr(r.refillTick())
		r.sampleIndex()
		r.expireOrphans()
		r.maybeQuiesce()
	}
	for _, op := range ops {
		op()
	}
	// Held proposals go first: a transfer that ended (aborted on a tick)
	// while newer ones waited in the inbox must not let those overtake.
	r.proposeHeld()
	for _, p := range props {
		r.propose(p)
	}
	r.proposeHeld()
	r.tellGag()
}

// noteRefillErr keeps the first storage error of a refill; prepare fails
// the replica with it once the inbox is drained.
func (r *Replica) noteRefillErr(err error) {
	if err != nil && r.refillErr == nil {
		r.refillErr = err
	}
}

// maxTicksPerDrain bounds the ticks stepped at once. Ticks pile up in the
// inbox while the worker is stalled (a slow fsync), but the messages that
// arrived meanwhile are stepped before them, so only one election timeout's
// worth of the pile can be judged against them: a leader stepping two
// timeouts at once runs a second quorum check that no answer could reach
// and steps down in its own term; a follower that has just heard from its
// leader would campaign. The rest is dropped, so a stalled node's clocks
// run late, never early.
func maxTicksPerDrain(electionTicks int) int { return max(1, electionTicks-1) }

// prepare is the first half of phase 1: step the inbox, take a Ready and
// send the messages that may leave before its writes. The worker runs it
// for every replica of the batch before any of them writes (prepareWrite):
// a log append can take milliseconds on a disk busy with other fsyncs, and
// when a hundred groups change leader at once the messages of the last
// replicas in a batch (a new leader's first append, a vote request) must not
// wait for the first ones' writes. Each replica still sends before it writes,
// as before; it only writes a little later. It reports whether the Ready has
// writes left for prepareWrite.
func (r *Replica) prepare() (w readyWork, err error) {
	t0 := time.Now()
	r.drainInbox()
	noteMax(&r.host.stalls.drainOne, time.Since(t0))
	if err := r.refillErr; err != nil {
		r.refillErr = nil
		return w, err
	}
	if r.failed || !r.rn.HasReady() {
		return w, nil
	}
	t1 := time.Now()
	r.st.inReady = true
	w.rd = r.rn.Ready()
	r.st.inReady = false
	noteMax(&r.host.stalls.readyOne, time.Since(t1))
	w.has = true
	rd := &w.rd
	if rd.SoftState != nil {
		r.onSoftState(rd.SoftState)
	}
	termOrVote := rd.HardState != nil && (rd.HardState.GetTerm() != r.st.hs.GetTerm() || rd.HardState.GetVote() != r.st.hs.GetVote())
	if !termOrVote && rd.SoftState != nil {
		// A new leader publishes before its first message goes out, so
		// whoever hears of it (an old leader finishing a transfer, a
		// client it redirects) finds it leading here. The term is durable
		// already: it was written when the campaign began.
		r.publish()
	}
	// Messages that do not report on this Ready's writes leave before
	// them: the leader replicates while it writes, and a candidate asks
	// for votes while its own term and vote are fsynced, so the voters'
	// fsyncs run alongside its own. That is safe as etcd raft's
	// asynchronous storage writes have it: a request promises nothing;
	// the candidate's vote for itself counts only at Advance, after the
	// sync phase, and a candidate that crashes first never counted it.
	// What does promise durability (append and vote responses) waits for
	// finish.
	t2 := time.Now()
	r.sendMsgs(rd.Messages, false)
	noteMax(&r.host.stalls.sendOne, time.Since(t2))
	// A transfer ends when this node hears of the new leader (stepped
	// above); nothing this Ready writes concerns it, so its waiter need
	// not wait for the writes, the batch's fsyncs or Advance.
	r.checkTransfers()
	return w, nil
}

// prepareWrite is the second half of phase 1: install a snapshot the
// leader sent, write the new entries to the log and the hard state to the
// state file, neither fsynced.
func (r *Replica) prepareWrite(w *readyWork) error {
	rd := &w.rd
	termOrVote := rd.HardState != nil && (rd.HardState.GetTerm() != r.st.hs.GetTerm() || rd.HardState.GetVote() != r.st.hs.GetVote())
	if !etcdraft.IsEmptySnap(rd.Snapshot) {
		if err := r.installSnapshot(rd.Snapshot); err != nil {
			return err
		}
	}
	if len(rd.Entries) > 0 {
		r.curEntries = rd.Entries
		ta := time.Now()
		out, err := r.st.append(rd.Entries, r.scratch)
		noteMax(&r.host.stalls.appendOne, time.Since(ta))
		if err != nil {
			return fmt.Errorf("append: %w", err)
		}
		r.scratch = out[:0]
		r.noteAppended(out)
		r.curEntries = nil
		r.lastIndex = out[len(out)-1].Index
		r.dirty = true
		w.needSync = r.host.cfg.Fsync == FsyncAlways
	}
	if rd.HardState != nil {
		r.st.hs = proto.Clone(rd.HardState).(*pb.HardState)
		// A new term or vote must be on disk before the messages that
		// depend on it leave; the fsync happens in the host's sync phase,
		// shared with other replicas, and those messages wait for finish.
		// With the node's hard-state log the record is written there too:
		// one frame and one fsync for every replica of the round.
		if r.st.node != nil && termOrVote {
			rec, err := stateRecord(r.cfg.Group, r.st.hs, r.st.cs)
			if err != nil {
				return err
			}
			w.stateRec = rec
		} else if err := r.st.saveState(false); err != nil {
			return err
		}
		w.stateSync = termOrVote
	}
	return nil
}

// sync makes a Ready's writes durable as the policy and Raft require.
func (r *Replica) sync(w *readyWork) error {
	if w.stateSync && w.stateRec == nil {
		if err := r.st.syncState(); err != nil {
			return err
		}
	}
	if !w.needSync || !r.dirty {
		return nil
	}
	return r.syncLog()
}

// syncLog fsyncs the log.
func (r *Replica) syncLog() error {
	if f := r.host.syncFault.Load(); f != nil {
		if err := (*f)(r); err != nil {
			return err
		}
	}
	if err := r.st.log.Sync(); err != nil {
		return err
	}
	r.dirty = false
	return nil
}

func (r *Replica) finish(w *readyWork) error {
	for _, p := range r.unsynced {
		p.markAppended()
	}
	r.unsynced = r.unsynced[:0]
	if !w.has {
		// Nothing happened but time passing: refresh the status (the ISR
		// ages) once a second rather than on every tick.
		if r.mustPublish || r.idleTicks >= idlePublishTicks {
			r.publish()
		}
		return nil
	}
	rd := &w.rd
	r.sendMsgs(rd.Messages, true)
	if err := r.apply(rd.CommittedEntries); err != nil {
		return err
	}
	r.rn.Advance(*rd)
	r.checkTransfers()
	r.proposeHeld()
	r.publish()
	return nil
}

// sendMsgs sends either the messages that may leave before this Ready's
// writes (after=false) or those that must wait for them (after=true).
func (r *Replica) sendMsgs(msgs []*pb.Message, after bool) {
	for _, m := range msgs {
		t := m.GetType()
		waits := t == pb.MsgAppResp || t == pb.MsgVoteResp || t == pb.MsgPreVoteResp
		if waits != after {
			continue
		}
		if r.uselessAppend(m) {
			continue // behind.go
		}
		if r.throttled(m) {
			if t == pb.MsgSnap {
				r.rn.ReportSnapshot(m.GetTo(), etcdraft.SnapshotFailure)
			}
			continue
		}
		r.host.sendRaft(r, m, r.catchUp(m))
		if t == pb.MsgSnap {
			// Snapshots are small here (metadata and state machine data)
			// and go inline; report them sent.
			r.rn.ReportSnapshot(m.GetTo(), etcdraft.SnapshotFinish)
		}
	}
}

func (r *Replica) apply(ents []*pb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	batch := r.applyBuf[:0]
	for _, e := range ents {
		idx := e.GetIndex()
		if idx <= r.applied {
			continue
		}
		kind, _, payload, ok := decodeData(e)
		if !ok {
			return fmt.Errorf("entry %d has foreign data", idx)
		}
		meta, err := r.st.metaFor(idx)
		if err != nil {
			return fmt.Errorf("entry %d metadata: %w", idx, err)
		}
		switch kind {
		case clog.KindConfChange:
			var cc pb.ConfChange
			if err := proto.Unmarshal(payload, &cc); err != nil {
				return err
			}
			if err := r.applyConfChange(idx, &cc, cc.GetContext()); err != nil {
				return err
			}
		case clog.KindConfChangeV2:
			var cc pb.ConfChangeV2
			if err := proto.Unmarshal(payload, &cc); err != nil {
				return err
			}
			if err := r.applyConfChange(idx, &cc, cc.GetContext()); err != nil {
				return err
			}
		}
		batch = append(batch, Committed{Index: idx, Term: e.GetTerm(), Kind: kind,
			BaseOffset: meta.baseOffset, Count: meta.count, Payload: payload})
		r.snapBytes += int64(len(payload))
	}
	if len(batch) == 0 {
		return nil
	}
	ta := time.Now()
	if err := r.cfg.SM.Apply(batch); err != nil {
		return err
	}
	noteMax(&r.host.stalls.applyOne, time.Since(ta))
	last := batch[len(batch)-1]
	r.applied, r.appliedTerm = last.Index, last.Term
	r.st.cacheEvict(r.applied)
	// Answer the proposals that are now applied.
	n := 0
	for _, p := range r.waiting {
		if p.res.Index > r.applied {
			break
		}
		n++
		if t := r.termAt(batch, p.res.Index); t == p.res.Term {
			p.succeed()
		} else {
			p.fail(&NotLeaderError{Leader: r.lead, Term: r.term, Why: "entry replaced in a new term"})
		}
	}
	r.waiting = r.waiting[n:]
	for i := range batch {
		batch[i].Payload = nil
	}
	r.applyBuf = batch[:0]
	return r.maybeSnapshot()
}

func (r *Replica) termAt(batch []Committed, index uint64) uint64 {
	if len(batch) > 0 && index >= batch[0].Index {
		return batch[index-batch[0].Index].Term
	}
	t, _ := r.st.log.Term(index)
	return t
}

func (r *Replica) onSoftState(ss *etcdraft.SoftState) {
	wasLeader := r.raftState == etcdraft.StateLeader
	prevTerm := r.term
	r.lead, r.raftState = ss.Lead, ss.RaftState
	r.term = r.rn.BasicStatus().GetTerm()
	if wasLeader && r.raftState != etcdraft.StateLeader {
		r.noteStepDown(ss.Lead, prevTerm)
	}
	if r.raftState == etcdraft.StateLeader && !wasLeader {
		r.leaderSince = time.Now()
		clear(r.refills) // etcd raft's progress is fresh too
		now := time.Now()
		// A new leader starts with every live voter in sync; laggards drop
		// out after the lag time, as in Kafka. The others must catch up
		// to count (noteMatch).
		r.caughtUp = map[uint64]time.Time{}
		clear(r.lapsed)
		for _, v := range r.st.cs.GetVoters() {
			switch {
			case v == r.id:
			case r.host.PeerAlive(v):
				r.caughtUp[v] = now
			default:
				r.lapsed[v] = true
			}
		}
		r.samples = r.samples[:0]
	}
	if r.raftState == etcdraft.StateLeader {
		r.leaderLostAt = time.Time{}
	}
	if wasLeader && r.raftState != etcdraft.StateLeader {
		r.leaderLostAt = time.Now()
		clear(r.refills)
		// Proposals not yet in the log cannot be proposed anymore.
		for id, p := range r.pending {
			delete(r.pending, id)
			p.fail(&NotLeaderError{Leader: r.lead, Term: r.term, Why: "lost leadership before appending"})
		}
		held := r.held
		r.held = nil
		for _, p := range held {
			p.fail(&NotLeaderError{Leader: r.lead, Term: r.term, Why: "lost leadership during a transfer"})
		}
	}
}
