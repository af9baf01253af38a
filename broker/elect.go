package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
	"github.com/chronik-dev/chronik/raft"
)

// ElectLeaders (KIP-183, KIP-460). A preferred election hands a
// partition's leadership to its preferred replica (Replicas[0]) through
// the same Raft transfer that a stopping node and the automatic rebalance
// use. Any node answers: when another node leads, this one asks it over
// the peer transport (noticeElect) and waits for its answer
// (noticeElected); the leader checks the target against its own ISR, which
// only it knows for sure. Unclean elections are refused.

const (
	noticeElect   uint16 = 4
	noticeElected uint16 = 5
)

// Bounds on the elections run at once: by one request, and for peers.
const (
	maxParallelElections = 64
	maxPeerElections     = 256
)

// electAsk asks a leader to hand group G to node To, waiting up to Wait ms.
type electAsk struct {
	ID    uint64 `json:"id"`
	Group uint64 `json:"g"`
	To    int32  `json:"to"`
	Wait  int64  `json:"ms"`
}

// electAnswer is the outcome: a Kafka error code and why.
type electAnswer struct {
	ID  uint64 `json:"id"`
	Err int16  `json:"err"`
	Msg string `json:"msg,omitempty"`
}

// electState tracks the asks this node waits on and the transfers it runs
// for peers. The zero value is ready.
type electState struct {
	mu    sync.Mutex
	next  uint64
	waits map[uint64]chan electAnswer
	busy  atomic.Int32
}

func (e *electState) register() (uint64, chan electAnswer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.waits == nil {
		e.waits = map[uint64]chan electAnswer{}
	}
	e.next++
	ch := make(chan electAnswer, 1)
	e.waits[e.next] = ch
	return e.next, ch
}

func (e *electState) forget(id uint64) {
	e.mu.Lock()
	delete(e.waits, id)
	e.mu.Unlock()
}

func (e *electState) deliver(a electAnswer) {
	e.mu.Lock()
	ch := e.waits[a.ID]
	delete(e.waits, a.ID)
	e.mu.Unlock()
	if ch != nil {
		ch <- a // buffered, and delivered at most once
	}
}

// uncleanRefused is what an unclean election is answered with.
const uncleanRefused = "Chronik never elects an out-of-sync replica: the records it is missing were acknowledged to producers, and electing it would lose them. A partition without a leader elects one among its in-sync replicas as soon as a majority of them is up."

// ElectLeaders implements kafka.Backend.
func (b *Broker) ElectLeaders(ctx context.Context, unclean bool, parts []kafka.ElectPartition) []kafka.ElectResult {
	type target struct {
		res      kafka.ElectResult
		group    uint64
		replicas []int32
	}
	var targets []target
	if parts == nil {
		for _, t := range b.metaSM.topics() {
			for i, pm := range t.Partitions {
				targets = append(targets, target{res: kafka.ElectResult{Topic: t.Name, Partition: int32(i)}, group: pm.Group, replicas: pm.Replicas})
			}
		}
	} else {
		for _, p := range parts {
			tg := target{res: kafka.ElectResult{Topic: p.Topic, Partition: p.Partition}}
			t, ok := b.metaSM.topic(p.Topic)
			if !ok || p.Partition < 0 || int(p.Partition) >= len(t.Partitions) {
				tg.res.Err, tg.res.Message = kerr.UnknownTopicOrPartition.Code, "no such partition"
			} else {
				tg.group, tg.replicas = t.Partitions[p.Partition].Group, t.Partitions[p.Partition].Replicas
			}
			targets = append(targets, tg)
		}
	}
	sem := make(chan struct{}, maxParallelElections)
	var wg sync.WaitGroup
	for i := range targets {
		tg := &targets[i]
		if tg.res.Err != 0 {
			continue
		}
		if unclean {
			if l := b.leaderOf(tg.group, false); l.leader >= 0 {
				tg.res.Err, tg.res.Message = kerr.ElectionNotNeeded.Code, fmt.Sprintf("node %d leads the partition; %s", l.leader, uncleanRefused)
			} else {
				tg.res.Err, tg.res.Message = kerr.EligibleLeadersNotAvailable.Code, uncleanRefused
			}
			continue
		}
		if len(tg.replicas) == 0 {
			tg.res.Err, tg.res.Message = kerr.PreferredLeaderNotAvailable.Code, "the partition has no replicas"
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a := b.electPreferred(ctx, tg.group, tg.replicas[0])
			tg.res.Err, tg.res.Message = a.Err, a.Msg
		}()
	}
	wg.Wait()
	out := make([]kafka.ElectResult, len(targets))
	for i, tg := range targets {
		out[i] = tg.res
	}
	return out
}

// electPreferred moves group g's leadership to node pref, asking whoever
// leads it, until it is done, refused or ctx ends.
func (b *Broker) electPreferred(ctx context.Context, g uint64, pref int32) electAnswer {
	start := time.Now()
	asked := false // a transfer was asked for: pref leading now is its doing
	for {
		changed := b.leaderEvents.wait()
		l := b.leaderOf(g, false)
		if l.leader == pref && asked {
			return electAnswer{}
		}
		if l.leader == pref {
			return electAnswer{Err: kerr.ElectionNotNeeded.Code, Msg: fmt.Sprintf("node %d, the preferred replica, leads the partition", pref)}
		}
		if a := b.preferredUnfit(pref, l.isr); a.Err != 0 {
			return a
		}
		var a electAnswer
		switch {
		case l.leader < 0:
			a.Err = kerr.NotLeaderForPartition.Code // an election is under way: wait for its leader
		case l.leader == b.cfg.NodeID:
			a, asked = b.electLocal(ctx, g, pref), true
		default:
			a, asked = b.askLeader(ctx, l.leader, g, pref), true
		}
		if a.Err == 0 {
			b.awaitLeader(ctx, g, pref)
			b.logger.Info("preferred leader elected", "group", g, "node", pref, "took", time.Since(start).Round(time.Microsecond))
			return a
		}
		if a.Err != kerr.NotLeaderForPartition.Code {
			return a
		}
		// Leadership moved under the request: go again once this node
		// hears of the new leader.
		pause := time.NewTimer(metaRetryPause)
		select {
		case <-changed:
		case <-pause.C:
		case <-ctx.Done():
		}
		pause.Stop()
		if ctx.Err() != nil {
			return electAnswer{Err: kerr.RequestTimedOut.Code, Msg: "the election did not complete within the request's timeout"}
		}
	}
}

// preferredUnfit refuses a preferred replica this node already knows
// cannot lead: down, stopping, not yet serving clients, or (when isr is
// known) out of sync.
func (b *Broker) preferredUnfit(pref int32, isr []int32) electAnswer {
	id := uint64(pref)
	if pref != b.cfg.NodeID {
		if !b.host.PeerAlive(id) || b.host.PeerLeaving(id) {
			return electAnswer{Err: kerr.PreferredLeaderNotAvailable.Code, Msg: fmt.Sprintf("node %d, the preferred replica, is down or shutting down", pref)}
		}
		if b.peerAge.isStarting(id) {
			return electAnswer{Err: kerr.PreferredLeaderNotAvailable.Code, Msg: fmt.Sprintf("node %d, the preferred replica, does not serve clients yet", pref)}
		}
	} else if b.host.Stopping() {
		return electAnswer{Err: kerr.PreferredLeaderNotAvailable.Code, Msg: fmt.Sprintf("node %d, the preferred replica, is shutting down", pref)}
	}
	if isr != nil && !slices.Contains(isr, pref) {
		return electAnswer{Err: kerr.PreferredLeaderNotAvailable.Code, Msg: fmt.Sprintf("node %d, the preferred replica, is not in sync (in-sync replicas %v)", pref, isr)}
	}
	return electAnswer{}
}

// electLocal hands group g, which this node should lead, to node pref.
func (b *Broker) electLocal(ctx context.Context, g uint64, pref int32) electAnswer {
	r := b.host.Replica(g)
	if r == nil {
		return electAnswer{Err: kerr.NotLeaderForPartition.Code}
	}
	st := r.Status()
	if !st.IsLeader() {
		if st.Leader == uint64(pref) {
			return electAnswer{Err: kerr.ElectionNotNeeded.Code, Msg: fmt.Sprintf("node %d, the preferred replica, leads the partition", pref)}
		}
		return electAnswer{Err: kerr.NotLeaderForPartition.Code}
	}
	if st.ID == uint64(pref) {
		return electAnswer{Err: kerr.ElectionNotNeeded.Code, Msg: fmt.Sprintf("node %d, the preferred replica, leads the partition", pref)}
	}
	if !slices.Contains(st.Voters, uint64(pref)) {
		return electAnswer{Err: kerr.PreferredLeaderNotAvailable.Code, Msg: fmt.Sprintf("node %d is not a replica of the partition", pref)}
	}
	if a := b.preferredUnfit(pref, toInt32s(st.ISR)); a.Err != 0 {
		return a
	}
	err := r.TransferLeadership(ctx, uint64(pref))
	switch {
	case err == nil:
		return electAnswer{}
	case ctx.Err() != nil:
		return electAnswer{Err: kerr.RequestTimedOut.Code, Msg: "the leadership transfer did not complete within the request's timeout"}
	default:
		if _, moved := err.(*raft.NotLeaderError); moved {
			return electAnswer{Err: kerr.NotLeaderForPartition.Code}
		}
		return electAnswer{Err: kerr.PreferredLeaderNotAvailable.Code, Msg: "the leadership transfer failed: " + err.Error()}
	}
}

// askLeader asks node leader, which leads group g as far as this node
// knows, to hand it to pref, and waits for its answer. A leader change
// heard meanwhile ends the wait with NOT_LEADER: the caller looks again
// (it may be the transfer asked for, heard of before the answer).
func (b *Broker) askLeader(ctx context.Context, leader int32, g uint64, pref int32) electAnswer {
	id, ch := b.elect.register()
	defer b.elect.forget(id)
	wait := maxElectWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl))
	}
	data, err := json.Marshal(electAsk{ID: id, Group: g, To: pref, Wait: wait.Milliseconds()})
	if err != nil {
		return electAnswer{Err: kerr.UnknownServerError.Code, Msg: err.Error()}
	}
	b.host.SendNotice(uint64(leader), noticeElect, data)
	for {
		changed := b.leaderEvents.wait()
		if l := b.leaderOf(g, false); l.leader != leader {
			return electAnswer{Err: kerr.NotLeaderForPartition.Code}
		}
		select {
		case a := <-ch:
			return a
		case <-changed:
		case <-ctx.Done():
			return electAnswer{Err: kerr.RequestTimedOut.Code, Msg: fmt.Sprintf("node %d, the leader, did not answer within the request's timeout", leader)}
		}
	}
}

// maxElectWait bounds how long a leader works on a peer's ask.
const maxElectWait = 5 * time.Minute

// awaitLeader waits until this node sees pref lead group g, or ctx ends,
// so that a client reading metadata from this node next sees the change.
func (b *Broker) awaitLeader(ctx context.Context, g uint64, pref int32) {
	for {
		changed := b.leaderEvents.wait()
		if b.leaderOf(g, false).leader == pref {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// onElectAsk serves a peer's ask on the transport's goroutine: the
// transfer runs on a goroutine of its own, bounded in number and time,
// and its answer goes back as a notice.
func (b *Broker) onElectAsk(from uint64, data []byte) {
	var a electAsk
	if err := json.Unmarshal(data, &a); err != nil {
		b.logger.Warn("bad election notice", "from", from, "err", err)
		return
	}
	answer := func(ans electAnswer) {
		ans.ID = a.ID
		out, err := json.Marshal(ans)
		if err == nil {
			b.host.SendNotice(from, noticeElected, out)
		}
	}
	if b.ctx.Err() != nil {
		answer(electAnswer{Err: kerr.NotLeaderForPartition.Code})
		return
	}
	if b.elect.busy.Add(1) > maxPeerElections {
		b.elect.busy.Add(-1)
		answer(electAnswer{Err: kerr.PreferredLeaderNotAvailable.Code, Msg: "too many elections in progress on the leader"})
		return
	}
	wait := min(max(time.Duration(a.Wait)*time.Millisecond, 0), maxElectWait)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer b.elect.busy.Add(-1)
		ctx, cancel := context.WithTimeout(b.ctx, wait)
		defer cancel()
		answer(b.electLocal(ctx, a.Group, a.To))
	}()
}

// onElectAnswer hands a leader's answer to the request waiting for it.
func (b *Broker) onElectAnswer(data []byte) {
	var a electAnswer
	if err := json.Unmarshal(data, &a); err == nil {
		b.elect.deliver(a)
	}
}
