package broker

import (
	"slices"
	"time"
)

// noticeServing tells peers whether this node serves Kafka clients yet
// (one byte: 0 starting, 1 serving). A restarted node rejoins its Raft
// groups, and so looks in sync, before its listener accepts clients (it
// waits until its replicas know their leaders); handing it leadership
// then leaves clients with nowhere to write until it does. A stopping
// node therefore prefers a serving target, and waits a little for one.
// Peers that never send this notice (older releases) count as serving.
const noticeServing uint16 = 3

// servingWait bounds how long a transfer waits for a starting target to
// begin serving, while this node keeps leading and serving.
const servingWait = 2 * time.Second

// setStarting records a peer's noticeServing; peerAges forgets it when
// the peer goes away (unknown again: it says so when back).
func (pa *peerAges) setStarting(id uint64, starting bool) {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	if pa.starting == nil {
		pa.starting = map[uint64]bool{}
	}
	if starting {
		pa.starting[id] = true
	} else {
		delete(pa.starting, id)
	}
}

// isStarting reports whether peer id said it does not serve clients yet.
func (pa *peerAges) isStarting(id uint64) bool {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	return pa.starting[id]
}

// servingState is this node's noticeServing payload.
func (b *Broker) servingState() []byte {
	if b.servingSent.Load() {
		return []byte{1}
	}
	return []byte{0}
}

// announceServing tells every peer once that this node now serves clients.
func (b *Broker) announceServing() {
	if !b.servingSent.CompareAndSwap(false, true) {
		return
	}
	for _, id := range b.peerIDs() {
		b.host.SendNotice(uint64(id), noticeServing, []byte{1})
	}
}

// onServingNotice records a peer's noticeServing.
func (b *Broker) onServingNotice(from uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	b.peerAge.setStarting(from, data[0] == 0)
	b.peerEvents.fire()
}

// awaitPeersServing holds a stopping node's leadership, until deadline at
// most, while a live peer says it does not serve clients yet. Such a peer
// restarted moments ago and is still loading and catching up its
// replicas; with this node gone it would be the quorum partner of every
// group the two share, so every commit would wait on it (a fast roll
// stopped the next node 9 ms after the previous one came back and stalled
// every partition for 0.4-2 s).
func (b *Broker) awaitPeersServing(deadline time.Time) {
	start := time.Now()
	for {
		changed := b.peerEvents.wait()
		starting := slices.ContainsFunc(b.peerIDs(), func(id int32) bool {
			return b.host.PeerAlive(uint64(id)) && !b.host.PeerLeaving(uint64(id)) && b.peerAge.isStarting(uint64(id))
		})
		if !starting {
			if d := time.Since(start); d > time.Millisecond {
				b.logger.Info("restarted peers serve clients; transferring", "waited", d.Round(time.Millisecond))
			}
			return
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-changed:
			t.Stop()
		case <-t.C:
			b.logger.Warn("a restarted peer still does not serve clients; transferring anyway", "waited", time.Since(start).Round(time.Millisecond))
			return
		}
	}
}
