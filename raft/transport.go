package raft

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Transport moves opaque messages between nodes. Raft traffic and the
// broker's node-to-node notices share it.
type Transport interface {
	// Send queues msgs for node to. It never blocks on the network; when a
	// peer is unreachable messages are dropped (Raft retransmits).
	Send(to uint64, msgs []WireMsg)
	// Start begins delivering to h.
	Start(h TransportHandler) error
	// Close says goodbye to the peers and closes every connection. Safe to
	// call twice.
	Close() error
}

// WireMsg is one message on the wire: a Raft message for a group, or (with
// Group 0 and Channel set) a node-level notice.
type WireMsg struct {
	Group   uint64
	Channel uint16 // 0 for Raft messages
	Data    []byte
	// Bulk marks catch-up data (appends and snapshots to a learner or a
	// follower being refilled). It travels behind everything else queued
	// for the peer, one message per frame, so that a catch-up of gigabytes
	// never delays heartbeats, votes and voters' appends by more than one
	// message. It is not sent on the wire.
	Bulk bool
}

// TransportHandler receives what a Transport delivers.
type TransportHandler interface {
	Receive(from uint64, msgs []WireMsg)
	// PeerDown reports that the connection from a peer ended. graceful is
	// true when the peer said goodbye first (a clean shutdown).
	PeerDown(id uint64, graceful bool)
	PeerUp(id uint64)
}

// Wire format. A connection (inside TLS when configured, see peertls.go)
// opens with a hello: "CHRK", u16 version, u64 sender id, u64 incarnation
// (random per process start); version 2 goes on with u8 cluster id length
// and the cluster id. Then frames: u32 length, u8 type, body. Type 1
// carries messages: repeated (u64 group, u16 channel, u32 length, bytes).
// Type 2 is goodbye.
//
// Version 1 is the previous release's, which refuses any other version and
// closes on an unknown frame type. So that a cluster can be upgraded node
// by node, a plaintext node says a v1 hello and states its cluster id in
// the first frame, as one message on chanClusterID, which old nodes hand
// to the broker's notices, which ignore it. A plaintext node accepts v1
// and v2: a peer that states another cluster id (in either place) is
// refused; an old peer, whose first frame is anything else, states none
// and is accepted. A TLS node sends and requires v2 (no older release had
// TLS).
const (
	wireMagic     = "CHRK"
	wireVersion   = 2 // TLS peers
	wireVersionV1 = 1 // plaintext peers, cluster id in the first frame
	// chanClusterID carries the sender's cluster id, chanIncarnation its
	// data directory incarnation (u64), in the control frame after the
	// hello. The transport consumes them; handlers never see them.
	chanClusterID   uint16 = 0xFFF8
	chanIncarnation uint16 = 0xFFF9
	frameMsgs              = 1
	frameGoodbye           = 2
	maxWireFrame           = 256 << 20
	maxPeerQueue           = 64 << 20
	dialTimeout            = time.Second
	writeTimeout           = 5 * time.Second
	minRedialDelay         = 20 * time.Millisecond
	maxRedialDelay         = time.Second
	minAcceptDelay         = 5 * time.Millisecond
	maxAcceptDelay         = time.Second
	helloV1Size            = 4 + 2 + 8 + 8
	helloSize              = helloV1Size + 1 // v2, before the cluster id
	msgHeaderLength        = 8 + 2 + 4
	// helloTimeout bounds the TLS handshake and hello of a new connection.
	helloTimeout = 10 * time.Second
	// frameBodyTimeout bounds how long a begun frame may take to arrive
	// (a 256 MiB frame at 2 MiB/s), so a half-sent frame cannot hold a
	// connection and its buffer forever. Idle time between frames is not
	// bounded: quiesced groups send nothing.
	frameBodyTimeout = 2 * time.Minute
	// frameReadStep is the most a frame's buffer grows ahead of the bytes
	// that arrived: a declared length is not trusted with memory.
	frameReadStep = 1 << 20
	// maxUnhelloed bounds connections that have not finished their hello;
	// more are closed at once. Peers hold one connection each.
	maxUnhelloed = 32
	// maxConnsPerPeer bounds a node's inbound connections: it keeps one,
	// and one more while an old one from before its restart lingers. Each
	// may hold a frame of up to maxWireFrame in memory.
	maxConnsPerPeer = 4
)

// TCPTransport is the production transport: one outbound TCP connection per
// peer, written by one goroutine that batches whatever queued up meanwhile,
// and one reader goroutine per inbound connection.
type TCPTransport struct {
	id      uint64
	listen  string
	peers   map[uint64]string
	logger  *slog.Logger
	sec     PeerSecurity
	refused refusals

	ln      net.Listener
	handler TransportHandler
	// senders is replaced whole under mu (SetPeer, RemovePeer) and read
	// without it by Send.
	senders atomic.Pointer[map[uint64]*peerSender]
	// dataIncarnation is the host's Config.Incarnation, stated to peers.
	dataIncarnation atomic.Uint64

	mu      sync.Mutex
	inbound map[net.Conn]uint64
	// unhelloed counts inbound connections still in their hello.
	unhelloed int
	current   map[uint64]net.Conn // newest inbound connection per peer
	// guestChans are the channels guests may use (AdmitGuests);
	// guestConns their connections (guests.go).
	guestChans map[uint16]bool
	guestConns map[net.Conn]uint64
	// incarnation is each peer's process incarnation, from its hello;
	// incarnationID is ours. peers (the addresses) is under mu too.
	incarnation   map[uint64]uint64
	incarnationID uint64
	started       bool
	closed        bool
	ctx           context.Context
	cancel        context.CancelFunc
	wg            sync.WaitGroup
}

// NewTCPTransport makes a transport for node id listening on listen, with
// the peers' addresses (which may include id itself; it is skipped).
func NewTCPTransport(id uint64, listen string, peers map[uint64]string, logger *slog.Logger) *TCPTransport {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &TCPTransport{id: id, listen: listen, peers: map[uint64]string{}, logger: logger,
		inbound: map[net.Conn]uint64{}, guestConns: map[net.Conn]uint64{}, current: map[uint64]net.Conn{},
		incarnation: map[uint64]uint64{}, incarnationID: randomIncarnation(), ctx: ctx, cancel: cancel}
	t.senders.Store(&map[uint64]*peerSender{})
	for pid, addr := range peers {
		if pid != id {
			t.peers[pid] = addr
		}
	}
	return t
}

// Secure sets how peers are authenticated; call it before Start.
func (t *TCPTransport) Secure(sec PeerSecurity) error {
	if len(sec.ClusterID) > 255 {
		return fmt.Errorf("raft transport: cluster id of %d bytes, at most 255", len(sec.ClusterID))
	}
	t.sec = sec
	return nil
}

// Addr is the bound listen address (useful with port 0).
func (t *TCPTransport) Addr() string {
	if t.ln == nil {
		return t.listen
	}
	return t.ln.Addr().String()
}

// Start listens and starts one sender per peer.
func (t *TCPTransport) Start(h TransportHandler) error {
	ln, err := net.Listen("tcp", t.listen)
	if err != nil {
		return fmt.Errorf("raft transport: listen %s: %w", t.listen, err)
	}
	t.ln = ln
	t.handler = h
	t.mu.Lock()
	t.started = true
	senders := map[uint64]*peerSender{}
	for pid, addr := range t.peers {
		s := newPeerSender(t, pid, addr)
		senders[pid] = s
		t.wg.Add(1)
		go s.run()
	}
	t.senders.Store(&senders)
	t.mu.Unlock()
	t.wg.Add(1)
	go t.acceptLoop()
	return nil
}

func (t *TCPTransport) setIncarnation(inc uint64) { t.dataIncarnation.Store(inc) }

func (t *TCPTransport) sender(id uint64) *peerSender { return (*t.senders.Load())[id] }

// SetPeer adds peer id at addr, or moves it there: this node dials it
// from now on and accepts its hello.
func (t *TCPTransport) SetPeer(id uint64, addr string) {
	if id == t.id {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.peers[id] = addr
	t.closeGuestsLocked(id)
	if !t.started {
		return // Start makes the sender
	}
	if s := t.sender(id); s != nil {
		s.setAddr(addr)
		return
	}
	senders := maps.Clone(*t.senders.Load())
	s := newPeerSender(t, id, addr)
	senders[id] = s
	t.senders.Store(&senders)
	t.wg.Add(1)
	go s.run()
}

// RemovePeer forgets peer id: this node stops dialling it, closes its
// connections and refuses its hello from now on.
func (t *TCPTransport) RemovePeer(id uint64) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	delete(t.peers, id)
	var s *peerSender
	if old := *t.senders.Load(); old[id] != nil {
		s = old[id]
		senders := maps.Clone(old)
		delete(senders, id)
		t.senders.Store(&senders)
	}
	var conns []net.Conn
	for c, from := range t.inbound {
		if from == id {
			conns = append(conns, c)
		}
	}
	t.mu.Unlock()
	if s != nil {
		s.cancel()
		s.kick()
	}
	for _, c := range conns {
		c.Close() // its reader reports the peer down
	}
}

// acceptLoop runs until Close closes the listener. An accept error that is
// not the close (out of file descriptors, say) has no event to wait for:
// the loop backs off, from minAcceptDelay doubling to maxAcceptDelay, and
// starts over at the first success.
func (t *TCPTransport) acceptLoop() {
	defer t.wg.Done()
	delay := minAcceptDelay
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil {
				return
			}
			t.logger.Warn("raft transport accept failed", "err", err, "retry_in", delay)
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-t.ctx.Done():
				timer.Stop()
				return
			}
			delay = min(2*delay, maxAcceptDelay)
			continue
		}
		delay = minAcceptDelay
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			c.Close()
			return
		}
		if t.unhelloed >= maxUnhelloed {
			t.mu.Unlock()
			t.noteRefused(c, refuse(RefusedTooMany, "%d connections still in their hello", maxUnhelloed))
			c.Close()
			continue
		}
		t.unhelloed++
		t.inbound[c] = 0
		t.mu.Unlock()
		t.wg.Add(1)
		go t.readLoop(c)
	}
}

func (t *TCPTransport) readLoop(c net.Conn) {
	defer t.wg.Done()
	from, graceful, err := t.serveConn(c)
	t.noteRefused(c, err) // before the close, which the peer sees
	c.Close()
	t.mu.Lock()
	delete(t.inbound, c)
	wasCurrent := from != 0 && t.current[from] == c
	if wasCurrent {
		delete(t.current, from)
		// A second connection from the same peer (a stray or hostile one
		// that took over as current) ending must not report the peer
		// down while its other connection still delivers.
		for other, id := range t.inbound {
			if id == from {
				t.current[from] = other
				wasCurrent = false
				break
			}
		}
	}
	closed := t.closed
	t.mu.Unlock()
	if wasCurrent && !closed {
		if err != nil && !graceful && !errors.Is(err, io.EOF) {
			t.logger.Debug("raft transport connection lost", "peer", from, "err", err)
		}
		t.handler.PeerDown(from, graceful)
	}
}

func (t *TCPTransport) serveConn(c net.Conn) (from uint64, graceful bool, err error) {
	helloed := false
	defer func() {
		if !helloed {
			t.mu.Lock()
			t.unhelloed--
			t.mu.Unlock()
		}
	}()
	raw := c // the key of inbound and current
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	c, tc, err := t.secureInbound(c) // peertls.go
	if err != nil {
		return 0, false, err
	}
	r := bufio.NewReaderSize(c, 256<<10)
	from, inc, dataInc, known, err := t.readHello(r, tc == nil)
	if err != nil {
		return 0, false, err
	}
	if tc != nil {
		if err := certNames(tc, from); err != nil {
			return 0, false, refuse(RefusedCertificate, "hello claims node %d: %v", from, err)
		}
	}
	ih, _ := t.handler.(incarnationHandler)
	if ih != nil && !ih.statedIncarnation(from, dataInc) {
		return 0, false, refuse(RefusedIncarnation, "node %d states incarnation %d, which is retired", from, dataInc)
	}
	c.SetReadDeadline(time.Time{})
	t.mu.Lock()
	t.unhelloed--
	helloed = true
	if !known {
		return t.serveGuest(c, raw, r, from, dataInc, ih) // releases t.mu
	}
	if n := t.connsFrom(from); n >= maxConnsPerPeer {
		t.mu.Unlock()
		return 0, false, refuse(RefusedTooMany, "node %d already has %d connections", from, n)
	}
	t.inbound[raw] = from
	t.current[from] = raw
	restarted := t.incarnation[from] != 0 && t.incarnation[from] != inc
	t.incarnation[from] = inc
	t.mu.Unlock()
	if s := t.sender(from); s != nil {
		if restarted {
			// The peer is a new process: our outbound connection may still
			// be to the old one and would swallow what we send next. Redial.
			s.closeConn()
			s.kick()
		}
		s.redialNow() // it is up: a back-off towards it ends
	}
	t.handler.PeerUp(from)
	return t.readFrames(c, r, from, dataInc, ih, false)
}

// connsFrom counts the inbound connections that said hello as node id;
// t.mu is held.
func (t *TCPTransport) connsFrom(id uint64) int {
	n := 0
	for _, from := range t.inbound {
		if from == id {
			n++
		}
	}
	return n
}

// readHello reads and checks a hello: this protocol, this cluster, a node
// of the cluster config. It then waits (within the hello's deadline) for
// the first frame, so a peer that states another cluster id there is
// refused before it is up, and its data directory incarnation (dataInc,
// 0 when it states none) is known before it is up.
// plain says the connection is not TLS.
func (t *TCPTransport) readHello(r *bufio.Reader, plain bool) (from, inc, dataInc uint64, known bool, err error) {
	hello := make([]byte, helloV1Size)
	if _, err := io.ReadFull(r, hello); err != nil {
		return 0, 0, 0, false, refuse(RefusedHello, "%v", err)
	}
	if string(hello[:4]) != wireMagic {
		return 0, 0, 0, false, refuse(RefusedHello, "not a Chronik peer hello (a TLS peer to a plaintext node?)")
	}
	v := binary.BigEndian.Uint16(hello[4:])
	switch {
	case v == wireVersion:
	case v == wireVersionV1 && plain:
	case v == wireVersionV1:
		return 0, 0, 0, false, refuse(RefusedHello, "hello version 1 to a TLS node, which requires %d", wireVersion)
	default:
		return 0, 0, 0, false, refuse(RefusedHello, "hello version %d, this node speaks %d and %d", v, wireVersionV1, wireVersion)
	}
	from = binary.BigEndian.Uint64(hello[6:])
	inc = binary.BigEndian.Uint64(hello[14:])
	var cluster []byte
	if v == wireVersion {
		n, err := r.ReadByte()
		if err != nil {
			return 0, 0, 0, false, refuse(RefusedHello, "%v", err)
		}
		cluster = make([]byte, n)
		if _, err := io.ReadFull(r, cluster); err != nil {
			return 0, 0, 0, false, refuse(RefusedHello, "%v", err)
		}
	}
	// The cluster id of a v1 hello comes in the first frame, which a
	// current node always sends at once: wait for it (an old node's
	// first frame is anything else).
	stated, skip := v == wireVersion, 0
	if v == wireVersionV1 {
		if cluster, stated, skip, err = peekClusterID(r); err != nil {
			return 0, 0, 0, false, refuse(RefusedHello, "after a version 1 hello: %v", err)
		}
	}
	if stated && string(cluster) != t.sec.ClusterID {
		return 0, 0, 0, false, refuse(RefusedCluster, "hello from node %d of cluster %q, this is %q", from, cluster, t.sec.ClusterID)
	}
	dataInc = peekIncarnation(r, skip)
	t.mu.Lock()
	_, known = t.peers[from]
	guests := len(t.guestChans) > 0
	t.mu.Unlock()
	if !known && !guests {
		return 0, 0, 0, false, refuse(RefusedUnknownNode, "hello from unknown node %d", from)
	}
	return from, inc, dataInc, known, nil
}

// peekClusterID looks at the first frame after a v1 hello without
// consuming it: stated reports whether it is the chanClusterID message a
// current node sends there, size how long that frame is. readFrames reads
// it again and drops it.
func peekClusterID(r *bufio.Reader) (cluster []byte, stated bool, size int, err error) {
	hdr, err := r.Peek(5)
	if err != nil {
		return nil, false, 0, err
	}
	n := binary.BigEndian.Uint32(hdr)
	if hdr[4] != frameMsgs || n < msgHeaderLength || n > msgHeaderLength+255 {
		return nil, false, 0, nil // an old node's frame; a cluster id frame is short
	}
	b, err := r.Peek(5 + int(n))
	if err != nil {
		return nil, false, 0, err
	}
	msgs, err := decodeMsgs(b[5:])
	if err != nil || len(msgs) != 1 || msgs[0].Group != 0 || msgs[0].Channel != chanClusterID {
		return nil, false, 0, nil
	}
	return msgs[0].Data, true, 5 + int(n), nil
}

// peekIncarnation looks for the chanIncarnation frame a current node
// sends after its hello (and cluster id frame), skip bytes into what is
// buffered, without waiting for more: a dialer writes it in the same
// write as the hello, so it is nearly always there, and when it is not
// (or the peer states none) readFrames takes it as it comes.
func peekIncarnation(r *bufio.Reader, skip int) uint64 {
	const size = 5 + msgHeaderLength + 8
	if r.Buffered() < skip+size {
		return 0
	}
	b, err := r.Peek(skip + size)
	if err != nil {
		return 0
	}
	return incarnationFrame(b[skip:])
}

// incarnationFrame decodes a whole chanIncarnation frame (0: not one).
func incarnationFrame(b []byte) uint64 {
	if len(b) != 5+msgHeaderLength+8 || binary.BigEndian.Uint32(b) != msgHeaderLength+8 || b[4] != frameMsgs {
		return 0
	}
	msgs, err := decodeMsgs(b[5:])
	if err != nil || len(msgs) != 1 {
		return 0
	}
	return incarnationMsg(msgs[0])
}

func incarnationMsg(m WireMsg) uint64 {
	if m.Group != 0 || m.Channel != chanIncarnation || len(m.Data) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(m.Data)
}

// noteRefused counts and logs err if it refused the connection.
func (t *TCPTransport) noteRefused(c net.Conn, err error) {
	var re *refusedError
	if !errors.As(err, &re) {
		return
	}
	t.refused.add(re.reason)
	if t.refused.logNow() {
		t.logger.Warn("raft transport refused peer", "remote", c.RemoteAddr().String(), "reason", re.reason, "err", re.err)
	}
}

// readFrames delivers frames from an authenticated peer until the
// connection ends; with ih, through it, tagged with the connection's
// incarnation.
func (t *TCPTransport) readFrames(c net.Conn, r *bufio.Reader, from, dataInc uint64, ih incarnationHandler, guest bool) (uint64, bool, error) {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return from, false, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxWireFrame {
			return from, false, fmt.Errorf("frame of %d bytes", n)
		}
		switch hdr[4] {
		case frameGoodbye:
			return from, true, nil
		case frameMsgs:
		default:
			return from, false, fmt.Errorf("unknown frame type %d", hdr[4])
		}
		// Messages are handed to the handler, which keeps them: read into a
		// fresh buffer each time rather than reusing one.
		c.SetReadDeadline(time.Now().Add(frameBodyTimeout))
		body, err := readFrameBody(r, int(n))
		if err != nil {
			return from, false, err
		}
		c.SetReadDeadline(time.Time{})
		msgs, err := decodeMsgs(body)
		if err != nil {
			return from, false, err
		}
		var late uint64
		if msgs, late, err = t.dropControl(msgs, from); err != nil {
			return from, false, err
		}
		if late != 0 && dataInc == 0 {
			// Stated after the hello was handled (it was not buffered yet).
			dataInc = late
			if ih != nil && !ih.statedIncarnation(from, dataInc) {
				return from, false, refuse(RefusedIncarnation, "node %d states incarnation %d, which is retired", from, dataInc)
			}
		}
		if guest {
			msgs = t.guestMsgs(msgs)
		}
		switch {
		case len(msgs) == 0:
		case ih != nil:
			ih.receiveFrom(from, dataInc, msgs)
		default:
			t.handler.Receive(from, msgs)
		}
	}
}

// dropControl removes the control messages (chanClusterID,
// chanIncarnation) from msgs, refusing the peer if one names another
// cluster. The first are read before the peer is up (readHello); a peer
// restating its cluster later is checked again, and the incarnation is
// the connection's first.
func (t *TCPTransport) dropControl(msgs []WireMsg, from uint64) (kept []WireMsg, inc uint64, err error) {
	kept = msgs[:0]
	for _, m := range msgs {
		if m.Group == 0 && m.Channel == chanIncarnation {
			inc = incarnationMsg(m)
			continue
		}
		if m.Group != 0 || m.Channel != chanClusterID {
			kept = append(kept, m)
			continue
		}
		if string(m.Data) != t.sec.ClusterID {
			return nil, 0, refuse(RefusedCluster, "node %d states cluster %q, this is %q", from, m.Data, t.sec.ClusterID)
		}
	}
	return kept, inc, nil
}

// readFrameBody reads n bytes into a buffer that grows as they arrive, at
// most frameReadStep or doubling ahead, so a frame that declares 256 MiB
// and sends little costs little.
func readFrameBody(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, frameReadStep))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(grown, buf)
			buf = grown
		}
		k, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

func randomIncarnation() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}

func decodeMsgs(b []byte) ([]WireMsg, error) {
	var out []WireMsg
	for len(b) > 0 {
		if len(b) < msgHeaderLength {
			return nil, errors.New("short message header")
		}
		g := binary.BigEndian.Uint64(b)
		ch := binary.BigEndian.Uint16(b[8:])
		n := binary.BigEndian.Uint32(b[10:])
		b = b[msgHeaderLength:]
		if uint32(len(b)) < n {
			return nil, errors.New("short message")
		}
		out = append(out, WireMsg{Group: g, Channel: ch, Data: b[:n:n]})
		b = b[n:]
	}
	return out, nil
}

// Send implements Transport.
func (t *TCPTransport) Send(to uint64, msgs []WireMsg) {
	s := t.sender(to)
	if s == nil {
		return
	}
	s.enqueue(msgs)
}

// Close implements Transport.
func (t *TCPTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	conns := make([]net.Conn, 0, len(t.inbound))
	for c := range t.inbound {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	// Goodbyes first, so peers know this is a clean stop.
	senders := *t.senders.Load()
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Add(1)
		go func(s *peerSender) {
			defer wg.Done()
			s.goodbye()
		}(s)
	}
	wg.Wait()
	t.cancel()
	if t.ln != nil {
		t.ln.Close()
	}
	for _, c := range conns {
		c.Close()
	}
	for _, s := range senders {
		s.kick()
	}
	t.wg.Wait()
	return nil
}
