package raft

import (
	"time"

	etcdraft "go.etcd.io/raft/v3"
)

type indexSample struct {
	at    time.Time
	index uint64
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

// isr computes the in-sync voters (leader only: both halves of a joint
// configuration) and updates caughtUp, for learners too (Reconfigure
// promotes them by the same rule); learners are not in the ISR.
func (r *Replica) isr(match map[uint64]uint64) []uint64 {
	now := time.Now()
	out := []uint64{r.id}
	for _, v := range r.voters() {
		if v == r.id {
			continue
		}
		r.noteMatch(v, match[v], now)
		if r.inSync(v, now) {
			out = append(out, v)
		}
	}
	for _, v := range r.st.cs.GetVotersOutgoing() {
		if v != r.id && !containsID(out, v) {
			r.noteMatch(v, match[v], now)
			if r.inSync(v, now) {
				out = append(out, v)
			}
		}
	}
	for _, v := range r.st.cs.GetLearners() {
		r.noteMatch(v, match[v], now)
	}
	return out
}

// noteMatch updates when member v was last at the leader's log end,
// given its match index m: now if it holds the whole log, else the time
// of the latest sample of the leader's last index that m covers. A member
// that lapsed (its connection was lost) counts again only once it holds
// every committed entry, as Kafka admits a follower back to the ISR only
// when its log end reaches the high watermark: what it held before it went
// away says nothing about whether it replicates now. Without this, a node
// back from a restart showed in the ISR of every group the moment it
// reconnected, before it had loaded its replicas, and an orchestrator that
// then stopped the next node left each group waiting on it (0.9 s).
func (r *Replica) noteMatch(v, m uint64, now time.Time) {
	if r.lapsed[v] {
		if !r.host.PeerAlive(v) || m < r.rn.BasicStatus().GetCommit() {
			return
		}
		delete(r.lapsed, v)
		r.caughtUp[v] = now
		return
	}
	if m >= r.lastIndex {
		r.caughtUp[v] = now
		return
	}
	for i := len(r.samples) - 1; i >= 0; i-- {
		if r.samples[i].index <= m {
			if r.samples[i].at.After(r.caughtUp[v]) {
				r.caughtUp[v] = r.samples[i].at
			}
			return
		}
	}
}
