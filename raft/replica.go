package raft

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
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
	// Joining makes this replica join an existing group rather than
	// bootstrap it. Peers must then be the group's original voters (its
	// configuration at log index 0), so that replaying the leader's log
	// from index 1 applies every later configuration change; a leader
	// whose log starts later sends a snapshot with the configuration.
	// A replica created fresh with Joining is gagged until it is promoted
	// (see gag.go): it never campaigns, votes or takes leadership, and the
	// gag survives restarts.
	Joining bool
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
	// logp is st.log for readers on other goroutines (st changes when a
	// failed replica recovers).
	logp atomic.Pointer[clog.Log]

	inMu      sync.Mutex
	inMsgs    []*pb.Message
	inMsgsAt  time.Time // when the first of inMsgs arrived (stalls.go)
	inProps   []*proposal
	inTicks   int
	inOps     []func()
	inRecover bool // a recovery attempt is due (see failure.go)
	queued    atomic.Bool
	quiesced  atomic.Bool // quiet: no ticks (see maybeQuiesce)
	rerun     atomic.Bool // work arrived while another worker held mu
	urgent    atomic.Bool // queued urgently since last taken: a rerun keeps it
	stopped   atomic.Bool
	halted    atomic.Bool // failed is set: no ticks, no transfers

	// watching mirrors transfers for the transport's receiver
	// (watchLeaderMsg); nWatching is its length, read without the lock.
	watchMu   sync.Mutex
	watching  []*transferWait
	nWatching atomic.Int32

	// worker-owned state
	pending     map[uint64]*proposal // proposed, index not yet known
	waiting     []*proposal          // appended, awaiting apply, index order
	unsynced    []*proposal          // appended, awaiting fsync to signal
	held        []*proposal          // arrived during a leadership transfer
	transfers   []*transferWait      // change with setTransfers
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
	// lapsed are the members whose connection was lost since this replica
	// last became leader: they must reach the commit index to count as
	// in sync again (noteMatch).
	lapsed      map[uint64]bool
	leaderSince time.Time
	// leaderLostAt is when this replica last stopped leading (zero while
	// it leads).
	leaderLostAt time.Time
	failed       bool
	recovery     recovery // see failure.go
	lostTailTerm uint64   // term of the last lost-tail report (failure.go)
	scratch      []clog.Entry
	applyBuf     []Committed
	curEntries   []*pb.Entry
	mustPublish  bool // inbox work arrived since the last publish
	quietTicks   int  // leader: consecutive idle, fully replicated ticks
	wokeAt       time.Time
	heardFrom    map[uint64]time.Time // last Raft message from each peer
	idleTicks    int                  // ticks since the last publish

	// Membership (membership.go, gag.go). gagged is set while the replica
	// may not vote or lead; gagMu orders lifting it (leaf). confIndex is
	// the highest index of a configuration change appended here;
	// replayUntil the last change the history held at load (a removal
	// before it is an old one replayed, not news). confProposed holds
	// the configuration changes proposed in this Ready cycle.
	gagged        atomic.Bool
	gagMu         sync.Mutex
	confIndex     uint64
	replayUntil   uint64
	confProposed  []*proposal
	removedNotice bool // OnRemoved is due once r.mu is released

	// refills are the followers this leader sends lost entries again
	// (refill.go); refillErr is a storage error met doing so, which fails
	// the replica at the end of the drain. gaggedPeers are the members
	// that report being gagged; gagTold what this replica last told its
	// leader (gagnotice.go).
	refills     map[uint64]*refill
	refillErr   error
	gaggedPeers map[uint64]gagReport
	gagTold     gagTold

	status atomic.Pointer[Status]
	watch  atomic.Pointer[chan struct{}]
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
	r := &Replica{host: h, cfg: cfg, id: h.id}
	if err := r.load(); err != nil {
		return nil, err
	}
	ch := make(chan struct{})
	r.watch.Store(&ch)
	r.publish()
	return r, nil
}

// load opens the replica's storage, restores the state machine from it and
// starts Raft on it, resetting every piece of worker state: a new replica
// and one recovering from a failure (see recover) start the same way, as
// after a process restart. On error r.st is left as it was.
func (r *Replica) load() error {
	st, err := openStorage(r.cfg.Dir, r.cfg.Log, r.host.states, r.cfg.Group)
	if err != nil {
		return err
	}
	st.compactToSnap = r.cfg.CompactToSnapshot
	old := r.st
	r.st = st
	if err := r.start(old != nil); err != nil {
		st.close()
		r.st = old
		return err
	}
	r.logp.Store(st.log)
	return nil
}

// start builds the RawNode on r.st; etcd raft panics on state it cannot
// load, and that becomes an error here.
func (r *Replica) start(reload bool) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w (load): %v", ErrPanic, v)
		}
	}()
	st, h := r.st, r.host
	r.resetWorkerState()
	fresh := len(st.cs.GetVoters()) == 0 && st.log.LastIndex() == 0 && st.snap == nil
	// The marker first: a crash after the state is written but before the
	// marker would leave a replica that votes with no memory.
	if err := r.loadGag(fresh); err != nil {
		return err
	}
	if fresh {
		st.cs = &pb.ConfState{Voters: slices.Clone(r.cfg.Peers)}
		st.hist.record(0, st.cs)
		if err := st.hist.save(); err != nil {
			return err
		}
		if err := st.saveState(true); err != nil {
			return err
		}
	}
	applied, err := r.restore(reload)
	if err != nil {
		return err
	}
	// Raft starts with the configuration as of the applied index; the
	// changes after it come again as the log replays.
	if cs := st.hist.at(applied); cs != nil {
		st.cs = proto.Clone(cs).(*pb.ConfState)
	}
	r.replayUntil = st.hist.lastIndex()
	rc := &etcdraft.Config{
		ID:                        h.id,
		ElectionTick:              h.cfg.ElectionTicks,
		HeartbeatTick:             h.cfg.HeartbeatTicks,
		Storage:                   st,
		Applied:                   applied,
		MaxSizePerMsg:             sendMaxSize,
		MaxCommittedSizePerReady:  64 << 20,
		MaxUncommittedEntriesSize: 256 << 20,
		MaxInflightMsgs:           256,
		// A new leader sees a lagging learner at Match 0 and would read
		// and send 256 x 4 MiB in one Ready of the group (its whole log
		// here), stalling that group's producers while a busy worker does
		// it: 30 s without an ack at 30 x 100 MiB. 16 MiB in flight per
		// follower still fills loopback and a LAN.
		MaxInflightBytes:          16 << 20,
		CheckQuorum:               true,
		PreVote:                   true,
		DisableProposalForwarding: !r.cfg.ForwardProposals,
		Logger:                    h.raftLogger,
	}
	rn, err := etcdraft.NewRawNode(rc)
	if err != nil {
		return err
	}
	r.rn = rn
	r.applied = applied
	r.lastIndex = st.log.LastIndex()
	r.term = st.hs.GetTerm()
	return nil
}

// resetWorkerState clears what the worker keeps about Raft's progress.
func (r *Replica) resetWorkerState() {
	r.pending = map[uint64]*proposal{}
	r.waiting, r.unsynced, r.held = nil, nil, nil
	r.lead, r.term, r.raftState = 0, 0, etcdraft.StateFollower
	r.applied, r.appliedTerm, r.lastIndex = 0, 0, 0
	r.dirty = false
	r.snapIndex, r.snapBytes = 0, 0
	r.samples = nil
	r.caughtUp = map[uint64]time.Time{}
	r.lapsed = map[uint64]bool{}
	r.heardFrom = map[uint64]time.Time{}
	r.leaderSince, r.leaderLostAt = time.Time{}, time.Time{}
	r.curEntries = nil
	r.mustPublish = true
	r.quietTicks, r.idleTicks = 0, 0
	r.wokeAt = time.Now()
	r.lostTailTerm = 0
	r.confIndex, r.confProposed, r.removedNotice = 0, nil, false
	r.refills, r.refillErr = map[uint64]*refill{}, nil
	r.gaggedPeers, r.gagTold = map[uint64]gagReport{}, gagTold{}
	r.quiesced.Store(false)
}

// restore loads the latest local snapshot into the state machine and
// returns the index raft should consider applied. On a reload the state
// machine holds what was applied before the failure and is emptied first
// when nothing else replaces it.
func (r *Replica) restore(reload bool) (uint64, error) {
	st := r.st
	base, _, _ := st.log.Base()
	applied := base
	if snapIdx := st.snap.GetMetadata().GetIndex(); st.snap != nil && snapIdx >= base {
		_, smIndex, data := splitSnapData(st.snap.GetData())
		if smIndex == 0 {
			smIndex = snapIdx
		}
		if err := r.cfg.SM.Restore(smIndex, data); err != nil {
			return 0, err
		}
		applied = snapIdx
		r.snapIndex = snapIdx
	} else if base > 0 || reload {
		if err := r.cfg.SM.Restore(base, nil); err != nil {
			return 0, err
		}
	}
	if err := r.fitToLog(applied); err != nil {
		return 0, err
	}
	return applied, nil
}

// fitToLog makes the loaded state agree with the log that survived
// recovery, which may have cut a torn tail. etcd raft panics at load on a
// commit index beyond the last entry, so the commit never exceeds the log:
// entries up to the cut were committed and are the same entries (a torn
// tail only removes a suffix), and the lost ones come back from the
// leader. The commit index is written without fsync, so it can also be
// behind; it never goes below the applied index, which was committed.
func (r *Replica) fitToLog(applied uint64) error {
	st := r.st
	if last := st.log.LastIndex(); applied > last {
		// A local snapshot ahead of the log on disk. snapshotNow syncs the
		// log first, so only files from older versions (or a lost fsync)
		// get here; restart the log at the snapshot, which covers it.
		md := st.snap.GetMetadata()
		off, _, _ := splitSnapData(st.snap.GetData())
		r.host.logger.Warn("raft log ends before the local snapshot; restarting the log at the snapshot",
			"partition", r.cfg.Name, "last_index", last, "snapshot_index", md.GetIndex())
		if err := st.log.Reset(md.GetIndex(), md.GetTerm(), off); err != nil {
			return fmt.Errorf("reset log to snapshot %d: %w", md.GetIndex(), err)
		}
	}
	if c, last := st.hs.GetCommit(), st.log.LastIndex(); c > last {
		r.host.logger.Warn("raft commit index beyond the recovered log (torn tail); the leader will resend the rest",
			"partition", r.cfg.Name, "commit", c, "last_index", last)
		st.hs.Commit = new(last)
	}
	if applied > st.hs.GetCommit() {
		// The snapshot is newer than the commit index written with the
		// hard state; it was applied, so it was committed.
		st.hs.Commit = new(applied)
	}
	return nil
}

// Group is the group id.
func (r *Replica) Group() uint64 { return r.cfg.Group }

// Name is the replica's display name.
func (r *Replica) Name() string { return r.cfg.Name }

// Log is the replica's log, for readers (Kafka Fetch, ListOffsets). A
// replica recovering from a failure reopens its log, so callers should not
// keep it across requests.
func (r *Replica) Log() *clog.Log { return r.logp.Load() }

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
		w.end(ErrStopped)
	}
	r.setTransfers(nil)
	r.recovery.stop()
	var err error
	// A restart replays the log after the last snapshot; a short tail is
	// cheaper to replay than a snapshot is to write now, during shutdown.
	if !r.failed && (r.applied-r.snapIndex >= closeSnapshotEntries || r.snapBytes >= closeSnapshotBytes) {
		err = r.safely("close", r.snapshotNow)
	}
	if e := r.st.close(); e != nil && err == nil {
		err = e
	}
	return err
}
