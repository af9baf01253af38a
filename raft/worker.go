package raft

import (
	"context"
	"errors"
	"sync"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

func (h *Host) schedule(r *Replica) { h.enqueueReplica(r, false) }

// scheduleUrgent puts a replica at the front of the run queue: elections,
// leadership transfers and operator requests should not wait behind a
// backlog of ordinary replication work, since clients stall until they end.
func (h *Host) scheduleUrgent(r *Replica) { h.enqueueReplica(r, true) }

func (h *Host) enqueueReplica(r *Replica, urgent bool) {
	if urgent {
		r.urgent.Store(true)
	}
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
				r.urgent.Store(false)
				locked = append(locked, r)
			}
		}
		works = h.processBatch(locked, works[:0])
	}
}

// processBatch handles a Ready for each replica, sharing one round of
// fsyncs between the replicas that need one. The caller holds every
// replica's mu; processBatch releases them.
func (h *Host) processBatch(rs []*Replica, works []readyWork) []readyWork {
	t0 := time.Now()
	// Phase 1 in two passes: every replica steps and sends, then every
	// replica writes (ready.go, prepare).
	for _, r := range rs {
		var w readyWork
		if !r.stopped.Load() {
			t := time.Now()
			err := r.safely("prepare", func() (err error) {
				w, err = r.prepare()
				if err != nil || !w.has {
					r.settleConfProposals()
				}
				return err
			})
			noteMax(&h.stalls.prepOne, time.Since(t))
			if err != nil {
				r.fail(err)
			}
		}
		works = append(works, w)
	}
	for i, r := range rs {
		if r.failed || !works[i].has {
			continue
		}
		err := r.safely("prepare", func() error {
			defer r.settleConfProposals()
			return r.prepareWrite(&works[i])
		})
		if err != nil {
			r.fail(err)
		}
	}
	// A replica whose Ready has nothing to make durable finishes at once
	// rather than after the others' fsyncs: when leadership moves, most
	// steps (the old leader learning of its successor, the new leader's
	// first append) need none, and each would otherwise wait out the
	// fsync of some other group's vote.
	//
	// A replica that applies a configuration change fsyncs several files
	// in finish (confhistory.go, the state), which takes long on a disk
	// busy with a catch-up's writes: it finishes last, so the acks and
	// append answers of the rest of the batch do not wait for it.
	n := 0
	for i, r := range rs {
		switch {
		case r.failed:
			h.finishOne(r, &works[i])
		case !works[i].syncs() && !works[i].appliesConf():
			h.finishOne(r, &works[i])
		default:
			rs[n], works[n] = r, works[i]
			n++
		}
	}
	// Those that sync first: the round covers rs[:k].
	k := 0
	for i := range rs[:n] {
		if works[i].syncs() {
			rs[k], rs[i] = rs[i], rs[k]
			works[k], works[i] = works[i], works[k]
			k++
		}
	}
	t1 := time.Now()
	h.syncRound(rs[:k], works[:k])
	t2 := time.Now()
	for pass := range 2 {
		for i, r := range rs[:n] {
			if works[i].appliesConf() == (pass == 1) {
				h.finishOne(r, &works[i])
			}
		}
	}
	noteMax(&h.stalls.prepare, t1.Sub(t0)) // with the early finishes
	noteMax(&h.stalls.sync, t2.Sub(t1))
	noteMax(&h.stalls.finish, time.Since(t2))
	clear(works) // no Ready kept alive until the next batch
	return works
}

// appliesConf reports whether this Ready commits a configuration change,
// whose apply fsyncs in finish.
func (w *readyWork) appliesConf() bool {
	for _, e := range w.rd.CommittedEntries {
		if t := e.GetType(); t == pb.EntryConfChange || t == pb.EntryConfChangeV2 {
			return true
		}
	}
	return false
}

// syncs reports whether the sync phase has work for this Ready.
func (w *readyWork) syncs() bool { return w.stateRec != nil || w.needSync || w.stateSync }

// finishOne runs finish for r, releases it and reschedules it if needed.
func (h *Host) finishOne(r *Replica, w *readyWork) {
	if !r.failed && !r.stopped.Load() {
		t := time.Now()
		defer func() { noteMax(&h.stalls.finOne, time.Since(t)) }()
		if err := r.safely("finish", func() error { return r.finish(w) }); err != nil {
			r.fail(err)
		}
	}
	again := !r.failed && !r.stopped.Load() && r.rn.HasReady()
	removed := r.removedNotice
	r.removedNotice = false
	r.mu.Unlock()
	if r.rerun.Swap(false) || again {
		// A vote that arrived meanwhile keeps its place at the front.
		h.enqueueReplica(r, r.urgent.Swap(false))
	}
	if removed && h.cfg.OnRemoved != nil {
		h.cfg.OnRemoved(r.cfg.Group) // no raft lock held: it may remove the replica
	}
}

// syncRound is the shared sync phase of a batch: each replica's fsyncs and
// one commit to the node's hard-state log carrying every record of the
// batch run in parallel, and the round waits for all of them (group
// commit across replicas). Messages that depend on a record leave only in
// finish, after this returns: that is where a new term or vote is on disk
// before anything that relies on it is sent.
func (h *Host) syncRound(rs []*Replica, works []readyWork) {
	var syncs, owners []int
	var recs [][]byte
	for i, r := range rs {
		if r.failed {
			continue
		}
		w := &works[i]
		if w.stateRec != nil {
			recs = append(recs, w.stateRec)
			owners = append(owners, i)
		}
		if w.needSync || (w.stateSync && w.stateRec == nil) {
			syncs = append(syncs, i)
		}
	}
	jobs := len(syncs)
	if len(recs) > 0 {
		jobs++
	}
	if jobs == 0 {
		return
	}
	errs := make([]error, len(syncs))
	var stateErr error
	commit := func() {
		stateErr = h.states.commit(recs...)
	}
	syncOne := func(k int) {
		i := syncs[k]
		errs[k] = rs[i].safely("sync", func() error { return rs[i].sync(&works[i]) })
	}
	if jobs == 1 {
		if len(recs) > 0 {
			commit()
		} else {
			syncOne(0)
		}
	} else {
		// fsyncs of different files proceed in parallel.
		var wg sync.WaitGroup
		if len(recs) > 0 {
			wg.Go(commit)
		}
		for k := range syncs {
			wg.Go(func() { syncOne(k) })
		}
		wg.Wait()
	}
	for k, err := range errs {
		if err != nil {
			rs[syncs[k]].fail(err)
		}
	}
	for _, i := range owners {
		if stateErr != nil {
			rs[i].fail(stateErr)
		} else {
			rs[i].st.stateDirty = false // the record carried the commit index too
		}
	}
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
	last := time.Now()
	h.every(h.cfg.TickInterval, func() {
		now := time.Now()
		noteMax(&h.stalls.tick, now.Sub(last)-h.cfg.TickInterval)
		last = now
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
			if h.ctx.Err() != nil {
				// Stopping: closing syncs every log, and StopReplicas
				// waits for this loop, so a pass over hundreds of logs
				// would hold the shutdown up for nothing.
				return
			}
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
		if !h.PeerAlive(pref) || h.PeerLeaving(pref) || !containsID(s.ISR, pref) || s.Match[pref] < s.LastIndex ||
			containsID(s.GaggedPeers, pref) {
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
