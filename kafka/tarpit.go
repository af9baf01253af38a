package kafka

import (
	"net"
	"sync"
	"time"
)

// A connection refused at its address's connection limit, or cut for a
// frame no Kafka client sends, is closed only after Limits.RefusedCloseDelay,
// unread, as Kafka delays closing a connection over its address's
// connection-creation rate (and a failed login). A client that redials the
// moment it is cut otherwise costs the node, and every other process on
// the machine, an accept, a reset and a redial hundreds of times a second
// per connection; held, it waits, and a sender's writes back up in TCP.

// tarpit holds refused connections until their close is due. One goroutine
// (run, owned by the Server's wg) closes them; the delay is the same for
// all, so the queue is in closing order.
type tarpit struct {
	delay time.Duration
	max   int

	mu     sync.Mutex
	q      []held // q[head:] are held, oldest first
	head   int
	closed bool
	wake   chan struct{} // one token: the queue went from empty to not
}

type held struct {
	c  net.Conn
	at time.Time
}

func newTarpit(delay time.Duration, max int) *tarpit {
	return &tarpit{delay: delay, max: max, wake: make(chan struct{}, 1)}
}

// hold takes c to close later; it reports false, leaving c to the caller,
// when the delay is off, the server stops or max connections are held
// already (each holds a file descriptor).
func (t *tarpit) hold(c net.Conn) bool {
	if t == nil || t.delay <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.q)-t.head >= t.max {
		return false
	}
	if t.head > 0 && t.head == len(t.q) {
		t.q, t.head = t.q[:0], 0
	}
	t.q = append(t.q, held{c: c, at: time.Now().Add(t.delay)})
	if len(t.q)-t.head == 1 {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// due pops the connections whose close is due and returns them with when
// the next one is (zero when none is held).
func (t *tarpit) due(now time.Time) ([]net.Conn, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []net.Conn
	for t.head < len(t.q) && !t.q[t.head].at.After(now) {
		out = append(out, t.q[t.head].c)
		t.q[t.head] = held{}
		t.head++
	}
	if t.head == len(t.q) {
		return out, time.Time{}
	}
	return out, t.q[t.head].at
}

// run closes held connections as they come due, and all of them once done
// is closed.
func (t *tarpit) run(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		conns, next := t.due(time.Now())
		for _, c := range conns {
			c.Close()
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-done:
			t.mu.Lock()
			t.closed = true
			rest := t.q[t.head:]
			t.q, t.head = nil, 0
			t.mu.Unlock()
			for _, h := range rest {
				h.c.Close()
			}
			return
		case <-t.wake:
		case <-timer.C:
		}
	}
}

// delayClose waits out the refused close delay, or until the server stops.
func (s *Server) delayClose() {
	if s.cfg.Limits.RefusedCloseDelay <= 0 {
		return
	}
	t := time.NewTimer(s.cfg.Limits.RefusedCloseDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}
