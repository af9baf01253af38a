package broker

import (
	"slices"
	"time"

	"github.com/chronik-dev/chronik/kafka"
	"github.com/chronik-dev/chronik/raft"
)

// pickTarget chooses the follower to hand leadership to, skipping ones
// already tried; 0 when none. It must be live and not leaving; in-sync
// beats not, and serving beats starting.
//
// Then the group's clients (those using it here lately, clients): the
// follower more of them hold a live connection to wins. A client that
// connects only to the brokers it needs (librdkafka) would otherwise have
// to connect to the new leader first, and in a fast rolling restart its
// reconnect back-off towards a node that restarted moments ago reaches
// seconds (clients.go). When no follower reaches any of them, the one
// connected longer wins: it restarted longer ago, if at all, so a
// client's back-off towards it is the likeliest to be over.
//
// Otherwise, between two connected for settledPeer or more, the higher
// replicated index wins, otherwise the one connected longer. A node that
// connected moments ago has usually just restarted (a fast rolling
// restart stops the next node as soon as the last one is back in the
// ISR, which it rejoins once it holds every committed entry of the group,
// raft/insync.go, not once it is serving): it may still be opening its
// other replicas and drop the hand-over, which raft then abandons only an election timeout later
// (about 1 s, seen in TestRollingRestartSarama), and its clients have not
// reconnected yet. A settled follower a few entries behind is caught up
// first (raft sends the hand-over once it matches), which takes
// milliseconds.
func (b *Broker) pickTarget(st *raft.Status, tried map[uint64]bool, clients []kafka.ClientKey) uint64 {
	return chooseTarget(st, tried, clients, peerView{
		usable: func(id uint64) bool {
			return b.host.PeerAlive(id) && !b.host.PeerLeaving(id)
		},
		starting: b.peerAge.isStarting,
		age:      b.peerAge.age,
		reach:    b.peerClients.reach,
	})
}

// peerView is what chooseTarget knows of the peers.
type peerView struct {
	usable   func(id uint64) bool // connected and not leaving
	starting func(id uint64) bool // said it does not serve clients yet
	age      func(id uint64) time.Duration
	reach    func(id uint64, keys []kafka.ClientKey) int
}

// chooseTarget is pickTarget's rule over a view of the peers.
func chooseTarget(st *raft.Status, tried map[uint64]bool, clients []kafka.ClientKey, pv peerView) uint64 {
	inISR := map[uint64]bool{}
	for _, id := range st.ISR {
		inISR[id] = true
	}
	reach := map[uint64]int{}
	if len(clients) > 0 {
		for _, v := range st.Voters {
			reach[v] = pv.reach(v, clients)
		}
	}
	better := func(v, than uint64) bool {
		if inISR[v] != inISR[than] {
			return inISR[v]
		}
		if sv, st := !pv.starting(v), !pv.starting(than); sv != st {
			return sv // serving.go: clients can reach it
		}
		av, at := pv.age(v), pv.age(than)
		if reach[v] != reach[than] {
			return reach[v] > reach[than]
		}
		if len(clients) > 0 && reach[v] == 0 && av != at {
			return av > at
		}
		if av >= settledPeer && at >= settledPeer {
			return st.Match[v] > st.Match[than]
		}
		return av > at
	}
	var best uint64
	for _, v := range st.Voters {
		if v == st.ID || tried[v] || !pv.usable(v) ||
			slices.Contains(st.GaggedPeers, v) { // a rejoining replica refuses to lead
			continue
		}
		if best == 0 || better(v, best) {
			best = v
		}
	}
	return best
}
