package broker

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/chronik-dev/chronik/kafka"
)

// noticeClients carries a node's live client connections to its peers: a
// version byte (1), a flags byte (bit 0: the list was cut at
// maxClientSummary) and one 8-byte kafka.ClientKey per client, sorted.
// A stopping node hands each partition to the in-sync follower that the
// partition's clients are already connected to (pickTarget). librdkafka,
// for one, connects only to the brokers it needs, and its reconnect
// back-off towards a node doubles on every connection attempt (up to 10 s)
// and resets only after 10 s without one: in a fast rolling restart it
// reaches seconds towards every node, and a partition handed to a node
// the client has not reconnected to since that node restarted waited that
// long (TestRollingRestartLibrdkafka, five rolls: 3.8-6.3 s).
const noticeClients uint16 = 8

// maxClientSummary bounds one notice (32 KiB of keys). A node with more
// clients sends the first ones and says the list is cut; peers then count
// it as reaching every client, which leaves the choice to the other rules.
const maxClientSummary = 4096

// clientsEvery is how often a changed set of clients is sent again.
const clientsEvery = 100 * time.Millisecond

// clientWindow: a client whose Produce or Fetch of a partition was served
// here this recently counts as a client of that partition.
const clientWindow = 5 * time.Second

// peerClients holds each peer's latest notice.
type peerClients struct {
	mu    sync.Mutex
	peers map[uint64]clientSet
}

type clientSet struct {
	keys map[kafka.ClientKey]struct{}
	cut  bool // the peer has more clients than it listed
}

func (pc *peerClients) set(peer uint64, cs clientSet) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.peers == nil {
		pc.peers = map[uint64]clientSet{}
	}
	pc.peers[peer] = cs
}

// forget drops a peer's set when it goes away: its connections went with
// it (or, if only the peer link broke, the peer sends them again).
func (pc *peerClients) forget(peer uint64) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	delete(pc.peers, peer)
}

// reach is how many of keys peer holds live connections for. A peer that
// never said (an older release, or its notice is still on the way) or
// whose list was cut counts as reaching them all, so that it is neither
// preferred nor avoided for want of knowledge.
func (pc *peerClients) reach(peer uint64, keys []kafka.ClientKey) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	cs, ok := pc.peers[peer]
	if !ok || cs.cut {
		return len(keys)
	}
	n := 0
	for _, k := range keys {
		if _, ok := cs.keys[k]; ok {
			n++
		}
	}
	return n
}

// encodeClients builds a noticeClients payload from sorted keys.
func encodeClients(keys []kafka.ClientKey) []byte {
	var flags byte
	if len(keys) > maxClientSummary {
		keys, flags = keys[:maxClientSummary], 1
	}
	out := make([]byte, 2, 2+8*len(keys))
	out[0], out[1] = 1, flags
	for _, k := range keys {
		out = binary.BigEndian.AppendUint64(out, uint64(k))
	}
	return out
}

// decodeClients parses a noticeClients payload; ok is false for a payload
// of another version or shape.
func decodeClients(data []byte) (cs clientSet, ok bool) {
	if len(data) < 2 || data[0] != 1 || (len(data)-2)%8 != 0 || (len(data)-2)/8 > maxClientSummary {
		return clientSet{}, false
	}
	cs = clientSet{keys: make(map[kafka.ClientKey]struct{}, (len(data)-2)/8), cut: data[1]&1 != 0}
	for i := 2; i < len(data); i += 8 {
		cs.keys[kafka.ClientKey(binary.BigEndian.Uint64(data[i:]))] = struct{}{}
	}
	return cs, true
}

// onClientsNotice records a peer's clients.
func (b *Broker) onClientsNotice(from uint64, data []byte) {
	cs, ok := decodeClients(data)
	if !ok {
		b.logger.Debug("bad clients notice", "from", from, "len", len(data))
		return
	}
	b.peerClients.set(from, cs)
}

// sendClients sends this node's clients to one peer.
func (b *Broker) sendClients(peer uint64) {
	b.host.SendNotice(peer, noticeClients, encodeClients(b.kafka.LiveClients()))
}

// clientsLoop sends this node's clients to every peer whenever they
// changed, at most every clientsEvery; a peer that connects gets them at
// once (onPeer). Owned by the broker, stopped with its context.
func (b *Broker) clientsLoop(ctx context.Context) {
	defer b.wg.Done()
	t := time.NewTicker(clientsEvery)
	defer t.Stop()
	var sent uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v := b.kafka.ClientsVersion()
		if v == sent {
			continue
		}
		sent = v
		data := encodeClients(b.kafka.LiveClients())
		for _, id := range b.peerIDs() {
			b.host.SendNotice(uint64(id), noticeClients, data)
		}
	}
}

// groupClients maps each partition group to the clients using it here
// (clientWindow).
func (b *Broker) groupClients() map[uint64][]kafka.ClientKey {
	byTP := b.kafka.PartitionClients(time.Now().Add(-clientWindow))
	if len(byTP) == 0 {
		return nil
	}
	out := make(map[uint64][]kafka.ClientKey, len(byTP))
	b.mu.RLock()
	defer b.mu.RUnlock()
	for tp, keys := range byTP {
		if p := b.byTP[tpKey{topic: tp.Topic, part: tp.Partition}]; p != nil {
			out[p.group] = keys
		}
	}
	return out
}
