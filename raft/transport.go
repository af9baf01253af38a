package raft

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
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
	// chanClusterID carries the sender's cluster id after a v1 hello. The
	// transport consumes it; handlers never see it.
	chanClusterID   uint16 = 0xFFF8
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
	senders map[uint64]*peerSender

	mu      sync.Mutex
	inbound map[net.Conn]uint64
	// unhelloed counts inbound connections still in their hello.
	unhelloed int
	current   map[uint64]net.Conn // newest inbound connection per peer
	// incarnation is each peer's process incarnation, from its hello;
	// incarnationID is ours.
	incarnation   map[uint64]uint64
	incarnationID uint64
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
		senders: map[uint64]*peerSender{}, inbound: map[net.Conn]uint64{}, current: map[uint64]net.Conn{},
		incarnation: map[uint64]uint64{}, incarnationID: randomIncarnation(), ctx: ctx, cancel: cancel}
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
	for pid, addr := range t.peers {
		s := &peerSender{t: t, to: pid, addr: addr, wake: make(chan struct{}, 1)}
		t.senders[pid] = s
		t.wg.Add(1)
		go s.run()
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return nil
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
	var tc *tls.Conn
	if t.sec.TLS != nil {
		tc = tls.Server(c, t.sec.TLS.serverConfig())
		ctx, cancel := context.WithTimeout(t.ctx, helloTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return 0, false, refuse(RefusedTLS, "%v", err)
		}
		c = tc
	}
	r := bufio.NewReaderSize(c, 256<<10)
	from, inc, err := t.readHello(r)
	if err != nil {
		return 0, false, err
	}
	if tc != nil {
		if err := certNames(tc, from); err != nil {
			return 0, false, refuse(RefusedCertificate, "hello claims node %d: %v", from, err)
		}
	}
	c.SetReadDeadline(time.Time{})
	t.mu.Lock()
	t.unhelloed--
	helloed = true
	if n := t.connsFrom(from); n >= maxConnsPerPeer {
		t.mu.Unlock()
		return 0, false, refuse(RefusedTooMany, "node %d already has %d connections", from, n)
	}
	t.inbound[raw] = from
	t.current[from] = raw
	restarted := t.incarnation[from] != 0 && t.incarnation[from] != inc
	t.incarnation[from] = inc
	t.mu.Unlock()
	if s := t.senders[from]; s != nil && restarted {
		// The peer is a new process: our outbound connection may still be
		// to the old one and would swallow what we send next. Redial.
		s.closeConn()
		s.kick()
	}
	t.handler.PeerUp(from)
	return t.readFrames(c, r, from)
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
// of the cluster config. After a v1 hello it waits (within the hello's
// deadline) for the first frame, so a peer that states another cluster id
// there is refused before it is up.
func (t *TCPTransport) readHello(r *bufio.Reader) (from, inc uint64, err error) {
	hello := make([]byte, helloV1Size)
	if _, err := io.ReadFull(r, hello); err != nil {
		return 0, 0, refuse(RefusedHello, "%v", err)
	}
	if string(hello[:4]) != wireMagic {
		return 0, 0, refuse(RefusedHello, "not a Chronik peer hello (a TLS peer to a plaintext node?)")
	}
	v := binary.BigEndian.Uint16(hello[4:])
	switch {
	case v == wireVersion:
	case v == wireVersionV1 && t.sec.TLS == nil:
	case v == wireVersionV1:
		return 0, 0, refuse(RefusedHello, "hello version 1 to a TLS node, which requires %d", wireVersion)
	default:
		return 0, 0, refuse(RefusedHello, "hello version %d, this node speaks %d and %d", v, wireVersionV1, wireVersion)
	}
	from = binary.BigEndian.Uint64(hello[6:])
	inc = binary.BigEndian.Uint64(hello[14:])
	var cluster []byte
	stated := true
	if v == wireVersion {
		n, err := r.ReadByte()
		if err != nil {
			return 0, 0, refuse(RefusedHello, "%v", err)
		}
		cluster = make([]byte, n)
		if _, err := io.ReadFull(r, cluster); err != nil {
			return 0, 0, refuse(RefusedHello, "%v", err)
		}
	} else if cluster, stated, err = peekClusterID(r); err != nil {
		return 0, 0, refuse(RefusedHello, "after a version 1 hello: %v", err)
	}
	if stated && string(cluster) != t.sec.ClusterID {
		return 0, 0, refuse(RefusedCluster, "hello from node %d of cluster %q, this is %q", from, cluster, t.sec.ClusterID)
	}
	if _, ok := t.peers[from]; !ok {
		return 0, 0, refuse(RefusedUnknownNode, "hello from unknown node %d", from)
	}
	return from, inc, nil
}

// peekClusterID looks at the first frame after a v1 hello without
// consuming it: stated reports whether it is the chanClusterID message a
// current node sends there. readFrames reads it again and drops it.
func peekClusterID(r *bufio.Reader) (cluster []byte, stated bool, err error) {
	hdr, err := r.Peek(5)
	if err != nil {
		return nil, false, err
	}
	n := binary.BigEndian.Uint32(hdr)
	if hdr[4] != frameMsgs || n < msgHeaderLength || n > msgHeaderLength+255 {
		return nil, false, nil // an old node's frame; a cluster id frame is short
	}
	b, err := r.Peek(5 + int(n))
	if err != nil {
		return nil, false, err
	}
	msgs, err := decodeMsgs(b[5:])
	if err != nil || len(msgs) != 1 || msgs[0].Group != 0 || msgs[0].Channel != chanClusterID {
		return nil, false, nil
	}
	return msgs[0].Data, true, nil
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
// connection ends.
func (t *TCPTransport) readFrames(c net.Conn, r *bufio.Reader, from uint64) (uint64, bool, error) {
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
		if msgs, err = t.dropClusterID(msgs, from); err != nil {
			return from, false, err
		}
		if len(msgs) > 0 {
			t.handler.Receive(from, msgs)
		}
	}
}

// dropClusterID removes chanClusterID messages from msgs, refusing the
// peer if one names another cluster. The first is checked before the
// peer is up (readHello); a peer restating it later is checked again.
func (t *TCPTransport) dropClusterID(msgs []WireMsg, from uint64) ([]WireMsg, error) {
	kept := msgs[:0]
	for _, m := range msgs {
		if m.Group != 0 || m.Channel != chanClusterID {
			kept = append(kept, m)
			continue
		}
		if string(m.Data) != t.sec.ClusterID {
			return nil, refuse(RefusedCluster, "node %d states cluster %q, this is %q", from, m.Data, t.sec.ClusterID)
		}
	}
	return kept, nil
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
	s := t.senders[to]
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
	var wg sync.WaitGroup
	for _, s := range t.senders {
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
	for _, s := range t.senders {
		s.kick()
	}
	t.wg.Wait()
	return nil
}

// peerSender owns the outbound connection to one peer.
type peerSender struct {
	t    *TCPTransport
	to   uint64
	addr string

	mu     sync.Mutex
	queue  []WireMsg
	qbytes int
	conn   net.Conn
	wake   chan struct{}
}

func (s *peerSender) enqueue(msgs []WireMsg) {
	s.mu.Lock()
	for _, m := range msgs {
		if s.qbytes+len(m.Data) > maxPeerQueue {
			break // the peer is not keeping up; Raft will resend
		}
		s.queue = append(s.queue, m)
		s.qbytes += len(m.Data)
	}
	s.mu.Unlock()
	s.kick()
}

func (s *peerSender) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *peerSender) run() {
	defer s.t.wg.Done()
	delay := minRedialDelay
	var frame []byte
	var parts net.Buffers
	var tlsBuf *bufio.Writer
	for {
		if s.t.ctx.Err() != nil {
			s.closeConn()
			return
		}
		s.mu.Lock()
		conn := s.conn
		s.mu.Unlock()
		if conn == nil {
			c, err := s.dial()
			if err != nil {
				// Drop what is queued: it is stale by the time the peer is
				// back, and Raft resends.
				s.mu.Lock()
				s.queue, s.qbytes = nil, 0
				s.mu.Unlock()
				select {
				case <-time.After(delay):
				case <-s.t.ctx.Done():
					return
				}
				delay = min(delay*2, maxRedialDelay)
				continue
			}
			delay = minRedialDelay
			s.mu.Lock()
			s.conn = c
			s.mu.Unlock()
			conn = c
		}
		s.mu.Lock()
		batch := s.queue
		s.queue, s.qbytes = nil, 0
		s.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-s.wake:
			case <-s.t.ctx.Done():
				s.closeConn()
				return
			}
			continue
		}
		frame, parts = buildFrame(batch, frame, parts)
		conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		err := writeParts(conn, parts, &tlsBuf)
		clear(parts)
		if cap(frame) > 4<<20 {
			frame = nil
		}
		if err != nil {
			s.t.logger.Debug("raft transport send failed", "peer", s.to, "err", err)
			s.closeConn()
		}
	}
}

// writeParts writes one frame. A plain connection takes it in one
// writev. A TLS connection has no writev and would make each part its own
// record and syscall: there the parts go through a buffer (kept in *bw
// across frames), so a frame is a few full-size records.
func writeParts(conn net.Conn, parts net.Buffers, bw **bufio.Writer) error {
	if _, ok := conn.(*tls.Conn); !ok {
		iov := parts // WriteTo consumes its receiver
		_, err := iov.WriteTo(conn)
		return err
	}
	if *bw == nil {
		*bw = bufio.NewWriterSize(conn, 256<<10)
	} else {
		(*bw).Reset(conn)
	}
	for _, p := range parts {
		if _, err := (*bw).Write(p); err != nil {
			return err
		}
	}
	return (*bw).Flush()
}

// buildFrame lays out one messages frame for batch, reusing frame and
// parts. Small messages are copied into frame; large ones (entries being
// replicated) go out as their own slices in one writev.
func buildFrame(batch []WireMsg, frame []byte, parts net.Buffers) ([]byte, net.Buffers) {
	frame = append(frame[:0], 0, 0, 0, 0, frameMsgs)
	parts = parts[:0]
	from, size := 0, 0
	for _, m := range batch {
		frame = binary.BigEndian.AppendUint64(frame, m.Group)
		frame = binary.BigEndian.AppendUint16(frame, m.Channel)
		frame = binary.BigEndian.AppendUint32(frame, uint32(len(m.Data)))
		if len(m.Data) < 16<<10 {
			frame = append(frame, m.Data...)
			continue
		}
		parts = append(parts, frame[from:], m.Data)
		size += len(frame) - from + len(m.Data)
		from = len(frame)
	}
	if from < len(frame) {
		parts = append(parts, frame[from:])
		size += len(frame) - from
	}
	// parts[0] starts the frame even if frame has grown since.
	binary.BigEndian.PutUint32(parts[0], uint32(size-5))
	return frame, parts
}

func (s *peerSender) dial() (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(s.t.ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if p := s.t.sec.TLS; p != nil {
		tc := tls.Client(c, p.clientConfig(s.to))
		ctx, cancel := context.WithTimeout(s.t.ctx, helloTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	hello := s.t.hello()
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// hello is what this node says first on a connection it dials: v2 with
// the cluster id over TLS; in plaintext a v1 hello, which the previous
// release understands, then the cluster id as one message frame.
func (t *TCPTransport) hello() []byte {
	id := t.sec.ClusterID
	b := make([]byte, 0, helloSize+5+msgHeaderLength+len(id))
	b = append(b, wireMagic...)
	if t.sec.TLS != nil {
		b = binary.BigEndian.AppendUint16(b, wireVersion)
	} else {
		b = binary.BigEndian.AppendUint16(b, wireVersionV1)
	}
	b = binary.BigEndian.AppendUint64(b, t.id)
	b = binary.BigEndian.AppendUint64(b, t.incarnationID)
	if t.sec.TLS != nil {
		b = append(b, byte(len(id)))
		return append(b, id...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(msgHeaderLength+len(id)))
	b = append(b, frameMsgs)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.BigEndian.AppendUint16(b, chanClusterID)
	b = binary.BigEndian.AppendUint32(b, uint32(len(id)))
	return append(b, id...)
}

func (s *peerSender) closeConn() {
	s.mu.Lock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	s.mu.Unlock()
}

// goodbye tells the peer this node is stopping on purpose.
func (s *peerSender) goodbye() {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return
	}
	// The sender goroutine may be mid-write; a goodbye written between two
	// frames is enough, and on failure the peer just sees the close.
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	c.Write([]byte{0, 0, 0, 0, frameGoodbye})
}

// SetPeer adds peer id at addr, or moves it there: this node dials it
// from now on and accepts its hello.
func (t *TCPTransport) SetPeer(id uint64, addr string) {
}

// RemovePeer forgets peer id: this node stops dialling it, closes its
// connections and refuses its hello from now on.
func (t *TCPTransport) RemovePeer(id uint64) {
}
