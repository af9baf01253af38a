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

// Wire format. A connection opens with a hello: "CHRK", u16 version, u64
// sender id, u64 incarnation (random per process start). Then frames: u32 length, u8 type, body. Type 1 carries
// messages: repeated (u64 group, u16 channel, u32 length, bytes). Type 2 is
// goodbye.
const (
	wireMagic       = "CHRK"
	wireVersion     = 1
	frameMsgs       = 1
	frameGoodbye    = 2
	maxWireFrame    = 256 << 20
	maxPeerQueue    = 64 << 20
	dialTimeout     = time.Second
	writeTimeout    = 5 * time.Second
	minRedialDelay  = 20 * time.Millisecond
	maxRedialDelay  = time.Second
	minAcceptDelay  = 5 * time.Millisecond
	maxAcceptDelay  = time.Second
	helloSize       = 4 + 2 + 8 + 8
	msgHeaderLength = 8 + 2 + 4
)

// TCPTransport is the production transport: one outbound TCP connection per
// peer, written by one goroutine that batches whatever queued up meanwhile,
// and one reader goroutine per inbound connection.
type TCPTransport struct {
	id     uint64
	listen string
	peers  map[uint64]string
	logger *slog.Logger

	ln      net.Listener
	handler TransportHandler
	senders map[uint64]*peerSender

	mu      sync.Mutex
	inbound map[net.Conn]uint64
	current map[uint64]net.Conn // newest inbound connection per peer
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
		t.inbound[c] = 0
		t.mu.Unlock()
		t.wg.Add(1)
		go t.readLoop(c)
	}
}

func (t *TCPTransport) readLoop(c net.Conn) {
	defer t.wg.Done()
	from, graceful, err := t.serveConn(c)
	c.Close()
	t.mu.Lock()
	delete(t.inbound, c)
	wasCurrent := from != 0 && t.current[from] == c
	if wasCurrent {
		delete(t.current, from)
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
	r := bufio.NewReaderSize(c, 256<<10)
	hello := make([]byte, helloSize)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r, hello); err != nil {
		return 0, false, err
	}
	c.SetReadDeadline(time.Time{})
	if string(hello[:4]) != wireMagic || binary.BigEndian.Uint16(hello[4:]) != wireVersion {
		return 0, false, errors.New("bad hello")
	}
	from = binary.BigEndian.Uint64(hello[6:])
	inc := binary.BigEndian.Uint64(hello[14:])
	if _, ok := t.peers[from]; !ok {
		return 0, false, fmt.Errorf("hello from unknown node %d", from)
	}
	t.mu.Lock()
	t.inbound[c] = from
	t.current[from] = c
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
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return from, false, err
		}
		msgs, err := decodeMsgs(body)
		if err != nil {
			return from, false, err
		}
		t.handler.Receive(from, msgs)
	}
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
		iov := parts // WriteTo consumes its receiver
		_, err := iov.WriteTo(conn)
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
	hello := make([]byte, helloSize)
	copy(hello, wireMagic)
	binary.BigEndian.PutUint16(hello[4:], wireVersion)
	binary.BigEndian.PutUint64(hello[6:], s.t.id)
	binary.BigEndian.PutUint64(hello[14:], s.t.incarnationID)
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
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
