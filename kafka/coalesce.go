package kafka

import (
	"net"
	"sync"
	"sync/atomic"
)

// coalesceSize is how many bytes of TLS records a connection gathers
// before one write to the socket.
const coalesceSize = 256 << 10

var coalescePool = sync.Pool{New: func() any {
	b := make([]byte, 0, coalesceSize)
	return &b
}}

// coalescer sits under a TLS connection and, while its writer holds it,
// gathers the records crypto/tls writes one by one (at most 16 KiB each)
// into writes of up to coalesceSize. A 1 MiB Fetch response is then 4
// syscalls, not 64, and the client is woken 4 times to read it, not 64:
// on a loaded machine each wake-up waits for a CPU. Outside a hold
// (handshake, a KeyUpdate answered by the reader, the close alert) writes
// go straight through.
type coalescer struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     *[]byte
	err     error // the first failed write of a hold
	// closing is set by conn.close before it closes the TLS connection:
	// the close alert is then dropped rather than wait behind a flush to
	// a client that does not read (Server.Close cuts such connections one
	// by one, and crypto/tls would wait up to 5 s on each).
	closing atomic.Bool
}

// hold starts gathering writes.
func (c *coalescer) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = true
}

// release writes what the hold gathered and lets later writes through. It
// returns the first write error of the hold.
func (c *coalescer) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushLocked()
	c.holding = false
	if c.buf != nil {
		*c.buf = (*c.buf)[:0]
		coalescePool.Put(c.buf)
		c.buf = nil
	}
	err := c.err
	c.err = nil
	return err
}

func (c *coalescer) Write(p []byte) (int, error) {
	if !c.closing.Load() {
		c.mu.Lock()
	} else if !c.mu.TryLock() {
		return 0, net.ErrClosed
	}
	defer c.mu.Unlock()
	if !c.holding {
		return c.Conn.Write(p)
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.buf == nil {
		c.buf = coalescePool.Get().(*[]byte)
	}
	if len(*c.buf)+len(p) > cap(*c.buf) {
		c.flushLocked()
		if c.err != nil {
			return 0, c.err
		}
	}
	if len(p) > cap(*c.buf) {
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

func (c *coalescer) flushLocked() {
	if c.buf == nil || len(*c.buf) == 0 || c.err != nil {
		return
	}
	_, c.err = c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
}
