package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	clog "github.com/chronik-dev/chronik/log"
)

// Committed is an entry handed to a StateMachine.
type Committed struct {
	Index      uint64
	Term       uint64
	Kind       clog.Kind
	BaseOffset int64
	Count      int32
	Payload    []byte
}

// StateMachine is what a replica applies committed entries to. Its methods
// run on the replica's worker, one at a time.
type StateMachine interface {
	// Apply applies committed entries in log order. An error stops the node.
	Apply(ents []Committed) error
	// Snapshot returns the current state for a snapshot.
	Snapshot() ([]byte, error)
	// Restore replaces the state with data taken at index. For a data
	// partition the log may hold entries after index that the state already
	// includes: applying them again must be harmless.
	Restore(index uint64, data []byte) error
}

// ReplicaConfig describes one Raft group replica on this node.
type ReplicaConfig struct {
	Group uint64
	Name  string // for logs, e.g. "orders-3"
	Dir   string
	// Peers are the group's voters in preference order: Peers[0] is the
	// preferred leader. Used to bootstrap a new log and for failover.
	Peers []uint64
	SM    StateMachine
	Log   clog.Options
	// CompactToSnapshot drops log segments covered by local snapshots
	// (state-machine groups). Data partitions keep their log for readers and
	// compact by retention instead.
	CompactToSnapshot bool
	// SnapshotEntries and SnapshotBytes bound how much log a restart must
	// replay: a local snapshot is taken once either is exceeded.
	SnapshotEntries uint64
	SnapshotBytes   int64
	// Retention returns the current retention policy (bytes < 0 or age <= 0
	// for no limit); nil means keep everything.
	Retention func() (bytes int64, age time.Duration)
	// ForwardProposals lets a follower hand proposals to the leader (Raft's
	// MsgProp forwarding) instead of refusing them. The metadata group uses
	// it so any node can change cluster metadata.
	ForwardProposals bool
}

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
	Voters      []uint64 // in preference order
	ISR         []uint64 // leader only: voters caught up within the lag time
	Match       map[uint64]uint64
	// InSyncSince is, for each follower in the ISR, since when it has been
	// in it without interruption (leader only).
	InSyncSince  map[uint64]time.Time
	Transferee   uint64
	Failed       bool // a storage error stopped this replica
	LeaderChange time.Time
}

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
	res     Result
	// appended is closed once the entry is in the local log (and synced
	// under the always policy); done once it is applied or has failed.
	appended chan struct{}
	done     chan struct{}
	err      error
	finished bool
}

func (p *proposal) fail(err error) {
	if p.finished {
		return
	}
	p.finished = true
	p.err = err
	select {
	case <-p.appended:
	default:
		close(p.appended)
	}
	close(p.done)
}

// Replica is one member of one Raft group. All Raft work happens on a host
// worker holding mu; other goroutines talk to it through the inbox.
type Replica struct {
	host *Host
	cfg  ReplicaConfig
	id   uint64

	mu sync.Mutex // held by the worker processing this replica
	rn *etcdraft.RawNode
	st *storage

	inMu     sync.Mutex
	inMsgs   []*pb.Message
	inProps  []*proposal
	inTicks  int
	inOps    []func()
	queued   atomic.Bool
	quiesced atomic.Bool // quiet: no ticks (see maybeQuiesce)
	rerun    atomic.Bool // work arrived while another worker held mu
	stopped  atomic.Bool

	// worker-owned state
	pending     map[uint64]*proposal // proposed, index not yet known
	waiting     []*proposal          // appended, awaiting apply, index order
	unsynced    []*proposal          // appended, awaiting fsync to signal
	held        []*proposal          // arrived during a leadership transfer
	transfers   []*transferWait
	lead, term  uint64
	raftState   etcdraft.StateType
	applied     uint64
	appliedTerm uint64
	lastIndex   uint64
	dirty       bool // appended since the last sync
	snapIndex   uint64
	snapBytes   int64
	samples     []indexSample
	caughtUp    map[uint64]time.Time
	leaderSince time.Time
	// leaderLostAt is when this replica last stopped leading (zero while
	// it leads).
	leaderLostAt time.Time
	failed       bool
	scratch      []clog.Entry
	applyBuf     []Committed
	curEntries   []*pb.Entry
	mustPublish  bool // inbox work arrived since the last publish
	quietTicks   int  // leader: consecutive idle, fully replicated ticks
	wokeAt       time.Time
	heardFrom    map[uint64]time.Time // last Raft message from each peer
	idleTicks    int                  // ticks since the last publish

	status atomic.Pointer[Status]
	watch  atomic.Pointer[chan struct{}]
}

type indexSample struct {
	at    time.Time
	index uint64
}

type transferWait struct {
	to   uint64
	done chan error
}

func newReplica(h *Host, cfg ReplicaConfig) (*Replica, error) {
	if cfg.SnapshotEntries == 0 {
		cfg.SnapshotEntries = 20000
	}
	if cfg.SnapshotBytes == 0 {
		cfg.SnapshotBytes = 64 << 20
	}
	if cfg.Log.Logger == nil {
		cfg.Log.Logger = h.logger
	}
	st, err := openStorage(cfg.Dir, cfg.Log)
	if err != nil {
		return nil, err
	}
	st.compactToSnap = cfg.CompactToSnapshot
	r := &Replica{host: h, cfg: cfg, id: h.id, st: st, pending: map[uint64]*proposal{}, caughtUp: map[uint64]time.Time{}, heardFrom: map[uint64]time.Time{}}
	fresh := len(st.cs.GetVoters()) == 0 && st.log.LastIndex() == 0 && st.snap == nil
	if fresh {
		st.cs = &pb.ConfState{Voters: slices.Clone(cfg.Peers)}
		if err := st.saveState(true); err != nil {
			st.close()
			return nil, err
		}
	}
	applied, err := r.restore()
	if err != nil {
		st.close()
		return nil, err
	}
	rc := &etcdraft.Config{
		ID:                        h.id,
		ElectionTick:              h.cfg.ElectionTicks,
		HeartbeatTick:             h.cfg.HeartbeatTicks,
		Storage:                   st,
		Applied:                   applied,
		MaxSizePerMsg:             4 << 20,
		MaxCommittedSizePerReady:  64 << 20,
		MaxUncommittedEntriesSize: 256 << 20,
		MaxInflightMsgs:           256,
		CheckQuorum:               true,
		PreVote:                   true,
		DisableProposalForwarding: !cfg.ForwardProposals,
		Logger:                    h.raftLogger,
	}
	rn, err := etcdraft.NewRawNode(rc)
	if err != nil {
		st.close()
		return nil, err
	}
	r.rn = rn
	r.applied = applied
	r.lastIndex = st.log.LastIndex()
	ch := make(chan struct{})
	r.watch.Store(&ch)
	r.publish()
	return r, nil
}

// restore loads the latest local snapshot into the state machine and
// returns the index raft should consider applied.
func (r *Replica) restore() (uint64, error) {
	st := r.st
	base, _, _ := st.log.Base()
	applied := base
	if st.snap != nil {
		idx := st.snap.GetMetadata().GetIndex()
		_, smIndex, data := splitSnapData(st.snap.GetData())
		if smIndex == 0 {
			smIndex = idx
		}
		if idx >= base {
			if err := r.cfg.SM.Restore(smIndex, data); err != nil {
				return 0, err
			}
			applied = idx
			r.snapIndex = idx
		}
	} else if base > 0 {
		if err := r.cfg.SM.Restore(base, nil); err != nil {
			return 0, err
		}
	}
	if c := st.hs.GetCommit(); applied > c {
		// The snapshot is newer than the commit index written with the
		// hard state; it was applied, so it was committed.
		st.hs.Commit = new(applied)
	}
	return applied, nil
}

// Group is the group id.
func (r *Replica) Group() uint64 { return r.cfg.Group }

// Name is the replica's display name.
func (r *Replica) Name() string { return r.cfg.Name }

// Log is the replica's log, for readers (Kafka Fetch, ListOffsets).
func (r *Replica) Log() *clog.Log { return r.st.log }

// Status returns the latest published status. Do not modify it.
func (r *Replica) Status() *Status { return r.status.Load() }

// Changed returns a channel closed at the next status change.
func (r *Replica) Changed() <-chan struct{} { return *r.watch.Load() }

func (r *Replica) enqueue(fn func()) {
	r.inMu.Lock()
	fn()
	r.inMu.Unlock()
	r.host.schedule(r)
}

// enqueueUrgent is enqueue at the front of the run queue.
func (r *Replica) enqueueUrgent(fn func()) {
	r.inMu.Lock()
	fn()
	r.inMu.Unlock()
	r.host.scheduleUrgent(r)
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
	p := &proposal{id: r.host.nextProposalID(), kind: kind, payload: payload,
		appended: make(chan struct{}), done: make(chan struct{})}
	if r.stopped.Load() {
		p.fail(ErrStopped)
		return p
	}
	r.enqueue(func() { r.inProps = append(r.inProps, p) })
	return p
}

// Wait waits for a submitted proposal (see Propose).
func (r *Replica) Wait(ctx context.Context, p Pending, commit bool) (Result, error) {
	ch := p.appended
	if commit {
		ch = p.done
	}
	select {
	case <-ch:
		if p.err != nil {
			return Result{}, p.err
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
// until it has moved, failed, or ctx ends.
func (r *Replica) TransferLeadership(ctx context.Context, to uint64) error {
	w := &transferWait{to: to, done: make(chan error, 1)}
	r.enqueueUrgent(func() {
		r.inOps = append(r.inOps, func() {
			if r.raftState != etcdraft.StateLeader {
				if r.lead == to {
					w.done <- nil
				} else {
					w.done <- &NotLeaderError{Leader: r.lead, Term: r.term, Why: "transfer target is not the leader"}
				}
				return
			}
			r.transfers = append(r.transfers, w)
			r.rn.TransferLeader(to)
		})
	})
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Campaign makes this replica stand for election now.
func (r *Replica) Campaign() {
	r.enqueue(func() {
		r.inOps = append(r.inOps, func() {
			if !r.host.stopping.Load() {
				r.rn.Campaign()
			}
		})
	})
}

// --- worker side ---

// process runs on a worker with r.mu held. It drains the inbox and handles
// one Ready in three phases so the host can share fsyncs between replicas:
// prepare (step, propose, write), then sync, then finish (send, apply,
// advance).
type readyWork struct {
	rd        etcdraft.Ready
	has       bool
	sentEarly bool
	needSync  bool
	stateSync bool
}

func (r *Replica) drainInbox() {
	r.inMu.Lock()
	msgs, props, ticks, ops := r.inMsgs, r.inProps, r.inTicks, r.inOps
	r.inMsgs, r.inProps, r.inTicks, r.inOps = nil, nil, 0, nil
	r.inMu.Unlock()
	if len(msgs) > 0 || len(props) > 0 || len(ops) > 0 {
		r.mustPublish = true
	}
	r.idleTicks += ticks
	if r.failed {
		for _, p := range props {
			p.fail(ErrStopped)
		}
		return
	}
	stopping := r.host.stopping.Load()
	if len(props) > 0 || len(ops) > 0 {
		r.wake()
	}
	for _, m := range msgs {
		if stopping && m.GetType() == pb.MsgTimeoutNow {
			continue // a stopping node must not take leadership
		}
		if r.quiesced.Load() && !isResponse(m.GetType()) {
			r.wake()
		}
		if f := m.GetFrom(); f != 0 && f != r.id {
			r.heardFrom[f] = time.Now()
		}
		if err := r.rn.Step(m); err != nil && !errors.Is(err, etcdraft.ErrStepPeerNotFound) && !errors.Is(err, etcdraft.ErrStepLocalMsg) {
			r.host.logger.Debug("raft step failed", "group", r.cfg.Name, "err", err)
		}
	}
	if r.quiesced.Load() {
		ticks = 0 // a quiet group's clocks stand still
	}
	for i := 0; i < ticks; i++ {
		if stopping && r.raftState != etcdraft.StateLeader {
			// Let leases expire so this node still votes for others, but
			// never campaign.
			r.rn.TickQuiesced()
		} else {
			r.rn.Tick()
		}
	}
	if ticks > 0 {
		r.sampleIndex()
		r.expireOrphans()
		r.maybeQuiesce()
	}
	for _, op := range ops {
		op()
	}
	for _, p := range props {
		r.propose(p)
	}
	r.proposeHeld()
}

func (r *Replica) propose(p *proposal) {
	// Read Raft's live state: messages stepped earlier in this round may
	// have changed it since the last Ready updated r.raftState.
	bs := r.rn.BasicStatus()
	lead, term := bs.Lead, bs.GetTerm()
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
	if bs.LeadTransferee != 0 {
		// etcd raft drops proposals during a transfer; hold them until it
		// ends, then propose them or send the client to the new leader.
		r.held = append(r.held, p)
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

func (r *Replica) prepare() (w readyWork, err error) {
	r.drainInbox()
	if r.failed || !r.rn.HasReady() {
		return w, nil
	}
	w.rd = r.rn.Ready()
	w.has = true
	rd := &w.rd
	if rd.SoftState != nil {
		r.onSoftState(rd.SoftState)
	}
	termOrVote := rd.HardState != nil && (rd.HardState.GetTerm() != r.st.hs.GetTerm() || rd.HardState.GetVote() != r.st.hs.GetVote())
	if !termOrVote {
		// Messages that do not report on this Ready's writes may leave
		// before them: the leader replicates while it writes.
		if rd.SoftState != nil {
			// A new leader publishes before its first message goes out,
			// so whoever hears of it (an old leader finishing a transfer,
			// a client it redirects) finds it leading here. The term is
			// durable already: it was written when the campaign began.
			r.publish()
		}
		r.sendMsgs(rd.Messages, false)
		w.sentEarly = true
	}
	if !etcdraft.IsEmptySnap(rd.Snapshot) {
		if err := r.installSnapshot(rd.Snapshot); err != nil {
			return w, err
		}
	}
	if len(rd.Entries) > 0 {
		r.curEntries = rd.Entries
		out, err := r.st.append(rd.Entries, r.scratch)
		if err != nil {
			return w, fmt.Errorf("append: %w", err)
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
		if err := r.st.saveState(false); err != nil {
			return w, err
		}
		w.stateSync = termOrVote
	}
	return w, nil
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
		if len(r.pending) == 0 {
			break
		}
		re := r.rdEntry(e.Index)
		if re == nil {
			continue
		}
		_, id, _, _ := decodeData(re)
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

// sync makes a Ready's writes durable as the policy and Raft require.
func (r *Replica) sync(w *readyWork) error {
	if w.stateSync {
		if err := r.st.syncState(); err != nil {
			return err
		}
	}
	if !w.needSync || !r.dirty {
		return nil
	}
	if err := r.st.log.Sync(); err != nil {
		return err
	}
	r.dirty = false
	return nil
}

func (r *Replica) finish(w *readyWork) error {
	for _, p := range r.unsynced {
		if !p.finished {
			close(p.appended)
		}
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
	if !w.sentEarly {
		r.sendMsgs(rd.Messages, false)
	}
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
		r.host.sendRaft(r, m)
		if t == pb.MsgSnap {
			// Snapshots are small here (metadata and state machine data)
			// and go inline; report them sent.
			r.rn.ReportSnapshot(m.GetTo(), etcdraft.SnapshotFinish)
		}
	}
}

func (r *Replica) installSnapshot(snap *pb.Snapshot) error {
	md := snap.GetMetadata()
	off, smIndex, data := splitSnapData(snap.GetData())
	if err := r.st.log.Reset(md.GetIndex(), md.GetTerm(), off); err != nil {
		return err
	}
	r.st.metas = nil
	r.st.cacheClear()
	r.st.cs = proto.Clone(md.GetConfState()).(*pb.ConfState)
	if smIndex == 0 {
		smIndex = md.GetIndex()
	}
	local := &pb.Snapshot{Metadata: proto.Clone(md).(*pb.SnapshotMetadata), Data: joinSnapData(off, smIndex, data)}
	if err := r.st.saveSnapshot(local); err != nil {
		return err
	}
	if err := r.cfg.SM.Restore(smIndex, data); err != nil {
		return err
	}
	if err := r.st.saveState(true); err != nil {
		return err
	}
	r.applied = md.GetIndex()
	r.appliedTerm = md.GetTerm()
	r.snapIndex = md.GetIndex()
	r.lastIndex = md.GetIndex()
	for _, p := range r.waiting {
		p.fail(&NotLeaderError{Leader: r.lead, Term: r.term, Why: "log reset by a snapshot"})
	}
	r.waiting = nil
	r.host.logger.Info("installed raft snapshot", "partition", r.cfg.Name, "index", md.GetIndex(), "term", md.GetTerm(), "log_start_offset", off)
	return nil
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
			r.st.cs = r.rn.ApplyConfChange(&cc)
			if err := r.st.saveState(true); err != nil {
				return err
			}
		case clog.KindConfChangeV2:
			var cc pb.ConfChangeV2
			if err := proto.Unmarshal(payload, &cc); err != nil {
				return err
			}
			r.st.cs = r.rn.ApplyConfChange(&cc)
			if err := r.st.saveState(true); err != nil {
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
	if err := r.cfg.SM.Apply(batch); err != nil {
		return err
	}
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
			p.finished = true
			close(p.done)
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

func (r *Replica) maybeSnapshot() error {
	if r.applied-r.snapIndex < r.cfg.SnapshotEntries && r.snapBytes < r.cfg.SnapshotBytes {
		return nil
	}
	return r.snapshotNow()
}

// snapshotNow writes a local snapshot at the applied index; for
// state-machine groups it then drops the log it covers.
func (r *Replica) snapshotNow() error {
	if r.applied == r.snapIndex || r.applied == 0 {
		return nil
	}
	data, err := r.cfg.SM.Snapshot()
	if err != nil {
		return err
	}
	term, err := r.st.log.Term(r.applied)
	if err != nil {
		return err
	}
	off, err := r.st.log.EndOffsetAt(r.applied)
	if err != nil {
		return err
	}
	snap := &pb.Snapshot{
		Data:     joinSnapData(off, r.applied, data),
		Metadata: &pb.SnapshotMetadata{ConfState: proto.Clone(r.st.cs).(*pb.ConfState), Index: new(r.applied), Term: new(term)},
	}
	// The state file's commit must not lag the snapshot on disk.
	if err := r.st.saveState(true); err != nil {
		return err
	}
	if err := r.st.saveSnapshot(snap); err != nil {
		return err
	}
	r.snapIndex = r.applied
	r.snapBytes = 0
	if r.cfg.CompactToSnapshot {
		if _, err := r.st.log.Retain(clog.Retention{MaxIndex: r.applied, Bytes: -1, Before: r.applied + 1}, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// retain applies the retention policy (data partitions), snapshotting first
// so the state a lagging follower receives covers what is deleted.
func (r *Replica) retain() error {
	if r.cfg.Retention == nil || r.failed {
		return nil
	}
	bytes, age := r.cfg.Retention()
	if bytes < 0 && age <= 0 {
		return nil
	}
	if r.st.log.Segments() < 2 {
		return nil
	}
	if err := r.snapshotNow(); err != nil {
		return err
	}
	n, err := r.st.log.Retain(clog.Retention{MaxIndex: r.applied, Bytes: bytes, Age: age}, time.Now())
	if n > 0 {
		r.host.logger.Debug("retention deleted segments", "partition", r.cfg.Name, "segments", n, "log_start_offset", r.st.log.StartOffset())
	}
	return err
}

func (r *Replica) onSoftState(ss *etcdraft.SoftState) {
	wasLeader := r.raftState == etcdraft.StateLeader
	r.lead, r.raftState = ss.Lead, ss.RaftState
	r.term = r.rn.BasicStatus().GetTerm()
	if r.raftState == etcdraft.StateLeader && !wasLeader {
		r.leaderSince = time.Now()
		now := time.Now()
		// A new leader starts with every live voter in sync; laggards drop
		// out after the lag time, as in Kafka.
		r.caughtUp = map[uint64]time.Time{}
		for _, v := range r.st.cs.GetVoters() {
			if v != r.id && r.host.PeerAlive(v) {
				r.caughtUp[v] = now
			}
		}
		r.samples = r.samples[:0]
	}
	if r.raftState == etcdraft.StateLeader {
		r.leaderLostAt = time.Time{}
	}
	if wasLeader && r.raftState != etcdraft.StateLeader {
		r.leaderLostAt = time.Now()
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

// Quiescence. A group with nothing to do still costs a heartbeat per
// follower every HeartbeatTicks, and a node with a thousand partitions
// would spend its CPU on them. So a leader whose followers have all of its
// (applied) log for quiesceTicks ticks tells them to go quiet, and stops
// ticking; they stop ticking too. Any proposal, operation or Raft message
// other than a response wakes a replica, and a woken leader's next message
// wakes its followers. A quiet follower cannot notice that its leader died,
// so the host wakes every group when it loses a peer (a dropped connection,
// or no traffic at all from the peer for an election timeout).
const quiesceTicks = 3

// isResponse reports whether a message type only answers earlier traffic.
func isResponse(t pb.MessageType) bool {
	return t == pb.MsgAppResp || t == pb.MsgHeartbeatResp
}

// wake ends quiescence.
func (r *Replica) wake() {
	r.quietTicks = 0
	r.wokeAt = time.Now()
	if r.quiesced.Swap(false) {
		r.mustPublish = true
	}
}

// maybeQuiesce runs on a leader's tick and quiets the group once it has been
// idle and fully replicated for quiesceTicks ticks.
func (r *Replica) maybeQuiesce() {
	if r.quiesced.Load() || r.raftState != etcdraft.StateLeader || r.host.stopping.Load() ||
		len(r.pending) > 0 || len(r.held) > 0 || len(r.waiting) > 0 || len(r.transfers) > 0 {
		r.quietTicks = 0
		return
	}
	bs := r.rn.BasicStatus()
	if bs.LeadTransferee != 0 || bs.GetCommit() != r.lastIndex || r.applied != r.lastIndex {
		r.quietTicks = 0
		return
	}
	// Every follower must hold the whole log and must have answered since
	// the group last woke: the leader's progress for a follower that just
	// restarted still shows its old, complete log.
	caughtUp := true
	r.rn.WithProgress(func(id uint64, _ etcdraft.ProgressType, pr tracker.Progress) {
		if id != r.id && (pr.Match != r.lastIndex || !r.host.PeerAlive(id) || r.host.PeerLeaving(id) ||
			!r.heardFrom[id].After(r.wokeAt)) {
			caughtUp = false
		}
	})
	if !caughtUp {
		r.quietTicks = 0
		return
	}
	if r.quietTicks++; r.quietTicks < quiesceTicks {
		return
	}
	r.publish() // the status is frozen while quiet: make it current first
	msg := make([]byte, 24)
	binary.BigEndian.PutUint64(msg, bs.GetTerm())
	binary.BigEndian.PutUint64(msg[8:], r.lastIndex)
	binary.BigEndian.PutUint64(msg[16:], bs.GetCommit())
	for _, v := range r.st.cs.GetVoters() {
		if v != r.id {
			r.host.sendQuiesce(v, r.cfg.Group, msg)
		}
	}
	r.quiesced.Store(true)
}

// onQuiesce handles a leader's request to go quiet: a follower of that
// leader in that term, holding and having applied the leader's whole log,
// stops ticking.
func (r *Replica) onQuiesce(from uint64, msg []byte) {
	if len(msg) < 24 || r.raftState == etcdraft.StateLeader || r.lead != from {
		return
	}
	term, last, commit := binary.BigEndian.Uint64(msg), binary.BigEndian.Uint64(msg[8:]), binary.BigEndian.Uint64(msg[16:])
	if term != r.term || r.lastIndex != last || r.applied < commit {
		return
	}
	r.publish()
	r.quiesced.Store(true)
}

// Orphaned proposals: entries this node appended as leader, then lost the
// leadership. Normally the next leader commits them (they succeed) or
// overwrites them (they fail) within milliseconds. When this node is cut off
// it learns neither, and its clients would wait out their request timeout:
// so without a known leader for orphanWaitNoLeader, or without an outcome
// for orphanWait, they fail as NOT_LEADER (retriable; idempotent producers
// retry them without duplicates).
const (
	orphanWaitNoLeader = 500 * time.Millisecond
	orphanWait         = 3 * time.Second
)

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
			w.done <- nil
		case bs.RaftState != etcdraft.StateLeader && bs.Lead != 0:
			w.done <- fmt.Errorf("%w: node %d became leader instead", ErrTransferFail, bs.Lead)
		case bs.RaftState == etcdraft.StateLeader && bs.LeadTransferee == 0:
			w.done <- fmt.Errorf("%w: transfer to %d aborted", ErrTransferFail, w.to)
		default:
			keep = append(keep, w)
		}
	}
	r.transfers = keep
}

// sampleIndex records the leader's last index once per tick so follower
// lag can be told in time (Kafka's replica.lag.time.max.ms).
func (r *Replica) sampleIndex() {
	if r.raftState != etcdraft.StateLeader {
		return
	}
	now := time.Now()
	r.samples = append(r.samples, indexSample{at: now, index: r.lastIndex})
	lag := r.host.cfg.LagTime
	drop := 0
	for drop < len(r.samples)-1 && now.Sub(r.samples[drop].at) > lag {
		drop++
	}
	if drop > 0 {
		r.samples = append(r.samples[:0], r.samples[drop:]...)
	}
}

// isr computes the in-sync voters (leader only) and updates caughtUp.
func (r *Replica) isr(match map[uint64]uint64) []uint64 {
	now := time.Now()
	out := []uint64{r.id}
	for _, v := range r.st.cs.GetVoters() {
		if v == r.id {
			continue
		}
		m := match[v]
		if m >= r.lastIndex {
			r.caughtUp[v] = now
		} else {
			for i := len(r.samples) - 1; i >= 0; i-- {
				if r.samples[i].index <= m {
					if r.samples[i].at.After(r.caughtUp[v]) {
						r.caughtUp[v] = r.samples[i].at
					}
					break
				}
			}
		}
		if r.host.PeerAlive(v) && now.Sub(r.caughtUp[v]) <= r.host.cfg.LagTime {
			out = append(out, v)
		}
	}
	return out
}

// idlePublishTicks is how many idle ticks pass between status refreshes.
const idlePublishTicks = 10

// publish refreshes the status readers see and wakes watchers on change.
func (r *Replica) publish() {
	r.mustPublish, r.idleTicks = false, 0
	bs := r.rn.BasicStatus()
	old := r.status.Load()
	s := &Status{
		Group: r.cfg.Group, ID: r.id, Leader: bs.Lead, Term: bs.GetTerm(), State: bs.RaftState,
		Commit: bs.GetCommit(), Applied: r.applied, LastIndex: r.lastIndex,
		Voters: r.voters(), Transferee: bs.LeadTransferee, Failed: r.failed,
	}
	s.LeaderReady = bs.RaftState == etcdraft.StateLeader && r.appliedTerm == bs.GetTerm()
	if bs.RaftState == etcdraft.StateLeader {
		s.Match = map[uint64]uint64{}
		r.rn.WithProgress(func(id uint64, _ etcdraft.ProgressType, pr tracker.Progress) {
			s.Match[id] = pr.Match
		})
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
		!slices.Equal(old.ISR, s.ISR) || old.Failed != s.Failed {
		ch := make(chan struct{})
		oldCh := r.watch.Swap(&ch)
		close(*oldCh)
		if old == nil || old.Leader != s.Leader || old.Term != s.Term || !slices.Equal(old.ISR, s.ISR) {
			r.host.leaderChanged(r, s)
		}
	}
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

// peerDown reacts to a lost peer: it leaves the ISR at once, and if it led
// this group, the lease is given up so a new leader is elected without
// waiting for an election timeout. The first live voter in preference order
// campaigns; the others vote for it.
func (r *Replica) peerDown(id uint64) {
	r.wake()
	delete(r.caughtUp, id)
	if r.lead != id || r.raftState == etcdraft.StateLeader {
		return
	}
	for i := 0; i < r.host.cfg.ElectionTicks; i++ {
		r.rn.TickQuiesced()
	}
	if r.host.stopping.Load() {
		return
	}
	for _, v := range r.voters() {
		if v == id || (v != r.id && !r.host.PeerAlive(v)) {
			continue
		}
		if v == r.id {
			r.rn.Campaign()
		}
		return
	}
}

// fail stops the replica after a storage error; the rest of the node keeps
// running, and this replica stops taking part in its group.
func (r *Replica) fail(err error) {
	if r.failed {
		return
	}
	r.failed = true
	r.host.logger.Error("raft replica stopped after storage error", "partition", r.cfg.Name, "err", err)
	r.failProposals(ErrStopped)
	r.publish()
	if r.host.cfg.OnStorageError != nil {
		r.host.cfg.OnStorageError(r.cfg.Name, err)
	}
}

// failProposals fails every proposal this replica tracks.
func (r *Replica) failProposals(err error) {
	for id, p := range r.pending {
		delete(r.pending, id)
		p.fail(err)
	}
	for _, p := range r.waiting {
		p.fail(err)
	}
	r.waiting = nil
	for _, p := range r.held {
		p.fail(err)
	}
	r.held = nil
}

// Thresholds above which closing a replica takes a snapshot first.
const (
	closeSnapshotEntries = 2000
	closeSnapshotBytes   = 8 << 20
)

// closeLocked syncs and closes storage, failing whatever still waits.
func (r *Replica) closeLocked() error {
	r.stopped.Store(true)
	r.inMu.Lock()
	props := r.inProps
	r.inProps = nil
	r.inMu.Unlock()
	for _, p := range props {
		p.fail(ErrStopped)
	}
	r.failProposals(ErrStopped)
	for _, w := range r.transfers {
		w.done <- ErrStopped
	}
	r.transfers = nil
	var err error
	// A restart replays the log after the last snapshot; a short tail is
	// cheaper to replay than a snapshot is to write now, during shutdown.
	if !r.failed && (r.applied-r.snapIndex >= closeSnapshotEntries || r.snapBytes >= closeSnapshotBytes) {
		err = r.snapshotNow()
	}
	if e := r.st.close(); e != nil && err == nil {
		err = e
	}
	return err
}

func now() time.Time { return time.Now() }

// IsLeader reports whether the status is of a leader.
func (s *Status) IsLeader() bool { return s.State == etcdraft.StateLeader }

// StateName is the Raft role as text.
func (s *Status) StateName() string { return s.State.String() }
