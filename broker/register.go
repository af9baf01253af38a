package broker

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Registration: every node puts itself in the broker registry when it
// starts (an idempotent metadata command). A node that knows the metadata
// leader proposes it itself; one that does not (a new node, not yet a
// member of the metadata group) sends it on noticeRegister to its peers,
// and any of them proposes it on its behalf.
const noticeRegister uint16 = 7

// maxRegisterNotice bounds a registration notice.
const maxRegisterNotice = 16 << 10

// registerRetry spaces registration attempts while none has applied.
const registerRetry = time.Second

// membership is the broker's identity and registry bookkeeping.
type membership struct {
	idMu sync.Mutex
	id   *identity // node.json; replaced (never changed) under idMu

	// joinAnswers carries identity answers to decideMode.
	joinAnswers chan identityAnswer
	// proxied carries peers' registrations to proxyLoop.
	proxied chan memberCmd

	registered atomic.Bool // this incarnation's registration applied

	peerMu  sync.Mutex
	peerSet map[int32]string   // raft addresses given to the transport
	retired map[int32][]string // incarnations handed to SetRetiredIncarnation
}

func newMembership(id *identity) membership {
	return membership{id: id, joinAnswers: make(chan identityAnswer, 16), proxied: make(chan memberCmd, 16),
		peerSet: map[int32]string{}, retired: map[int32][]string{}}
}

// selfRegistration is what this node registers: its own [[nodes]] entry
// (advertised addresses only) and its incarnation.
func (b *Broker) selfRegistration() memberCmd {
	self, _ := b.cfg.Cluster.Node(b.cfg.NodeID)
	id := b.ident()
	bm := &brokerMeta{ID: self.ID, Kafka: self.Kafka, Raft: self.Raft, Admin: self.Admin, Rack: self.Rack,
		Incarnation: id.Incarnation, Registered: time.Now().UTC().Truncate(time.Millisecond)}
	for _, l := range self.Listeners {
		l.Listen = ""
		bm.Listeners = append(bm.Listeners, l)
	}
	return memberCmd{Broker: bm, Join: id.Mode == modeJoin}
}

// registeredAs reports whether the registry holds want as it is.
func (b *Broker) registeredAs(want *brokerMeta) bool {
	cur, ok := b.metaSM.broker(want.ID)
	return ok && cur.Incarnation == want.Incarnation && cur.sameAddresses(want)
}

// registerLoop registers this node and keeps its registration current; it
// runs until the broker stops. It wakes on metadata and leader changes,
// tries again when a peer connects, and every registerRetry while the
// registration is not in.
func (b *Broker) registerLoop() {
	defer b.wg.Done()
	want := b.selfRegistration()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		changed, peerUp := b.leaderEvents.wait(), b.peerEvents.wait()
		if b.registeredAs(want.Broker) {
			if !b.mb.registered.Swap(true) {
				b.logger.Info("registered in the cluster metadata", "node", b.cfg.NodeID, "incarnation", want.Broker.Incarnation)
				b.metadataChanged()
			}
			select {
			case <-changed:
				continue
			case <-b.ctx.Done():
				return
			}
		}
		select {
		case <-retry.C:
			b.tryRegister(want)
			retry.Reset(registerRetry)
		case <-peerUp:
			// A notice sent while no connection was up is lost: send it
			// again as soon as a peer connects.
			b.tryRegister(want)
		case <-changed:
		case <-b.ctx.Done():
			return
		}
	}
}

// tryRegister proposes the registration through the metadata group if
// this node knows its leader, and asks the peers to otherwise (or if that
// failed).
func (b *Broker) tryRegister(want memberCmd) {
	if b.meta.Status().Leader != 0 {
		ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
		res, err := b.metaPropose(ctx, metaCmd{Op: "register_broker", Member: &want})
		cancel()
		if err == nil {
			if res.Err != 0 {
				b.logger.Error("the cluster refused this node's registration", "err", kerr.ErrorForCode(res.Err), "why", res.Msg)
			}
			return
		}
	}
	data, err := json.Marshal(&want)
	if err != nil {
		return
	}
	for _, id := range b.registrationPeers() {
		b.host.SendNotice(uint64(id), noticeRegister, data)
	}
}

// registrationPeers are the nodes a registration notice goes to: the
// cluster.toml ones and the registered ones.
func (b *Broker) registrationPeers() []int32 {
	ids := b.peerIDs()
	for _, n := range b.cfg.Cluster.Nodes {
		if n.ID != b.cfg.NodeID && !slices.Contains(ids, n.ID) {
			ids = append(ids, n.ID)
		}
	}
	return ids
}

// onRegisterNotice takes a peer's registration to proxyLoop. The sender is
// the node the transport authenticated; a registration for another id is
// dropped. Runs on a transport goroutine: never blocks.
func (b *Broker) onRegisterNotice(from uint64, data []byte) {
	if len(data) > maxRegisterNotice {
		return
	}
	var c memberCmd
	if err := json.Unmarshal(data, &c); err != nil || c.Broker == nil || uint64(c.Broker.ID) != from {
		return
	}
	if inc := b.host.PeerIncarnation(from); inc != 0 && inc != parseIncarnation(c.Broker.Incarnation) {
		return // the connection states another data directory than the notice
	}
	select {
	case b.mb.proxied <- c:
	default: // busy: the node sends it again
	}
}

// proxyLoop proposes peers' registrations, at most one per node per
// registerRetry, until the broker stops.
func (b *Broker) proxyLoop() {
	defer b.wg.Done()
	last := map[int32]time.Time{}
	for {
		var c memberCmd
		select {
		case c = <-b.mb.proxied:
		case <-b.ctx.Done():
			return
		}
		id := c.Broker.ID
		if b.registeredAs(c.Broker) || time.Since(last[id]) < registerRetry {
			continue
		}
		last[id] = time.Now()
		ctx, cancel := context.WithTimeout(b.ctx, 3*time.Second)
		res, err := b.metaPropose(ctx, metaCmd{Op: "register_broker", Member: &c})
		cancel()
		switch {
		case err != nil:
			b.logger.Debug("proposing a peer's registration failed", "node", id, "err", err)
		case res.Err != 0:
			b.logger.Warn("a node's registration was refused", "node", id, "why", res.Msg)
		default:
			b.logger.Info("registered a node on its behalf", "node", id, "incarnation", c.Broker.Incarnation, "join", c.Join)
		}
	}
}

// syncPeers points the transport at the registered brokers (a broker
// cluster.toml does not list is dialled and its hello accepted once it is
// registered), forgets removed ones, and has the host refuse retired
// incarnations. Runs on the reconcile loop.
func (b *Broker) syncPeers() {
	b.mb.peerMu.Lock()
	defer b.mb.peerMu.Unlock()
	for _, bm := range b.metaSM.brokers() {
		if bm.ID == b.cfg.NodeID {
			continue
		}
		own, configured := b.cfg.Cluster.Node(bm.ID)
		addr := bm.Raft
		if configured {
			addr = own.Raft // cluster.toml's address wins (see clusterNodes)
		}
		cur, set := b.mb.peerSet[bm.ID]
		switch {
		case bm.State == brokerRemoved:
			if !set || cur != "" {
				b.tr.RemovePeer(uint64(bm.ID))
				b.mb.peerSet[bm.ID] = "" // removed
				b.logger.Info("peer removed from the cluster: its connections are refused", "node", bm.ID)
			}
		case !set && configured:
			b.mb.peerSet[bm.ID] = addr // the transport has it from the start
		case cur != addr:
			b.tr.SetPeer(uint64(bm.ID), addr)
			b.mb.peerSet[bm.ID] = addr
			b.logger.Info("peer address from the broker registry", "node", bm.ID, "raft", addr)
		}
		retired := retiredOf(&bm)
		retired = retired[:len(retired)-1] // the current one is not retired
		if !slices.Equal(b.mb.retired[bm.ID], retired) {
			for _, inc := range retired {
				if v := parseIncarnation(inc); v != 0 {
					b.host.SetRetiredIncarnation(uint64(bm.ID), v)
				}
			}
			b.mb.retired[bm.ID] = retired
		}
	}
}

func parseIncarnation(s string) uint64 {
	id := identity{Incarnation: s}
	return id.incarnation()
}

// learnGuest lets this node answer a node it does not know yet (one being
// added: neither cluster.toml nor the registry lists it), at the raft
// address the node stated. It becomes a peer early; its registration
// follows at once.
func (b *Broker) learnGuest(id uint64, raftAddr string) {
	if raftAddr == "" || id == uint64(b.cfg.NodeID) || b.knownBroker(int32(id)) {
		return
	}
	if _, _, err := net.SplitHostPort(raftAddr); err != nil {
		return
	}
	b.mb.peerMu.Lock()
	defer b.mb.peerMu.Unlock()
	if cur, ok := b.mb.peerSet[int32(id)]; ok && cur == raftAddr {
		return
	}
	b.tr.SetPeer(id, raftAddr)
	b.mb.peerSet[int32(id)] = raftAddr
	b.logger.Info("answering a node that is not registered yet", "node", id, "raft", raftAddr)
}

// admitGuests lets a node that is being added (in no cluster.toml here,
// not registered yet) reach this one with its identity question and its
// registration, and nothing else (raft TCPTransport.AdmitGuests).
func (b *Broker) admitGuests() {
	b.tr.AdmitGuests(noticeIdentity, noticeRegister)
}
