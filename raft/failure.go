package raft

import (
	"slices"
	"sync"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Failure. A storage error (a failed write or fsync) or a panic inside a
// replica fails that replica only; the rest of the node keeps serving.
// A failed replica
//   - stops driving Raft at once: nothing is stepped, ticked or sent, and
//     every waiting proposal and transfer fails with ErrStopped;
//   - publishes a status that is not leading (Leader 0, Failed set), so the
//     broker stops routing clients to it;
//   - tells the group's other voters (chanGroupDown), which treat it as a
//     lost leader: quiet followers wake and the first live voter in
//     preference order campaigns without waiting for an election timeout
//     (this node still answers pings, so nothing else would tell them);
//   - retries after Config.RecoverDelay, doubling up to maxRecoverDelay:
//     it closes its files and loads them again as a restart would. Until
//     the disk works again each attempt fails the same way.

// maxRecoverDelay bounds the recovery backoff.
const maxRecoverDelay = time.Minute

// recovery is a failed replica's retry timer.
type recovery struct {
	mu    sync.Mutex
	timer *time.Timer
	delay time.Duration
	done  bool // the replica closed: no more attempts
}

// schedule arms the next attempt after the current delay, doubling it.
func (rc *recovery) schedule(base time.Duration, fire func()) time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.done {
		return 0
	}
	if rc.delay == 0 {
		rc.delay = base
	} else {
		rc.delay = min(2*rc.delay, maxRecoverDelay)
	}
	rc.timer = time.AfterFunc(rc.delay, fire)
	return rc.delay
}

// reset forgets the backoff after a successful recovery.
func (rc *recovery) reset() {
	rc.mu.Lock()
	rc.delay = 0
	rc.mu.Unlock()
}

// stop cancels any pending attempt for good (the replica closes).
func (rc *recovery) stop() {
	rc.mu.Lock()
	rc.done = true
	if rc.timer != nil {
		rc.timer.Stop()
	}
	rc.mu.Unlock()
}

// fail stops the replica after a storage error or a panic. Worker only.
func (r *Replica) fail(err error) {
	if r.failed {
		return
	}
	wasLeader := r.raftState == etcdraft.StateLeader
	r.failed = true
	r.halted.Store(true)
	r.host.logger.Error("raft replica stopped after storage error", "partition", r.cfg.Name, "err", err, "was_leader", wasLeader)
	// Publish first: a proposer told ErrStopped must find the replica
	// failed (not leading) when it looks at the status.
	r.publish()
	r.failProposals(ErrStopped)
	for _, w := range r.transfers {
		w.end(ErrStopped)
	}
	r.setTransfers(nil)
	r.unsynced = r.unsynced[:0]
	for _, v := range confMembers(r.st.cs) {
		if v != r.id {
			r.host.sendGroupNotice(v, r.cfg.Group, chanGroupDown, nil)
		}
	}
	if r.host.cfg.OnStorageError != nil {
		r.host.cfg.OnStorageError(r.cfg.Name, err)
	}
	r.scheduleRecovery()
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

func (r *Replica) scheduleRecovery() {
	d := r.recovery.schedule(r.host.cfg.RecoverDelay, func() {
		r.enqueue(func() { r.inRecover = true })
	})
	if d > 0 {
		r.host.logger.Info("raft replica will try to recover", "partition", r.cfg.Name, "in", d)
	}
}

// recover reloads a failed replica from disk. Worker only.
func (r *Replica) recover() {
	if !r.failed || r.stopped.Load() {
		return
	}
	if err := r.st.close(); err != nil {
		r.host.logger.Debug("closing failed replica storage", "partition", r.cfg.Name, "err", err)
	}
	var err error
	if st := r.host.states; st != nil {
		// What close staged, so load reads it back; on a store that
		// failed, this is the rewrite that proves it works again.
		err = st.commit()
	}
	if err == nil {
		err = r.load()
	}
	if err == nil {
		// Opening can succeed on a disk that fails writes: prove both
		// files take a write and an fsync before taking part again.
		if err = r.st.saveState(true); err == nil {
			err = r.syncLog()
		}
		if err != nil {
			r.st.close()
		}
	}
	if err != nil {
		r.host.logger.Warn("raft replica recovery failed", "partition", r.cfg.Name, "err", err)
		r.scheduleRecovery()
		return
	}
	r.failed = false
	r.halted.Store(false)
	r.recovery.reset()
	r.host.logger.Info("raft replica recovered", "partition", r.cfg.Name, "last_index", r.lastIndex, "applied", r.applied)
	r.publish()
	for _, v := range confMembers(r.st.cs) {
		if v != r.id {
			r.host.sendGroupNotice(v, r.cfg.Group, chanGroupUp, nil)
		}
	}
}

// onGroupDown handles a peer's notice that its replica of this group
// failed: as for a lost peer, but for this group only.
func (r *Replica) onGroupDown(from uint64) {
	r.peerDown(from)
}

// onLostTail handles a follower's report that it lost entries this leader
// counts as stored there (a torn tail after a crash without fsync). etcd
// raft never lowers a follower's Match, so the leader probes it and sends
// it what it lacks itself (refill.go).
func (r *Replica) onLostTail(from uint64) {
	if r.raftState != etcdraft.StateLeader || !slices.Contains(confMembers(r.st.cs), from) || r.refills[from] != nil {
		return
	}
	r.host.logger.Warn("follower lost acknowledged entries; probing it to send them again",
		"partition", r.cfg.Name, "node", from)
	r.noteRefillErr(r.probeMember(from))
}

// takeRecover reports and clears a due recovery attempt.
func (r *Replica) takeRecover() bool {
	r.inMu.Lock()
	defer r.inMu.Unlock()
	due := r.inRecover
	r.inRecover = false
	return due
}

// reportLostTail tells the leader, once per term, that its heartbeat
// committed past this replica's log (see onLostTail).
func (r *Replica) reportLostTail(m *pb.Message) {
	if r.lostTailTerm == m.GetTerm() {
		return
	}
	r.lostTailTerm = m.GetTerm()
	r.host.logger.Warn("leader counts entries this replica lost; telling it", "partition", r.cfg.Name,
		"leader", m.GetFrom(), "last_index", r.lastIndex)
	r.host.sendGroupNotice(m.GetFrom(), r.cfg.Group, chanLostTail, nil)
}
