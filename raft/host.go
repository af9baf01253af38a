package raft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	etcdraft "go.etcd.io/raft/v3"
)

// FsyncPolicy says when appended entries reach stable storage.
type FsyncPolicy int

const (
	// FsyncAlways syncs every Ready's entries before anything that depends
	// on them leaves the node (acks, MsgAppResp). Replicas handled in the
	// same worker round share the wait (group commit).
	FsyncAlways FsyncPolicy = iota
	// FsyncInterval leaves entries to the operating system and syncs every
	// FsyncInterval. A process crash loses nothing (the page cache
	// survives); a power loss can lose the last interval on this node.
	FsyncInterval
)

// Config configures a Host.
type Config struct {
	ID        uint64
	Transport Transport
	// TickInterval is Raft's logical clock. Heartbeats go every
	// HeartbeatTicks ticks; an election starts after ElectionTicks to
	// 2*ElectionTicks ticks without a leader.
	TickInterval   time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	Workers        int
	Fsync          FsyncPolicy
	FsyncInterval  time.Duration
	// LagTime is how long a follower may trail the leader's log end and
	// still count as in sync (Kafka's replica.lag.time.max.ms).
	LagTime time.Duration
	// RetentionInterval is how often retention runs on each replica.
	RetentionInterval time.Duration
	// AutoRebalance moves leadership back to each group's preferred
	// replica (the first voter) once it is in sync; RebalanceDelay is how
	// long the preferred replica must have been in sync first.
	AutoRebalance  bool
	RebalanceDelay time.Duration
	Logger         *slog.Logger

	// StateDir, when set, keeps the hard state (term, vote, commit index,
	// configuration) of every replica of the node in one file there,
	// raft-hardstate, with one fsync per round for all the groups that
	// need one: a leadership transfer then waits on one fsync on each
	// side however many groups move. Replica directories written with
	// their own raft-state file move into it when opened. Empty keeps a
	// raft-state file in each replica directory.
	StateDir string

	// RecoverDelay is how long a replica stopped by a storage error waits
	// before it reloads from disk; it doubles on each failed attempt, up to
	// a minute (see failure.go).
	RecoverDelay time.Duration

	// OnStorageError is told when a replica stops after a storage error
	// or a panic (its Status then has Failed set). It runs on the worker
	// with the replica's lock held and must not block.
	OnStorageError func(name string, err error)
	// OnLeaderChange is called on a worker, with the replica's lock held,
	// when a replica's leader, term, ISR, Failed or configuration (Voters,
	// Learners, Outgoing) changes. It must not
	// block or wait for the replica (see the lock order in doc.go).
	OnLeaderChange func(r *Replica, s *Status)
	// OnNotice receives node-level messages sent with SendNotice, on a
	// transport goroutine, with no raft lock held. Channels from 0xFFF0
	// up are reserved.
	OnNotice func(from uint64, channel uint16, data []byte)
	// OnPeer is told when a peer connects or goes away, with no raft lock
	// held.
	OnPeer func(id uint64, up bool)

	// Incarnation is this node's data directory incarnation: random,
	// chosen by the broker when the directory is first created, the same
	// across restarts and new after the disk is wiped. It goes to every
	// peer right after the hello (see transport.go); 0 states none.
	Incarnation uint64
	// OnPeerIncarnation is told when a connection from peer id states its
	// data directory's incarnation inc (every new connection, so the same
	// values repeat). It runs on a transport goroutine with no raft lock
	// held, before the peer is reported up on that connection.
	OnPeerIncarnation func(id, inc uint64)
	// OnRemoved is told when a replica applies a configuration change that
	// removes this node from its group entirely. It runs on the worker
	// after the replica's lock is released, with no raft lock held, so it
	// may call RemoveReplica; it should check first that the node is not
	// to host the group anymore (a replica replaying an old removal before
	// a later re-addition reaches it can report one; see membership.go).
	OnRemoved func(group uint64)
	// LearnerRate bounds the bytes per second of entries and snapshots
	// sent to learners, all groups together (0: unlimited), so replicas
	// catching up do not starve live traffic to voters (throttle.go).
	// Host.SetLearnerRate changes it live.
	LearnerRate int64
}

func (c *Config) defaults() {
	if c.TickInterval <= 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks <= 0 {
		c.HeartbeatTicks = 2
	}
	if c.Workers <= 0 {
		// Workers block in write and fsync system calls; more of them than
		// cores keeps the CPUs busy meanwhile.
		c.Workers = max(4, 4*runtime.GOMAXPROCS(0))
	}
	if c.FsyncInterval <= 0 {
		c.FsyncInterval = 100 * time.Millisecond
	}
	if c.LagTime <= 0 {
		c.LagTime = 10 * time.Second
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = 30 * time.Second
	}
	if c.RecoverDelay <= 0 {
		c.RecoverDelay = time.Second
	}
	if c.RebalanceDelay <= 0 {
		c.RebalanceDelay = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Host drives every replica on a node from a small pool of workers: a tick,
// an incoming message or a proposal puts a replica on the run queue, and a
// worker handles it. Thousands of groups cost no goroutines of their own.
type Host struct {
	id         uint64
	cfg        Config
	logger     *slog.Logger
	raftLogger etcdraft.Logger
	tr         Transport
	states     *hardStateLog // nil: a raft-state file per replica

	mu       sync.RWMutex
	replicas map[uint64]*Replica

	qmu    sync.Mutex
	qcond  *sync.Cond
	queue  []*Replica
	qclose bool

	peerMu  sync.RWMutex
	alive   map[uint64]bool
	leaving map[uint64]bool // peers that announced a graceful shutdown

	propSeq  atomic.Uint64
	stopping atomic.Bool

	heardMu   sync.Mutex
	lastHeard map[uint64]time.Time

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	workers sync.WaitGroup
	started atomic.Bool
	closed  atomic.Bool
	stopped atomic.Bool

	transferring  sync.Map      // group -> struct{}: rebalances in flight
	sentRefills   atomic.Uint64 // refill messages sent (refill.go)
	behindRefills atomic.Uint64 // refills of followers behind the cache (behind.go)
	reads         refillReads   // refill entries read off the workers (refillread.go)
	refillReads   atomic.Uint64 // reads asked of them
	guard         msgGuard
	learners      learnerBucket // Config.LearnerRate (throttle.go)
	incs          incarnations  // peers' data directory incarnations (incarnation.go)
	stalls        stallStats    // worst delays, step-downs (stalls.go)
	// syncFault, when set (tests), is called before each log fsync and
	// its error taken as the fsync's.
	syncFault atomic.Pointer[func(*Replica) error]
}

// NewHost makes a host; call Start to run it.
func NewHost(cfg Config) (*Host, error) {
	cfg.defaults()
	if cfg.ID == 0 || cfg.ID >= 1<<16 {
		return nil, fmt.Errorf("raft: node id %d out of range [1, 65535]", cfg.ID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Host{id: cfg.ID, cfg: cfg, logger: cfg.Logger, tr: cfg.Transport,
		replicas: map[uint64]*Replica{}, alive: map[uint64]bool{}, leaving: map[uint64]bool{}, lastHeard: map[uint64]time.Time{}, ctx: ctx, cancel: cancel}
	h.raftLogger = &slogRaftLogger{l: cfg.Logger}
	h.learners.setRate(cfg.LearnerRate)
	h.incs.init()
	h.qcond = sync.NewCond(&h.qmu)
	if cfg.StateDir != "" {
		st, err := openHardStateLog(cfg.StateDir, cfg.Logger)
		if err != nil {
			cancel()
			return nil, err
		}
		h.states = st
	}
	return h, nil
}

// ID is this node's id.
func (h *Host) ID() uint64 { return h.id }

// Start starts the transport, the workers and the timers. If the transport
// fails to start, nothing runs. A host starts once.
func (h *Host) Start() error {
	if h.closed.Load() || !h.started.CompareAndSwap(false, true) {
		return errors.New("raft: host already started or closed")
	}
	h.reads.start(refillReaders) // stopped by StopReplicas, even if the transport fails
	if t, ok := h.tr.(interface{ setIncarnation(uint64) }); ok {
		t.setIncarnation(h.cfg.Incarnation)
	}
	if err := h.tr.Start(h); err != nil {
		return err
	}
	for i := 0; i < h.cfg.Workers; i++ {
		h.workers.Add(1)
		go h.worker()
	}
	h.wg.Add(1)
	go h.ticker()
	if h.cfg.Fsync == FsyncInterval {
		h.wg.Add(1)
		go h.syncer()
	}
	h.wg.Add(3)
	go h.housekeeping()
	go h.liveness()
	go h.stallReporter()
	return nil
}

// AddReplica opens (or creates) a replica and starts driving it: its state
// machine may be called on a worker before AddReplica returns. A caller
// that must first store the *Replica where the state machine finds it uses
// OpenReplica and StartReplica instead.
func (h *Host) AddReplica(cfg ReplicaConfig) (*Replica, error) {
	r, err := h.OpenReplica(cfg)
	if err != nil {
		return nil, err
	}
	if err := h.StartReplica(r); err != nil {
		return nil, err
	}
	return r, nil
}

// OpenReplica opens (or creates) a replica without driving it: until
// StartReplica nothing runs on it but what OpenReplica itself did on the
// calling goroutine (SM.Restore, a first status and OnLeaderChange).
// Messages for its group are dropped meanwhile (Raft resends them).
func (h *Host) OpenReplica(cfg ReplicaConfig) (*Replica, error) {
	h.mu.RLock()
	_, dup := h.replicas[cfg.Group]
	h.mu.RUnlock()
	if dup {
		return nil, fmt.Errorf("raft: group %d already open", cfg.Group)
	}
	r, err := newReplica(h, cfg)
	if err != nil {
		return nil, fmt.Errorf("raft: open %s: %w", cfg.Name, err)
	}
	return r, nil
}

// StartReplica registers a replica from OpenReplica and starts driving it.
// On error the replica is closed.
func (h *Host) StartReplica(r *Replica) error {
	h.mu.Lock()
	_, dup := h.replicas[r.cfg.Group]
	if !dup {
		h.replicas[r.cfg.Group] = r
	}
	h.mu.Unlock()
	if dup {
		r.mu.Lock()
		r.closeLocked()
		r.mu.Unlock()
		return fmt.Errorf("raft: group %d already open", r.cfg.Group)
	}
	h.schedule(r)
	return nil
}

// RemoveReplica stops a replica and deletes its files.
func (h *Host) RemoveReplica(group uint64) error {
	h.mu.Lock()
	r := h.replicas[group]
	delete(h.replicas, group)
	h.mu.Unlock()
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.closeLocked(); err != nil {
		h.logger.Warn("closing removed replica", "partition", r.cfg.Name, "err", err)
	}
	if h.states != nil {
		// Forgotten before the files go: a crash in between leaves a
		// directory without state, which refuses to open and says to
		// delete it, rather than state that a new group could inherit.
		if err := h.states.remove(group); err != nil {
			return err
		}
	}
	return os.RemoveAll(r.cfg.Dir)
}

// Replica returns the replica of group, or nil.
func (h *Host) Replica(group uint64) *Replica {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.replicas[group]
}

// Replicas returns every open replica.
func (h *Host) Replicas() []*Replica {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*Replica, 0, len(h.replicas))
	for _, r := range h.replicas {
		out = append(out, r)
	}
	return out
}

// SetStopping makes this node refuse leadership from now on: it never
// campaigns and ignores transfer requests, but still votes.
func (h *Host) SetStopping() { h.stopping.Store(true) }

// Stopping reports whether SetStopping was called.
func (h *Host) Stopping() bool { return h.stopping.Load() }

func (h *Host) nextProposalID() uint64 {
	return h.id<<48 | (h.propSeq.Add(1) & (1<<48 - 1))
}

func (h *Host) leaderChanged(r *Replica, s *Status) {
	if h.cfg.OnLeaderChange != nil {
		h.cfg.OnLeaderChange(r, s)
	}
}

// SyncAll fsyncs every replica's log and Raft state now.
func (h *Host) SyncAll() error {
	var errs []error
	for _, r := range h.Replicas() {
		if err := r.Log().Sync(); err != nil && !errors.Is(err, errClosedLog) {
			errs = append(errs, fmt.Errorf("%s: %w", r.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// StopReplicas stops the timers and workers, then snapshots, syncs and
// closes every replica's storage. Raft processing ends here; the transport
// stays up until Close so peers see a clean goodbye.
func (h *Host) StopReplicas() error {
	if !h.stopped.CompareAndSwap(false, true) {
		return nil
	}
	h.cancel()
	h.wg.Wait()
	h.qmu.Lock()
	h.qclose = true
	h.qmu.Unlock()
	h.qcond.Broadcast()
	h.workers.Wait()
	if h.started.Load() {
		h.reads.stop() // before the logs they read close
	}
	// Close replicas in parallel: each syncs its own files, and a node with
	// hundreds of partitions should not fsync them one after the other.
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, r := range h.Replicas() {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.mu.Lock()
			err := r.closeLocked()
			r.mu.Unlock()
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", r.cfg.Name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if h.states != nil {
		// The commit indexes the replicas staged as they closed.
		if err := h.states.commit(); err != nil {
			errs = append(errs, err)
		}
		if err := h.states.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops everything, including the transport. Safe to call twice.
func (h *Host) Close() error {
	if !h.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := h.StopReplicas()
	if e := h.tr.Close(); e != nil && err == nil {
		err = e
	}
	return err
}
