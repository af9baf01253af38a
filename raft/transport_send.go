package raft

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// peerSender owns the outbound connection to one peer. Its goroutine
// (run) ends when the transport closes or the peer is removed (cancel).
type peerSender struct {
	t      *TCPTransport
	to     uint64
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	addr   string
	queue  []WireMsg
	qbytes int
	bulk   []WireMsg // WireMsg.Bulk: sent after queue, one per frame
	bbytes int
	conn   net.Conn
	wake   chan struct{}
	// redial cuts a redial back-off short: the peer just connected to us,
	// so it is up (redialNow).
	redial chan struct{}
}

func newPeerSender(t *TCPTransport, to uint64, addr string) *peerSender {
	ctx, cancel := context.WithCancel(t.ctx)
	return &peerSender{t: t, to: to, addr: addr, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1),
		redial: make(chan struct{}, 1)}
}

// redialNow ends a redial back-off at once. A restarted peer dials us as
// soon as it is up, while our back-off towards it may have grown to a
// second: without this, everything its groups' leaders sent it waited
// that long (0.3 s seen in a fast rolling restart), and it campaigned in
// the meantime, not hearing from them.
func (s *peerSender) redialNow() {
	select {
	case s.redial <- struct{}{}:
	default:
	}
}

// setAddr points the sender at a new address; the connection to the old
// one closes and the sender dials the new one.
func (s *peerSender) setAddr(addr string) {
	s.mu.Lock()
	same := s.addr == addr
	s.addr = addr
	s.mu.Unlock()
	if !same {
		s.closeConn()
		s.kick()
	}
}

func (s *peerSender) enqueue(msgs []WireMsg) {
	s.mu.Lock()
	for _, m := range msgs {
		q, n := &s.queue, &s.qbytes
		if m.Bulk {
			q, n = &s.bulk, &s.bbytes
		}
		if *n+len(m.Data) > maxPeerQueue {
			break // the peer is not keeping up; Raft will resend
		}
		*q = append(*q, m)
		*n += len(m.Data)
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
		if s.ctx.Err() != nil {
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
				s.bulk, s.bbytes = nil, 0
				s.mu.Unlock()
				timer := time.NewTimer(delay)
				select {
				case <-timer.C:
					delay = min(delay*2, maxRedialDelay)
				case <-s.redial:
					timer.Stop()
					delay = minRedialDelay
				case <-s.ctx.Done():
					timer.Stop()
					return
				}
				continue
			}
			delay = minRedialDelay
			select {
			case <-s.redial: // connected: an earlier hint is spent
			default:
			}
			s.mu.Lock()
			s.conn = c
			s.mu.Unlock()
			conn = c
		}
		batch := s.next()
		if len(batch) == 0 {
			select {
			case <-s.wake:
			case <-s.ctx.Done():
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

// next takes the next frame's messages: everything in the main queue and
// at most one bulk message after them. A bulk message is at most
// MaxSizePerMsg (4 MiB), so the main queue waits at most that long.
func (s *peerSender) next() []WireMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := s.queue
	s.queue, s.qbytes = nil, 0
	if len(s.bulk) > 0 {
		m := s.bulk[0]
		s.bulk[0] = WireMsg{}
		s.bulk = s.bulk[1:]
		s.bbytes -= len(m.Data)
		if len(s.bulk) == 0 {
			s.bulk = nil // let the backing array go
		}
		batch = append(batch, m)
	}
	return batch
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
	s.mu.Lock()
	addr := s.addr
	s.mu.Unlock()
	c, overTLS, err := s.t.dialPeer(s.ctx, addr, s.to) // peertls.go
	if err != nil {
		return nil, err
	}
	hello := s.t.hello(overTLS)
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.Write(hello); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// hello is what this node says first on a connection it dials: a v2
// hello with the cluster id over TLS; in plaintext a v1 hello, which the
// previous release understands, then the cluster id as one message frame
// (chanClusterID). Then, either way, the data directory incarnation as
// one message frame (chanIncarnation, u64). The previous release hands
// both messages to the broker's notices, which ignore them.
func (t *TCPTransport) hello(overTLS bool) []byte {
	id := t.sec.ClusterID
	b := make([]byte, 0, helloSize+len(id)+2*(5+msgHeaderLength)+len(id)+8)
	b = append(b, wireMagic...)
	if overTLS {
		b = binary.BigEndian.AppendUint16(b, wireVersion)
	} else {
		b = binary.BigEndian.AppendUint16(b, wireVersionV1)
	}
	b = binary.BigEndian.AppendUint64(b, t.id)
	b = binary.BigEndian.AppendUint64(b, t.incarnationID)
	if overTLS {
		b = append(b, byte(len(id)))
		b = append(b, id...)
	} else {
		b = appendMsgFrame(b, chanClusterID, []byte(id))
	}
	return appendMsgFrame(b, chanIncarnation, binary.BigEndian.AppendUint64(nil, t.dataIncarnation.Load()))
}

// appendMsgFrame appends a frame holding one node-level message.
func appendMsgFrame(b []byte, channel uint16, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(msgHeaderLength+len(data)))
	b = append(b, frameMsgs)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.BigEndian.AppendUint16(b, channel)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
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
