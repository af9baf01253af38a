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
