package kafka

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// readBufSize is the reader's buffer: small, and taken from a pool only
// while a frame is being read, so that thousands of idle connections cost
// none; a large body is read straight into its own buffer, past this one.
const readBufSize = 4 << 10

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

// A frame's chunks start at firstChunk and double up to 1 MiB; it takes at most
// growChunk from the request budget at once, and frames above growChunk
// count as big (see budget). Frames above bigFrame are read only while
// holding one of the node's big-read slots (Limits.MaxBigFrameReads).
const (
	firstChunk = 4 << 10
	growChunk  = 64 << 10
	bigFrame   = 1 << 20
)

// bigReadStall is how long a big frame's reader keeps its slot while no
// byte comes: a stalled sender must not keep others from being read.
const bigReadStall = 50 * time.Millisecond

// discardCost is what a byte of a frame answered from its head (read
// only to be dropped) counts against its address's big-frame rate.
const discardCost = 2

// errFrameAnswered says a frame was answered from its header and the rest
// of it discarded: there is nothing to decode.
var errFrameAnswered = errors.New("frame answered from its header")

// primed is a connection whose next byte was already read, while idle,
// into a one-byte array: the reader's buffer is taken only then.
type primed struct {
	nc    net.Conn
	first [1]byte
	has   bool
}

func (p *primed) Read(b []byte) (int, error) {
	if p.has && len(b) > 0 {
		b[0] = p.first[0]
		p.has = false
		return 1, nil
	}
	return p.nc.Read(b)
}

func (c *conn) readLoop() error {
	var r *bufio.Reader
	pr := &primed{nc: c.nc}
	defer func() {
		if r != nil {
			r.Reset(nil)
			readerPool.Put(r)
		}
	}()
	// A new connection must speak within the frame timeout (every client
	// sends its first request as soon as it connects); between requests
	// a connection may idle for the idle timeout.
	wait := c.s.cfg.Limits.FrameTimeout
	for {
		c.nc.SetReadDeadline(time.Now().Add(wait))
		if err := c.s.ctx.Err(); err != nil {
			// Close cancels, then sets a deadline of now: whichever of
			// that and the line above comes last, reading stops.
			return err
		}
		if r != nil && r.Buffered() == 0 {
			r.Reset(nil)
			readerPool.Put(r)
			r = nil
		}
		if r == nil {
			if err := waitFirstByte(pr); err != nil {
				if isTimeout(err) && wait == c.s.cfg.Limits.FrameTimeout {
					c.s.metrics.limitHits.WithLabelValues(hitFrameTimeout).Inc()
				}
				return err
			}
			r = readerPool.Get().(*bufio.Reader)
			r.Reset(pr)
		}
		wait = c.s.cfg.IdleTimeout
		// The frame's time starts at its first byte.
		deadline := time.Now().Add(c.s.cfg.Limits.FrameTimeout)
		c.nc.SetReadDeadline(deadline)
		if err := c.s.ctx.Err(); err != nil {
			return err
		}
		if c.cc.sasl != nil && c.cc.sasl.raw {
			if err := c.handleRawToken(r); err != nil {
				return err
			}
			continue
		}
		body, mem, err := c.readFrame(r, deadline)
		if errors.Is(err, errFrameAnswered) {
			continue
		}
		if err != nil {
			if isTimeout(err) {
				c.s.metrics.limitHits.WithLabelValues(hitFrameTimeout).Inc()
				c.s.logger.Debug("closing connection: request frame not received in time", "remote", c.cc.remote,
					"client_id", c.cc.clientID, "frame_timeout", c.s.cfg.Limits.FrameTimeout)
			}
			return err
		}
		if err := c.handle(body, mem); err != nil {
			return err
		}
	}
}

// waitFirstByte reads the next byte into pr, holding no buffer while the
// connection idles.
func waitFirstByte(pr *primed) error {
	for {
		n, err := pr.nc.Read(pr.first[:])
		if n == 1 {
			pr.has = true
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// refuse counts and logs a frame refused from its header; the connection
// closes.
func (c *conn) refuse(br *badRequest, args ...any) error {
	c.s.logger.Warn("closing connection: "+br.msg, append([]any{"remote", c.cc.remote, "client_id", c.cc.clientID}, args...)...)
	c.s.metrics.badRequests.WithLabelValues(br.reason).Inc()
	return br
}

// readFrame reads one size-prefixed request frame that must be complete by
// deadline. It is read into chunks that start small and double as bytes
// arrive, so a frame that declares 100 MiB and sends a byte costs 4 KiB; every
// byte of it is first taken from the node's request budget, and when the
// budget is spent the read waits (the client's sends back up in TCP). It
// returns the body and the budget bytes it holds, which the caller gives
// back once the request is answered.
//
// What the header already shows is acted on before the body is read: an
// API or version not served, a non-Produce frame over its limit, a big
// Produce frame whose layout is wrong (refused, the connection closes) or
// all of whose partitions would be refused (answered, the rest of the
// frame discarded unread: errFrameAnswered).
func (c *conn) readFrame(r *bufio.Reader, deadline time.Time) (body []byte, mem hold, err error) {
	var hdr [12]byte // size, then key, version and correlation id
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return nil, hold{}, err
	}
	size := int32(binary.BigEndian.Uint32(hdr[:4]))
	if size < 8 || size > c.s.cfg.MaxRequestSize {
		return nil, hold{}, c.refuse(&badRequest{"size", "bad request size"}, "size", size, "max", c.s.cfg.MaxRequestSize)
	}
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return nil, hold{}, err
	}
	key, version := int16(binary.BigEndian.Uint16(hdr[4:])), int16(binary.BigEndian.Uint16(hdr[6:]))
	if key != 0 && size > c.s.cfg.Limits.MaxNonProduceRequestSize {
		c.s.metrics.limitHits.WithLabelValues(hitNonProduceSize).Inc()
		return nil, hold{}, c.refuse(&badRequest{"size", "request too large for its API"},
			"api", kmsg.NameForKey(key), "size", size, "max", c.s.cfg.Limits.MaxNonProduceRequestSize)
	}
	if size > firstChunk {
		// decodeRequest checks these too; a big frame is refused before
		// it is read.
		if a := c.s.apis[key]; a == nil {
			return nil, hold{}, c.refuse(&badRequest{"unknown_key", fmt.Sprintf("unknown api key %d", key)}, "size", size)
		} else if (version < a.min || version > a.max) && key != 18 {
			return nil, hold{}, c.refuse(&badRequest{"unsupported_version", fmt.Sprintf("%s v%d is not served (v%d-v%d)",
				kmsg.NameForKey(key), version, a.min, a.max)}, "size", size)
		}
	}
	mem.big = size > growChunk
	take := func(n int) error {
		for left := int64(n); left > 0; {
			step := min(left, growChunk)
			if err := c.takeMemory(step, mem.big, deadline); err != nil {
				return err
			}
			mem.n += step
			left -= step
		}
		return nil
	}
	if size <= firstChunk {
		if err := take(int(size)); err != nil {
			return nil, hold{}, err
		}
		body = make([]byte, size)
		copy(body, hdr[4:])
		if _, err := io.ReadFull(r, body[8:]); err != nil {
			c.s.reqMemory.release(mem.n, mem.big)
			return nil, hold{}, err
		}
		return body, mem, nil
	}
	// Bigger frames are read into pooled chunks that double from 4 KiB
	// to 1 MiB as bytes arrive, and assembled once complete: a frame that
	// stalls holds only what it received, and a frame read through leaves
	// its chunks for the next one instead of a trail of garbage.
	var chunks []*[]byte
	slot := false
	// answer is set when the frame's first chunk was enough to answer it
	// (screenProduce): the rest is read into scratch and dropped, through
	// the same big-read slots and address rate as any big frame (the
	// bytes cost the same CPU to take in), but holding no budget.
	var answer func() error
	var scratch *[]byte
	defer func() {
		for _, ch := range chunks {
			putChunk(ch)
		}
		if scratch != nil {
			discardPool.Put(scratch)
		}
		if slot {
			<-c.s.bigReads
		}
		if err != nil {
			c.s.reqMemory.release(mem.n, mem.big)
			mem = hold{}
		}
	}()
	throttled := false // over the address's rate: counted once a frame
	got := 0           // bytes of the frame in chunks
	var cur []byte     // the last chunk, as far as it is filled
	next := func() error {
		class := min(len(chunks), len(chunkPools)-1)
		n := min(firstChunk<<class, int(size)-got)
		if err := take(n); err != nil {
			return err
		}
		ch := getChunk(class)
		chunks = append(chunks, ch)
		cur = (*ch)[:0:n]
		return nil
	}
	if err := next(); err != nil {
		return nil, mem, err
	}
	cur = append(cur, hdr[4:]...)
	got = len(cur)
	screened := key != 0
	for got < int(size) {
		if len(cur) == cap(cur) {
			if !screened {
				screened = true
				a, err := c.screenProduce(cur, int(size))
				if err != nil {
					return nil, mem, err
				}
				if a != nil {
					answer = a
					for _, ch := range chunks {
						putChunk(ch)
					}
					chunks = nil
					c.s.reqMemory.release(mem.n, mem.big)
					mem = hold{}
					scratch = discardPool.Get().(*[]byte)
				}
			}
			if answer != nil {
				cur = (*scratch)[:0:min(len(*scratch), int(size)-got)]
			} else if err := next(); err != nil {
				return nil, mem, err
			}
		}
		want := cap(cur) - len(cur)
		// Bytes to be dropped count twice against the address's rate:
		// the client has its answer, and a frame that must be read
		// through goes first. Unlike those, they need no budget, so
		// without this a flood of them would be taken in at the full
		// rate, costing both ends of the connection CPU that the
		// others wait for.
		cost := 1
		if answer != nil {
			cost = discardCost
		}
		if size > bigFrame && got >= firstChunk {
			n, wait := c.s.readRate.allow(c.ip, want*cost, time.Now())
			if wait > 0 {
				// Over its address's rate: read nothing, and let
				// another big frame be read meanwhile.
				if !throttled {
					throttled = true
					c.s.metrics.limitHits.WithLabelValues(hitBigFrameRate).Inc()
				}
				if slot {
					<-c.s.bigReads
					slot = false
					c.nc.SetReadDeadline(deadline)
				}
				if err := c.s.sleepUntil(minTime(time.Now().Add(wait), deadline)); err != nil {
					return nil, mem, err
				}
				if !time.Now().Before(deadline) {
					return nil, mem, os.ErrDeadlineExceeded
				}
				continue
			}
			want = max(n/cost, 1)
		}
		if size > bigFrame && got >= firstChunk && !slot {
			// Wait for bytes without a slot, then take one to read them.
			if _, err := r.Peek(1); err != nil {
				return nil, mem, err
			}
			if err := c.takeBigRead(deadline); err != nil {
				return nil, mem, err
			}
			slot = true
		}
		if slot {
			c.nc.SetReadDeadline(minTime(deadline, time.Now().Add(bigReadStall)))
		}
		n, err := r.Read(cur[len(cur) : len(cur)+want])
		cur = cur[:len(cur)+n]
		got += n
		if size > bigFrame {
			c.s.readRate.spend(c.ip, n*cost)
		}
		if err != nil && got < int(size) {
			if !slot || !isTimeout(err) || !time.Now().Before(deadline) {
				return nil, mem, err
			}
			// Stalled: let another big frame be read meanwhile.
			<-c.s.bigReads
			slot = false
			c.nc.SetReadDeadline(deadline)
		}
	}
	if slot {
		c.nc.SetReadDeadline(deadline)
	}
	if answer != nil {
		if slot {
			<-c.s.bigReads
			slot = false
		}
		if err := answer(); err != nil {
			return nil, mem, err
		}
		return nil, mem, errFrameAnswered
	}
	body = make([]byte, 0, size)
	for i, ch := range chunks {
		body = append(body, (*ch)[:min(firstChunk<<min(i, len(chunkPools)-1), int(size)-len(body))]...)
	}
	return body, mem, nil
}

// chunkPools hold read chunks by size class: 4 KiB << i.
var chunkPools [9]sync.Pool

func getChunk(class int) *[]byte {
	if ch, ok := chunkPools[class].Get().(*[]byte); ok {
		return ch
	}
	b := make([]byte, firstChunk<<class)
	return &b
}

func putChunk(ch *[]byte) {
	for class := range chunkPools {
		if cap(*ch) == firstChunk<<class {
			chunkPools[class].Put(ch)
			return
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// takeBigRead takes one of the node's big-read slots, waiting for it until
// deadline at the latest.
func (c *conn) takeBigRead(deadline time.Time) error {
	select {
	case c.s.bigReads <- struct{}{}:
		return nil
	default:
	}
	c.s.metrics.limitHits.WithLabelValues(hitBigFrameReads).Inc()
	ctx, cancel := context.WithDeadline(c.s.ctx, deadline)
	defer cancel()
	select {
	case c.s.bigReads <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// takeMemory takes n bytes of the request budget, waiting for them until
// deadline at the latest.
func (c *conn) takeMemory(n int64, big bool, deadline time.Time) error {
	if c.s.reqMemory.tryAcquire(n, big) {
		return nil
	}
	c.s.metrics.limitHits.WithLabelValues(hitRequestMemoryWait).Inc()
	ctx, cancel := context.WithDeadline(c.s.ctx, deadline)
	defer cancel()
	return c.s.reqMemory.acquire(ctx, n, big)
}

// sleepUntil waits until t, or until the server stops (its error then).
func (s *Server) sleepUntil(t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}
