package broker

import (
	"slices"
	"testing"
	"time"

	"github.com/chronik-dev/chronik/kafka"
	"github.com/chronik-dev/chronik/raft"
)

// fakePeers is a peerView over fixed facts.
type fakePeers struct {
	down, leaving, starting map[uint64]bool
	age                     map[uint64]time.Duration
	clients                 map[uint64][]kafka.ClientKey // nil entry: the peer never said
}

func (f fakePeers) view() peerView {
	return peerView{
		usable:   func(id uint64) bool { return !f.down[id] && !f.leaving[id] },
		starting: func(id uint64) bool { return f.starting[id] },
		age:      func(id uint64) time.Duration { return f.age[id] },
		reach: func(id uint64, keys []kafka.ClientKey) int {
			held, ok := f.clients[id]
			if !ok {
				return len(keys)
			}
			n := 0
			for _, k := range keys {
				if slices.Contains(held, k) {
					n++
				}
			}
			return n
		},
	}
}

// threeVoters is the status of node 1 leading a group of 1, 2 and 3.
func threeVoters(isr []uint64, match2, match3 uint64) *raft.Status {
	return &raft.Status{ID: 1, Voters: []uint64{1, 2, 3}, ISR: isr, Match: map[uint64]uint64{1: 100, 2: match2, 3: match3}}
}

func TestChooseTarget(t *testing.T) {
	const rdk, other kafka.ClientKey = 11, 22
	settled := map[uint64]time.Duration{2: 5 * time.Second, 3: 10 * time.Second}
	cases := []struct {
		name    string
		st      *raft.Status
		peers   fakePeers
		clients []kafka.ClientKey
		tried   map[uint64]bool
		want    uint64
	}{
		{name: "no clients: the higher match between settled peers", st: threeVoters([]uint64{1, 2, 3}, 100, 98),
			peers: fakePeers{age: settled}, want: 2},
		{name: "no clients: the one connected longer when one is not settled", st: threeVoters([]uint64{1, 2, 3}, 100, 98),
			peers: fakePeers{age: map[uint64]time.Duration{2: 300 * time.Millisecond, 3: 2 * time.Second}}, want: 3},
		{name: "the peer the group's client is connected to, though behind", st: threeVoters([]uint64{1, 2, 3}, 100, 98),
			peers: fakePeers{age: settled, clients: map[uint64][]kafka.ClientKey{2: {other}, 3: {rdk}}}, clients: []kafka.ClientKey{rdk}, want: 3},
		{name: "the peer the client is connected to, though it restarted later",
			st:      threeVoters([]uint64{1, 2, 3}, 100, 100),
			peers:   fakePeers{age: map[uint64]time.Duration{2: 3 * time.Second, 3: 400 * time.Millisecond}, clients: map[uint64][]kafka.ClientKey{2: nil, 3: {rdk}}},
			clients: []kafka.ClientKey{rdk}, want: 3},
		{name: "more of the group's clients connected wins", st: threeVoters([]uint64{1, 2, 3}, 100, 100),
			peers: fakePeers{age: settled, clients: map[uint64][]kafka.ClientKey{2: {rdk, other}, 3: {rdk}}}, clients: []kafka.ClientKey{rdk, other}, want: 2},
		{name: "nobody connected: the longest uptime, not the higher match", st: threeVoters([]uint64{1, 2, 3}, 100, 97),
			peers: fakePeers{age: settled, clients: map[uint64][]kafka.ClientKey{2: {}, 3: {}}}, clients: []kafka.ClientKey{rdk}, want: 3},
		{name: "both connected: the usual rule (higher match)", st: threeVoters([]uint64{1, 2, 3}, 99, 100),
			peers: fakePeers{age: settled, clients: map[uint64][]kafka.ClientKey{2: {rdk}, 3: {rdk}}}, clients: []kafka.ClientKey{rdk}, want: 3},
		{name: "a peer that never said counts as connected", st: threeVoters([]uint64{1, 2, 3}, 100, 99),
			peers: fakePeers{age: settled, clients: map[uint64][]kafka.ClientKey{3: {rdk}}}, clients: []kafka.ClientKey{rdk}, want: 2},
		{name: "in sync beats connected", st: threeVoters([]uint64{1, 2}, 100, 100),
			peers: fakePeers{age: settled, clients: map[uint64][]kafka.ClientKey{2: {}, 3: {rdk}}}, clients: []kafka.ClientKey{rdk}, want: 2},
		{name: "serving beats connected", st: threeVoters([]uint64{1, 2, 3}, 100, 100),
			peers: fakePeers{age: settled, starting: map[uint64]bool{3: true}, clients: map[uint64][]kafka.ClientKey{2: {}, 3: {rdk}}}, clients: []kafka.ClientKey{rdk}, want: 2},
		{name: "a leaving peer is never chosen", st: threeVoters([]uint64{1, 2, 3}, 100, 100),
			peers: fakePeers{age: settled, leaving: map[uint64]bool{3: true}, clients: map[uint64][]kafka.ClientKey{2: {}, 3: {rdk}}}, clients: []kafka.ClientKey{rdk}, want: 2},
		{name: "a tried peer is skipped", st: threeVoters([]uint64{1, 2, 3}, 100, 100),
			peers: fakePeers{age: settled, clients: map[uint64][]kafka.ClientKey{2: {}, 3: {rdk}}}, clients: []kafka.ClientKey{rdk}, tried: map[uint64]bool{3: true}, want: 2},
		{name: "none usable", st: threeVoters([]uint64{1, 2, 3}, 100, 100),
			peers: fakePeers{age: settled, down: map[uint64]bool{2: true, 3: true}}, clients: []kafka.ClientKey{rdk}, want: 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := chooseTarget(c.st, c.tried, c.clients, c.peers.view()); got != c.want {
				t.Fatalf("chose node %d, want %d", got, c.want)
			}
		})
	}
}

func TestClientsNotice(t *testing.T) {
	keys := []kafka.ClientKey{3, 7, 1 << 60}
	cs, ok := decodeClients(encodeClients(keys))
	if !ok || cs.cut || len(cs.keys) != 3 {
		t.Fatalf("round trip: %v %v", cs, ok)
	}
	var pc peerClients
	if n := pc.reach(2, keys); n != 3 {
		t.Fatalf("a peer that never said reaches %d of 3, want all", n)
	}
	pc.set(2, cs)
	if n := pc.reach(2, []kafka.ClientKey{7, 8}); n != 1 {
		t.Fatalf("reach %d, want 1", n)
	}
	pc.forget(2)
	if n := pc.reach(2, []kafka.ClientKey{8}); n != 1 {
		t.Fatalf("after forget reach %d, want 1 (unknown)", n)
	}

	many := make([]kafka.ClientKey, maxClientSummary+5)
	for i := range many {
		many[i] = kafka.ClientKey(i + 1)
	}
	data := encodeClients(many)
	if len(data) != 2+8*maxClientSummary {
		t.Fatalf("notice of %d bytes, want it cut at %d keys", len(data), maxClientSummary)
	}
	cs, ok = decodeClients(data)
	if !ok || !cs.cut {
		t.Fatalf("cut list: ok %v cut %v", ok, cs.cut)
	}
	pc.set(3, cs)
	if n := pc.reach(3, []kafka.ClientKey{kafka.ClientKey(maxClientSummary + 3)}); n != 1 {
		t.Fatalf("a cut list reaches %d, want every client", n)
	}
	for _, bad := range [][]byte{nil, {2, 0}, {1, 0, 1, 2, 3}, append([]byte{1, 0}, make([]byte, 8*(maxClientSummary+1))...)} {
		if _, ok := decodeClients(bad); ok {
			t.Errorf("decoded a bad notice of %d bytes", len(bad))
		}
	}
}
