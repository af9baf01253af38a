package raft

import (
	"sync/atomic"
	"time"
)

// Stall accounting. A leader steps down (CheckQuorum) when a quorum of
// its voters stays silent for an election timeout: either its heartbeats
// or their answers were late, because some node's workers or its whole
// process stood still. To tell which, the host keeps the worst delays of
// the last second and logs them when one passes stallReportMin:
//
//	inbox    a message waited this long in a replica's inbox before a
//	         worker stepped it (workers busy or blocked)
//	prepare, sync, finish
//	         the longest phase of one batch (ready.go): a slow write or
//	         read, a slow fsync round, a slow apply
//	tick     the ticker fired this much later than its interval (the
//	         process was not scheduled: CPU starvation, GC)
//
// Step-downs are counted by reason: "quorum" (CheckQuorum: same term, no
// leader known) and "term" (a higher term or a transfer).

// stallReportMin is the delay worth a log line: a fifth of the default
// election timeout.
const stallReportMin = 200 * time.Millisecond

type stallStats struct {
	inbox, prepare, sync, finish, tick atomic.Int64 // worst ns since the last report
	// one replica's worst: prepare, finish, log append, state machine apply
	prepOne, finOne, appendOne, applyOne atomic.Int64
	drainOne, readyOne, sendOne          atomic.Int64

	stepDownsQuorum atomic.Uint64
	stepDownsTerm   atomic.Uint64
}

// noteMax raises *a to d if d is larger.
func noteMax(a *atomic.Int64, d time.Duration) {
	for {
		cur := a.Load()
		if int64(d) <= cur || a.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// stallReporter logs the worst delays once a second when one is long.
func (h *Host) stallReporter() {
	h.every(time.Second, func() {
		s := &h.stalls
		vals := []*atomic.Int64{&s.inbox, &s.prepare, &s.sync, &s.finish, &s.tick, &s.prepOne, &s.finOne, &s.appendOne, &s.applyOne, &s.drainOne, &s.readyOne, &s.sendOne}
		var got [12]time.Duration
		worst := time.Duration(0)
		for i, v := range vals {
			got[i] = time.Duration(v.Swap(0))
			worst = max(worst, got[i])
		}
		if worst < stallReportMin {
			return
		}
		h.logger.Warn("raft stall", "inbox", got[0].Round(time.Millisecond), "prepare", got[1].Round(time.Millisecond),
			"sync", got[2].Round(time.Millisecond), "finish", got[3].Round(time.Millisecond),
			"tick_late", got[4].Round(time.Millisecond), "prepare_one", got[5].Round(time.Millisecond),
			"finish_one", got[6].Round(time.Millisecond), "append_one", got[7].Round(time.Millisecond),
			"apply_one", got[8].Round(time.Millisecond), "drain_one", got[9].Round(time.Millisecond),
			"ready_one", got[10].Round(time.Millisecond), "send_one", got[11].Round(time.Millisecond), "queue", h.queueLen())
	})
}

func (h *Host) queueLen() int {
	h.qmu.Lock()
	defer h.qmu.Unlock()
	return len(h.queue)
}

// noteStepDown counts a replica that stopped leading; lead is the leader
// it knows of now, prevTerm its term while it led. Worker only.
func (r *Replica) noteStepDown(lead, prevTerm uint64) {
	if lead == 0 && r.term == prevTerm {
		r.host.stalls.stepDownsQuorum.Add(1)
		return
	}
	r.host.stalls.stepDownsTerm.Add(1)
}

// StepDowns is how many times replicas on this node stopped leading, by
// reason: "quorum" (CheckQuorum: a quorum stayed silent for an election
// timeout) and "term" (a higher term, a transfer);
// chronik_raft_step_downs_total.
func (h *Host) StepDowns() map[string]uint64 {
	return map[string]uint64{"quorum": h.stalls.stepDownsQuorum.Load(), "term": h.stalls.stepDownsTerm.Load()}
}
