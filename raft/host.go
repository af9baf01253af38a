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
	pb "go.etcd.io/raft/v3/raftpb"
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

	// RecoverDelay is how long a replica stopped by a storage error waits
	// before it reloads from disk; it doubles on each failed attempt, up to
	// a minute (see failure.go).
	RecoverDelay time.Duration

	// OnStorageError is told when a replica stops after a storage error.
	OnStorageError func(name string, err error)
	// OnLeaderChange is called on a worker when a replica's leader, term or
	// ISR changes. It must not block.
	OnLeaderChange func(r *Replica, s *Status)
	// OnNotice receives node-level messages sent with SendNotice.
	OnNotice func(from uint64, channel uint16, data []byte)
	// OnPeer is told when a peer connects or goes away.
	OnPeer func(id uint64, up bool)
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
	closed  atomic.Bool
	stopped atomic.Bool

	transferring sync.Map // group -> struct{}: rebalances in flight
	guard        msgGuard
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
	h.qcond = sync.NewCond(&h.qmu)
	return h, nil
}

// ID is this node's id.
func (h *Host) ID() uint64 { return h.id }

// Start starts the transport, the workers and the timers.
func (h *Host) Start() error {
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
	h.wg.Add(2)
	go h.housekeeping()
	go h.liveness()
	return nil
}

// Node-level channels on the transport (Raft messages use channel 0).
const (
	chanPing    uint16 = 0xFFF0 // liveness ping, no payload
	chanQuiesce uint16 = 0xFFF1 // group goes quiet (Group set)
	// chanGroupDown: the sender's replica of Group failed (failure.go).
	chanGroupDown uint16 = 0xFFF2
	// chanLostTail: the sender lost entries of Group that its leader
	// counts as stored there (failure.go).
	chanLostTail uint16 = 0xFFF3
	// chanGroupUp: the sender's replica of Group recovered; quiet peers
	// wake so it learns the leader at once.
	chanGroupUp uint16 = 0xFFF4
)

// liveness pings every peer a few times per election timeout and declares a
// peer down when nothing at all arrived from it for an election timeout.
// A dropped connection says so at once; this catches the silent failures
// (a network partition that blackholes traffic), on which quiet groups
// depend to wake up.
func (h *Host) liveness() {
	timeout := time.Duration(h.cfg.ElectionTicks) * h.cfg.TickInterval
	h.every(timeout/5, func() {
		now := time.Now()
		var silent []uint64
		h.peerMu.RLock()
		for id, alive := range h.alive {
			if !alive {
				continue
			}
			h.heardMu.Lock()
			last := h.lastHeard[id]
			h.heardMu.Unlock()
			if !last.IsZero() && now.Sub(last) > timeout {
				silent = append(silent, id)
			}
		}
		peers := make([]uint64, 0, len(h.alive))
		for id := range h.alive {
			peers = append(peers, id)
		}
		h.peerMu.RUnlock()
		for _, id := range silent {
			h.logger.Warn("peer silent; treating it as down", "node", id, "for", timeout)
			h.PeerDown(id, false)
		}
		for _, id := range peers {
			h.tr.Send(id, []WireMsg{{Channel: chanPing}})
		}
	})
}

// heard records traffic from a peer; a peer declared silent that speaks
// again is up.
func (h *Host) heard(id uint64) {
	h.heardMu.Lock()
	h.lastHeard[id] = time.Now()
	h.heardMu.Unlock()
	h.peerMu.RLock()
	alive, known := h.alive[id]
	h.peerMu.RUnlock()
	if known && !alive {
		h.PeerUp(id)
	}
}

func (h *Host) sendGroupNotice(to, group uint64, channel uint16, msg []byte) {
	h.tr.Send(to, []WireMsg{{Group: group, Channel: channel, Data: msg}})
}

// groupNotice handles the group-level channels; it reports false for any
// other channel.
func (h *Host) groupNotice(from uint64, wm WireMsg) bool {
	var op func(r *Replica)
	switch wm.Channel {
	case chanQuiesce:
		data := wm.Data
		op = func(r *Replica) { r.onQuiesce(from, data) }
	case chanGroupDown:
		op = func(r *Replica) { r.onGroupDown(from) }
	case chanLostTail:
		op = func(r *Replica) { r.onLostTail(from) }
	case chanGroupUp:
		op = func(r *Replica) { r.wake() }
	default:
		return false
	}
	if r := h.Replica(wm.Group); r != nil {
		r.enqueue(func() { r.inOps = append(r.inOps, func() { op(r) }) })
	}
	return true
}

// wakeAll ends quiescence everywhere (a peer came back and needs its
// leaders' attention).
func (h *Host) wakeAll() {
	for _, r := range h.Replicas() {
		if r.quiesced.Load() {
			r.enqueue(func() { r.inOps = append(r.inOps, r.wake) })
		}
	}
}

// AddReplica opens (or creates) a replica and starts driving it.
func (h *Host) AddReplica(cfg ReplicaConfig) (*Replica, error) {
	h.mu.Lock()
	if _, ok := h.replicas[cfg.Group]; ok {
		h.mu.Unlock()
		return nil, fmt.Errorf("raft: group %d already open", cfg.Group)
	}
	h.mu.Unlock()
	r, err := newReplica(h, cfg)
	if err != nil {
		return nil, fmt.Errorf("raft: open %s: %w", cfg.Name, err)
	}
	h.mu.Lock()
	h.replicas[cfg.Group] = r
	h.mu.Unlock()
	h.schedule(r)
	return r, nil
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

// PeerAlive reports whether peer id is connected.
func (h *Host) PeerAlive(id uint64) bool {
	if id == h.id {
		return true
	}
	h.peerMu.RLock()
	defer h.peerMu.RUnlock()
	return h.alive[id]
}

// SetPeerLeaving records that peer id is shutting down gracefully: it is
// no longer a target for leadership until it reconnects.
func (h *Host) SetPeerLeaving(id uint64) {
	h.peerMu.Lock()
	h.leaving[id] = true
	h.peerMu.Unlock()
}

// PeerLeaving reports whether peer id announced a shutdown.
func (h *Host) PeerLeaving(id uint64) bool {
	h.peerMu.RLock()
	defer h.peerMu.RUnlock()
	return h.leaving[id]
}

// SendNotice sends a node-level message on channel (non-zero) to node to.
func (h *Host) SendNotice(to uint64, channel uint16, data []byte) {
	h.tr.Send(to, []WireMsg{{Channel: channel, Data: data}})
}

func (h *Host) nextProposalID() uint64 {
	return h.id<<48 | (h.propSeq.Add(1) & (1<<48 - 1))
}

func (h *Host) schedule(r *Replica) { h.enqueueReplica(r, false) }

// scheduleUrgent puts a replica at the front of the run queue: elections,
// leadership transfers and operator requests should not wait behind a
// backlog of ordinary replication work, since clients stall until they end.
func (h *Host) scheduleUrgent(r *Replica) { h.enqueueReplica(r, true) }

func (h *Host) enqueueReplica(r *Replica, urgent bool) {
	if !r.queued.CompareAndSwap(false, true) {
		if !urgent {
			return
		}
		// Already queued: move it to the front.
		h.qmu.Lock()
		for i, q := range h.queue {
			if q == r {
				copy(h.queue[1:i+1], h.queue[:i])
				h.queue[0] = r
				break
			}
		}
		h.qmu.Unlock()
		return
	}
	h.qmu.Lock()
	if h.qclose {
		h.qmu.Unlock()
		return
	}
	if urgent {
		h.queue = append(h.queue, nil)
		copy(h.queue[1:], h.queue)
		h.queue[0] = r
	} else {
		h.queue = append(h.queue, r)
	}
	h.qmu.Unlock()
	h.qcond.Signal()
}

const workerBatch = 32

func (h *Host) worker() {
	defer h.workers.Done()
	batch := make([]*Replica, 0, workerBatch)
	works := make([]readyWork, 0, workerBatch)
	for {
		h.qmu.Lock()
		for len(h.queue) == 0 && !h.qclose {
			h.qcond.Wait()
		}
		if h.qclose {
			h.qmu.Unlock()
			return
		}
		n := min(len(h.queue), workerBatch)
		batch = append(batch[:0], h.queue[:n]...)
		h.queue = append(h.queue[:0], h.queue[n:]...)
		h.qmu.Unlock()
		// A replica may be queued again while another worker still holds
		// it. Waiting for it here could deadlock two workers holding each
		// other's replicas, so a busy replica is skipped and its holder
		// reschedules it (rerun is set before trying, cleared by the one
		// that gets the lock).
		locked := batch[:0]
		for _, r := range batch {
			r.queued.Store(false)
			r.rerun.Store(true)
			if r.mu.TryLock() {
				r.rerun.Store(false)
				locked = append(locked, r)
			}
		}
		works = h.processBatch(locked, works[:0])
	}
}

// processBatch handles a Ready for each replica, sharing one round of
// fsyncs between them. The caller holds every replica's mu; processBatch
// releases them.
func (h *Host) processBatch(rs []*Replica, works []readyWork) []readyWork {
	for _, r := range rs {
		var w readyWork
		var err error
		if !r.stopped.Load() {
			err = r.safely("prepare", func() (err error) { w, err = r.prepare(); return err })
			if err != nil {
				r.fail(err)
			}
		}
		works = append(works, w)
	}
	var syncs []int
	for i, r := range rs {
		if (works[i].needSync || works[i].stateSync) && !r.failed {
			syncs = append(syncs, i)
		}
	}
	switch len(syncs) {
	case 0:
	case 1:
		i := syncs[0]
		if err := rs[i].safely("sync", func() error { return rs[i].sync(&works[i]) }); err != nil {
			rs[i].fail(err)
		}
	default:
		// fsyncs of different files proceed in parallel; the round waits
		// for all of them (group commit across replicas).
		var wg sync.WaitGroup
		errs := make([]error, len(syncs))
		for k, i := range syncs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[k] = rs[i].safely("sync", func() error { return rs[i].sync(&works[i]) })
			}()
		}
		wg.Wait()
		for k, err := range errs {
			if err != nil {
				rs[syncs[k]].fail(err)
			}
		}
	}
	for i, r := range rs {
		if !r.failed && !r.stopped.Load() {
			if err := r.safely("finish", func() error { return r.finish(&works[i]) }); err != nil {
				r.fail(err)
			}
		}
		again := !r.failed && !r.stopped.Load() && r.rn.HasReady()
		r.mu.Unlock()
		if r.rerun.Swap(false) || again {
			h.schedule(r)
		}
	}
	return works
}

// every runs fn every d until the host stops.
func (h *Host) every(d time.Duration, fn func()) {
	defer h.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-h.ctx.Done():
			return
		}
		fn()
	}
}

func (h *Host) ticker() {
	h.every(h.cfg.TickInterval, func() {
		for _, r := range h.Replicas() {
			if r.quiesced.Load() || r.halted.Load() {
				continue
			}
			r.inMu.Lock()
			r.inTicks++
			r.inMu.Unlock()
			h.schedule(r)
		}
	})
}

func (h *Host) syncer() {
	h.every(h.cfg.FsyncInterval, func() {
		for _, r := range h.Replicas() {
			if err := r.Log().Sync(); err != nil && !errors.Is(err, errClosedLog) {
				r.enqueue(func() { r.inOps = append(r.inOps, func() { r.fail(err) }) })
			}
		}
	})
}

// housekeeping runs retention and leader rebalancing.
func (h *Host) housekeeping() {
	defer h.wg.Done()
	ret := time.NewTicker(h.cfg.RetentionInterval)
	defer ret.Stop()
	reb := time.NewTicker(250 * time.Millisecond)
	defer reb.Stop()
	for {
		select {
		case <-ret.C:
			for _, r := range h.Replicas() {
				r.enqueue(func() {
					r.inOps = append(r.inOps, func() {
						if err := r.retain(); err != nil {
							r.fail(err)
						}
					})
				})
			}
		case <-reb.C:
			if h.cfg.AutoRebalance && !h.stopping.Load() {
				h.rebalance()
			}
		case <-h.ctx.Done():
			return
		}
	}
}

// rebalance hands leadership back to preferred replicas that are in sync.
func (h *Host) rebalance() {
	for _, r := range h.Replicas() {
		s := r.Status()
		if s == nil || s.State != etcdraft.StateLeader || len(s.Voters) == 0 || s.Voters[0] == h.id || s.Transferee != 0 {
			continue
		}
		pref := s.Voters[0]
		if !h.PeerAlive(pref) || h.PeerLeaving(pref) || !containsID(s.ISR, pref) || s.Match[pref] < s.LastIndex {
			continue
		}
		if time.Since(s.LeaderChange) < h.cfg.RebalanceDelay {
			continue
		}
		if up := s.InSyncSince[pref]; up.IsZero() || time.Since(up) < h.cfg.RebalanceDelay {
			continue
		}
		if _, busy := h.transferring.LoadOrStore(r.cfg.Group, struct{}{}); busy {
			continue
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer h.transferring.Delete(r.cfg.Group)
			ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
			defer cancel()
			start := time.Now()
			if err := r.TransferLeadership(ctx, pref); err != nil {
				h.logger.Debug("preferred leader election failed", "partition", r.cfg.Name, "to", pref, "err", err)
				return
			}
			h.logger.Info("moved leadership back to preferred replica", "partition", r.cfg.Name, "node", pref, "took", time.Since(start).Round(time.Microsecond))
		}()
	}
}

func containsID(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// Receive implements TransportHandler.
func (h *Host) Receive(from uint64, msgs []WireMsg) {
	h.heard(from)
	for _, wm := range msgs {
		if h.groupNotice(from, wm) {
			continue
		}
		if wm.Channel == chanPing {
			continue
		}
		if wm.Channel != 0 {
			if h.cfg.OnNotice != nil {
				h.cfg.OnNotice(from, wm.Channel, wm.Data)
			}
			continue
		}
		r := h.Replica(wm.Group)
		if r == nil {
			continue // not created here yet; Raft will resend
		}
		m, err := decodeMessage(wm.Data)
		if err != nil {
			h.reject(from, wm.Group, &pb.Message{}, "undecodable: "+err.Error())
			continue
		}
		if why := checkPeerMessage(from, h.id, m, r.cfg.ForwardProposals); why != "" {
			h.reject(from, wm.Group, m, why)
			continue
		}
		r.inMu.Lock()
		r.inMsgs = append(r.inMsgs, m)
		r.inMu.Unlock()
		switch m.GetType() {
		case pb.MsgVote, pb.MsgVoteResp, pb.MsgPreVote, pb.MsgPreVoteResp, pb.MsgTimeoutNow:
			h.scheduleUrgent(r)
		default:
			h.schedule(r)
		}
	}
}

// PeerDown implements TransportHandler.
func (h *Host) PeerDown(id uint64, graceful bool) {
	h.peerMu.Lock()
	h.alive[id] = false
	h.peerMu.Unlock()
	if graceful {
		h.logger.Info("peer left", "node", id)
	} else {
		h.logger.Warn("peer connection lost", "node", id)
	}
	for _, r := range h.Replicas() {
		r.enqueue(func() { r.inOps = append(r.inOps, func() { r.peerDown(id) }) })
	}
	if h.cfg.OnPeer != nil {
		h.cfg.OnPeer(id, false)
	}
}

// PeerUp implements TransportHandler.
func (h *Host) PeerUp(id uint64) {
	h.peerMu.Lock()
	h.alive[id] = true
	delete(h.leaving, id)
	h.peerMu.Unlock()
	h.heardMu.Lock()
	h.lastHeard[id] = time.Now()
	h.heardMu.Unlock()
	h.wakeAll()
	if h.cfg.OnPeer != nil {
		h.cfg.OnPeer(id, true)
	}
}

func (h *Host) sendRaft(r *Replica, m *pb.Message) {
	data, err := encodeMessage(m)
	if err != nil {
		h.logger.Error("marshal raft message", "err", err)
		return
	}
	h.tr.Send(m.GetTo(), []WireMsg{{Group: r.cfg.Group, Data: data}})
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
