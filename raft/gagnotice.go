package raft

import (
	"encoding/binary"
	"slices"
	"time"
)

// Telling the leader about the gag. A gagged replica drops MsgTimeoutNow,
// so a leadership transfer to it (a preferred-leader rebalance, a
// shutdown hand-over) would stall the group's proposals for an election
// timeout before etcd raft gives up. So a gagged replica tells its leader
// on chanGagged:
//
//	[u8 1 gagged, 0 not][u64 applied index]
//
// when it learns of a new leader or term, again every gagReportEvery
// while gagged, and once when its gag lifts (from the worker, before the
// new status is published). The leader counts a member as gagged for
// gagReportTTL after its last report, so a report lost with a connection
// expires; it never picks a gagged member as a transfer target, and
// TransferLeadership to one fails at once. The applied index lets
// Reconfigure tell a member that has not applied its promotion yet from
// one that did and is still gagged (a snapshot covered the promotion: it
// is promoted again in place, membership.go). A node of an older release
// takes the notice for a broker notice on an unknown channel and ignores
// it.
const chanGagged uint16 = 0xFFF5

// gagTold is what a replica last told its leader about its gag.
type gagTold struct {
	lead, term uint64
	gagged     bool
	at         time.Time
}

// gagReport is what a member last told this leader.
type gagReport struct {
	at      time.Time
	applied uint64
}

func (r *Replica) gagReportEvery() time.Duration {
	return time.Duration(r.host.cfg.ElectionTicks) * r.host.cfg.TickInterval
}

// tellGag reports this replica's gag to its leader when due. Worker only.
func (r *Replica) tellGag() {
	gagged := r.gagged.Load()
	if !gagged && !r.gagTold.gagged {
		return
	}
	bs := r.rn.BasicStatus()
	if bs.Lead == 0 || bs.Lead == r.id {
		return
	}
	t := r.gagTold
	if t.lead == bs.Lead && t.term == bs.GetTerm() && t.gagged == gagged && (!gagged || time.Since(t.at) < r.gagReportEvery()) {
		return
	}
	msg := make([]byte, 9)
	if gagged {
		msg[0] = 1
	}
	binary.BigEndian.PutUint64(msg[1:], r.applied)
	r.host.sendGroupNotice(bs.Lead, r.cfg.Group, chanGagged, msg)
	r.gagTold = gagTold{lead: bs.Lead, term: bs.GetTerm(), gagged: gagged, at: time.Now()}
}

// onGagNotice records a member's report about its gag. Worker only.
func (r *Replica) onGagNotice(from uint64, data []byte) {
	if len(data) < 9 || !slices.Contains(confMembers(r.st.cs), from) {
		return
	}
	if data[0] == 0 {
		if _, ok := r.gaggedPeers[from]; ok {
			delete(r.gaggedPeers, from)
			r.mustPublish = true
		}
		return
	}
	if _, ok := r.gaggedPeers[from]; !ok {
		r.mustPublish = true
	}
	r.gaggedPeers[from] = gagReport{at: time.Now(), applied: binary.BigEndian.Uint64(data[1:])}
}

// peerGagged reports whether member id said lately that it is gagged,
// and the applied index it said so at. Worker only.
func (r *Replica) peerGagged(id uint64) (applied uint64, gagged bool) {
	rep, ok := r.gaggedPeers[id]
	if !ok {
		return 0, false
	}
	if time.Since(rep.at) > 3*r.gagReportEvery() {
		delete(r.gaggedPeers, id)
		return 0, false
	}
	return rep.applied, true
}

// gaggedMembers lists the members that say they are gagged, sorted.
func (r *Replica) gaggedMembers() []uint64 {
	var out []uint64
	for id := range r.gaggedPeers {
		if _, g := r.peerGagged(id); g {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}
