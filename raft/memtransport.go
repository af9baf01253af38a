package raft

import (
	"sync"
	"sync/atomic"
)

// MemNetwork connects in-process hosts for tests. It can cut links between
// nodes (a network partition) and heal them.
type MemNetwork struct {
	mu    sync.Mutex
	nodes map[uint64]*MemTransport
	cut   map[[2]uint64]bool
}

// NewMemNetwork makes an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: map[uint64]*MemTransport{}, cut: map[[2]uint64]bool{}}
}

// Transport returns the transport of node id.
func (n *MemNetwork) Transport(id uint64) *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := &MemTransport{net: n, id: id, wake: make(chan struct{}, 1), done: make(chan struct{})}
	n.nodes[id] = t
	return t
}

// Isolate cuts every link of node id.
func (n *MemNetwork) Isolate(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for other := range n.nodes {
		if other != id {
			n.cut[[2]uint64{id, other}] = true
			n.cut[[2]uint64{other, id}] = true
		}
	}
}

// Heal restores every link.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut = map[[2]uint64]bool{}
}

// HealNode restores the links of node id only.
func (n *MemNetwork) HealNode(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k := range n.cut {
		if k[0] == id || k[1] == id {
			delete(n.cut, k)
		}
	}
}

func (n *MemNetwork) deliver(from, inc, to uint64, msgs []WireMsg) {
	n.mu.Lock()
	t := n.nodes[to]
	cut := n.cut[[2]uint64{from, to}]
	n.mu.Unlock()
	if t == nil || cut {
		return
	}
	t.push(from, inc, msgs)
}

// MemTransport is one node's end of a MemNetwork. Deliveries run on a
// goroutine of the receiver, never on the sender's stack. Each carries
// the sender's incarnation (Config.Incarnation), which the receiver's
// host is told of as a TCP connection's (incarnation.go).
type MemTransport struct {
	net *MemNetwork
	id  uint64
	inc atomic.Uint64

	mu      sync.Mutex
	handler TransportHandler
	inbox   []memDelivery
	closed  bool
	wake    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

type memDelivery struct {
	from, inc uint64
	msgs      []WireMsg
}

func (t *MemTransport) setIncarnation(inc uint64) { t.inc.Store(inc) }

// Start implements Transport.
func (t *MemTransport) Start(h TransportHandler) error {
	t.mu.Lock()
	t.handler = h
	t.mu.Unlock()
	t.wg.Add(1)
	go t.run()
	return nil
}

func (t *MemTransport) push(from, inc uint64, msgs []WireMsg) {
	cp := make([]WireMsg, len(msgs))
	for i, m := range msgs {
		cp[i] = WireMsg{Group: m.Group, Channel: m.Channel, Data: append([]byte(nil), m.Data...), Bulk: m.Bulk}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.inbox = append(t.inbox, memDelivery{from: from, inc: inc, msgs: cp})
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *MemTransport) run() {
	defer t.wg.Done()
	stated := map[uint64]uint64{} // what each sender's incarnation was last
	for {
		select {
		case <-t.wake:
		case <-t.done:
			return
		}
		t.mu.Lock()
		batch := t.inbox
		t.inbox = nil
		h := t.handler
		t.mu.Unlock()
		for _, d := range batch {
			ih, ok := h.(incarnationHandler)
			if !ok {
				h.Receive(d.from, d.msgs)
				continue
			}
			if stated[d.from] != d.inc {
				stated[d.from] = d.inc
				ih.statedIncarnation(d.from, d.inc)
			}
			ih.receiveFrom(d.from, d.inc, d.msgs)
		}
	}
}

// Send implements Transport.
func (t *MemTransport) Send(to uint64, msgs []WireMsg) { t.net.deliver(t.id, t.inc.Load(), to, msgs) }

// Close implements Transport; peers see a graceful PeerDown.
func (t *MemTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	close(t.done)
	t.wg.Wait()
	t.net.mu.Lock()
	delete(t.net.nodes, t.id)
	peers := make([]*MemTransport, 0, len(t.net.nodes))
	for _, p := range t.net.nodes {
		peers = append(peers, p)
	}
	t.net.mu.Unlock()
	for _, p := range peers {
		p.mu.Lock()
		h := p.handler
		p.mu.Unlock()
		if h != nil {
			h.PeerDown(t.id, true)
		}
	}
	return nil
}
