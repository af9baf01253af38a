package broker

import (
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/chronik-dev/chronik/raft"
)

// Brokers tell each other who leads what. A replica's own Raft status is
// the truth for groups this node hosts; for the others (clusters with more
// nodes than the replication factor), and for the ISR, which only a leader
// knows, the leader broadcasts a notice whenever leader, epoch or ISR
// change, and again to a peer that (re)connects.
const noticeLeaders uint16 = 1

type leaderInfo struct {
	Group  uint64  `json:"g"`
	Leader int32   `json:"l"`
	Epoch  int32   `json:"e"`
	ISR    []int32 `json:"i"`
}

type clusterView struct {
	mu     sync.RWMutex
	groups map[uint64]leaderInfo
	// last is the latest leadership of each group that named a leader: a
	// new term's election leaves groups without one for a moment.
	last map[uint64]leaderInfo
}

func newClusterView() *clusterView {
	return &clusterView{groups: map[uint64]leaderInfo{}, last: map[uint64]leaderInfo{}}
}

// update records li unless it is older than what is known.
func (v *clusterView) update(li leaderInfo) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	old, ok := v.groups[li.Group]
	if ok && li.Epoch < old.Epoch {
		return false
	}
	if ok && li.ISR == nil && li.Epoch == old.Epoch {
		// What a follower knows of a leadership (no ISR) only adds a
		// leader the view did not have; it never drops the ISR the leader
		// announced for this epoch.
		if old.Leader > 0 || li.Leader <= 0 {
			return false
		}
		li.ISR = old.ISR
	}
	if ok && old.Epoch == li.Epoch && old.Leader == li.Leader && slices.Equal(old.ISR, li.ISR) {
		return false
	}
	v.groups[li.Group] = li
	if li.Leader > 0 {
		v.last[li.Group] = li
	}
	return true
}

func (v *clusterView) get(g uint64) (leaderInfo, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	li, ok := v.groups[g]
	return li, ok
}

func (v *clusterView) forget(g uint64) {
	v.mu.Lock()
	delete(v.groups, g)
	delete(v.last, g)
	v.mu.Unlock()
}

// lastLeader is the latest leader known for g, even when the current term
// has none yet.
func (v *clusterView) lastLeader(g uint64) (leaderInfo, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	li, ok := v.last[g]
	return li, ok
}

func toInt32s(ids []uint64) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

// onLeaderChange runs on a Raft worker when a local replica's leader, term
// or ISR changed. It must not block.
func (b *Broker) onLeaderChange(r *raft.Replica, s *raft.Status) {
	li := leaderInfo{Group: r.Group(), Leader: int32(s.Leader), Epoch: int32(s.Term)}
	if s.IsLeader() {
		li.ISR = toInt32s(s.ISR)
	}
	if s.Leader == 0 {
		li.Leader = -1
	}
	b.view.update(li)
	b.leaderEvents.fire()
	if s.IsLeader() {
		b.broadcastLeaders([]leaderInfo{li}, 0)
	}
	if p := b.localPartition(r.Group()); p != nil {
		p.wake() // long polls on a replica that lost leadership return at once
	}
	b.signalLeadership()
}

// broadcastLeaders sends leader notices to every peer, or only to one.
func (b *Broker) broadcastLeaders(lis []leaderInfo, only int32) {
	data, err := json.Marshal(lis)
	if err != nil {
		return
	}
	for _, id := range b.peerIDs() {
		if only != 0 && id != only {
			continue
		}
		b.host.SendNotice(uint64(id), noticeLeaders, data)
	}
}

func (b *Broker) onNotice(from uint64, channel uint16, data []byte) {
	switch channel {
	case noticeLeaving:
		b.host.SetPeerLeaving(from)
		b.peerEvents.fire()
		b.logger.Info("peer is shutting down gracefully", "node", from)
		return
	case noticeServing:
		b.onServingNotice(from, data)
		return
	case noticeElect:
		b.onElectAsk(from, data)
		return
	case noticeElected:
		b.onElectAnswer(data)
		return
	case noticeIdentity:
		b.onIdentityNotice(from, data)
		return
	case noticeRegister:
		b.onRegisterNotice(from, data)
		return
	case noticeClients:
		b.onClientsNotice(from, data)
		return
	}
	if channel != noticeLeaders {
		return
	}
	var lis []leaderInfo
	if err := json.Unmarshal(data, &lis); err != nil {
		b.logger.Warn("bad leader notice", "from", from, "err", err)
		return
	}
	for _, li := range lis {
		if b.host.Replica(li.Group) != nil && li.Leader != int32(from) {
			continue // local Raft knows better, except for the leader's ISR
		}
		if b.view.update(li) {
			b.leaderEvents.fire()
		}
	}
}

func (b *Broker) onPeer(id uint64, up bool) {
	b.peerAge.note(id, up)
	b.peerEvents.fire()
	if !up {
		b.peerClients.forget(id)
		b.signalLeadership()
		return
	}
	b.host.SendNotice(id, noticeServing, b.servingState())
	b.sendClients(id)
	b.broadcastLed(int32(id))
}

// broadcastLed tells peers (or only one) about every group this node
// leads. Notices travel over a transport that drops messages while a
// connection is re-established, so this also runs periodically.
func (b *Broker) broadcastLed(only int32) {
	var lis []leaderInfo
	for _, r := range b.host.Replicas() {
		if s := r.Status(); s.IsLeader() {
			lis = append(lis, leaderInfo{Group: r.Group(), Leader: int32(s.Leader), Epoch: int32(s.Term), ISR: toInt32s(s.ISR)})
		}
	}
	if len(lis) > 0 {
		b.broadcastLeaders(lis, only)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// fmtDur prints a duration the way the runbook's log lines show them:
// milliseconds below a second ("150ms"), seconds with one decimal above.
func fmtDur(d time.Duration) string {
	if d < time.Millisecond {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'g', 2, 64) + "ms"
	}
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
}
