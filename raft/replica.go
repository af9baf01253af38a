package raft

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

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
