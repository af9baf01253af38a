package kafka

import (
	"container/list"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Limits bound what a client, or many of them, can make a node spend.
// Zero fields take the defaults below; each one has a chronik-server flag
// (see the README's flag table) and is counted in
// chronik_limit_hits_total{limit} when it bites.
type Limits struct {
	// MaxConnections bounds open client connections (Kafka's
	// max.connections); further ones are closed as soon as accepted.
	MaxConnections int
	// MaxConnectionsPerIP bounds them per client address (Kafka's
	// max.connections.per.ip).
	MaxConnectionsPerIP int
	// FrameTimeout bounds how long one request frame may take to arrive
	// once its first byte has, and how long a new connection may stay
	// silent before its first request: a slow or stalled sender is cut
	// off in seconds, not after the idle timeout.
	FrameTimeout time.Duration
	// RefusedCloseDelay is how long a connection refused at
	// MaxConnectionsPerIP, or cut for a malformed or oversized frame, is
	// held unread before it is reset (tarpit.go); at most MaxConnections
	// refused ones are held at once. Kafka delays the close of
	// connections over their address's connection-creation rate (and of
	// a failed login) the same way. Negative turns it off.
	RefusedCloseDelay time.Duration
	// QueuedMaxRequestBytes is the node-wide budget of request bytes held
	// in memory, from the first byte read until the response is written
	// (Kafka's queued.max.request.bytes): each frame's bytes as they
	// arrive, then what decoding will make of them (decodecost.go). A
	// reader that would exceed it stops reading (TCP pushes back on the
	// client) until others finish, or until its frame timeout. Frames
	// over 64 KiB may hold only seven eighths of it together, so small
	// requests still pass while big ones wait.
	QueuedMaxRequestBytes int64
	// MaxBigFrameReads bounds how many frames over 1 MiB the node reads at
	// once. The others wait, unread (TCP pushes back on their senders),
	// within their frame timeout: the budget is then spent on frames that
	// complete instead of on a hundred partial ones, and memory
	// bandwidth and CPU stay with the small requests. A frame whose bytes
	// stop coming gives its slot up at once.
	MaxBigFrameReads int
	// BigFrameRatePerIP bounds, in bytes a second, how fast frames over
	// 1 MiB from one client address are read, all its connections
	// together (readrate.go); 0, the default, does not.
	BigFrameRatePerIP int64
	// MaxNonProduceRequestSize bounds frames of every API but Produce.
	// Those requests are made of small structs whose decoded form is
	// several times their wire size, so their frames are kept small
	// before the decoder sees a single array count.
	MaxNonProduceRequestSize int32
	// FetchMaxBytes caps the bytes one Fetch response carries, whatever
	// the client asks (Kafka's broker-side fetch.max.bytes).
	FetchMaxBytes int32
	// MaxPartitionsPerRequest bounds the partitions one CreateTopics or
	// CreatePartitions request may add; MaxPartitions bounds the
	// partitions of the whole cluster.
	MaxPartitionsPerRequest int
	MaxPartitions           int
}

// Defaults for Limits.
const (
	DefaultMaxConnections           = 10000
	DefaultMaxConnectionsPerIP      = 1000
	DefaultFrameTimeout             = 20 * time.Second
	DefaultRefusedCloseDelay        = time.Second
	DefaultQueuedMaxRequestBytes    = 512 << 20
	DefaultMaxBigFrameReads         = 2
	DefaultMaxNonProduceRequestSize = 4 << 20
	DefaultFetchMaxBytes            = 55 << 20 // Kafka's 57671680
	DefaultMaxPartitionsPerRequest  = 5000
	DefaultMaxPartitions            = 20000
)

func (l *Limits) defaults(maxRequest int32) {
	orDefault(&l.MaxConnections, DefaultMaxConnections)
	orDefault(&l.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	orDefault(&l.FrameTimeout, DefaultFrameTimeout)
	if l.RefusedCloseDelay == 0 {
		l.RefusedCloseDelay = DefaultRefusedCloseDelay
	}
	orDefault(&l.QueuedMaxRequestBytes, DefaultQueuedMaxRequestBytes)
	orDefault(&l.MaxBigFrameReads, DefaultMaxBigFrameReads)
	// One frame of the largest size must fit, or it could never be read.
	if l.QueuedMaxRequestBytes < int64(maxRequest) {
		l.QueuedMaxRequestBytes = int64(maxRequest)
	}
	orDefault(&l.MaxNonProduceRequestSize, DefaultMaxNonProduceRequestSize)
	if l.MaxNonProduceRequestSize > maxRequest {
		l.MaxNonProduceRequestSize = maxRequest
	}
	// Such a frame is charged maxDecodeFactor times its size, and a
	// request may take at most half the budget's bulk (reserveDecode).
	if most := l.QueuedMaxRequestBytes * 7 / 8 / 2 / maxDecodeFactor; int64(l.MaxNonProduceRequestSize) > most {
		l.MaxNonProduceRequestSize = int32(most)
	}
	orDefault(&l.FetchMaxBytes, DefaultFetchMaxBytes)
	orDefault(&l.MaxPartitionsPerRequest, DefaultMaxPartitionsPerRequest)
	orDefault(&l.MaxPartitions, DefaultMaxPartitions)
}

// orDefault sets *v to d when it is zero or negative (not configured).
func orDefault[T ~int | ~int32 | ~int64](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// Labels of chronik_limit_hits_total.
const (
	hitMaxConnections      = "max_connections"
	hitConnectionsPerIP    = "max_connections_per_ip"
	hitFrameTimeout        = "frame_timeout"
	hitRequestMemoryWait   = "queued_max_request_bytes"
	hitBigFrameReads       = "max_big_frame_reads"
	hitBigFrameRate        = "big_frame_rate_per_ip"
	hitNonProduceSize      = "max_nonproduce_request_size"
	hitFetchMaxBytes       = "fetch_max_bytes"
	hitPartitionsPerReq    = "max_partitions_per_request"
	hitPartitionsInCluster = "max_partitions"
)

// budget is a semaphore of bytes. Frames larger than growChunk take their
// bytes a chunk at a time as they arrive, and only from the bulk part of
// the budget (all but a reserve of an eighth): when big frames stall with
// the bulk spent, the small requests of well-behaved clients still get
// through. A waiter is served as soon as its bytes are free, in arrival
// order among those that fit.
type budget struct {
	mu      sync.Mutex
	size    int64
	bulk    int64 // what frames above growChunk may hold together
	used    int64
	bigUsed int64
	waiters list.List // of *budgetWaiter
}

type budgetWaiter struct {
	n     int64
	big   bool
	ready chan struct{}
}

func newBudget(size int64) *budget { return &budget{size: size, bulk: size - size/8} }

func (b *budget) fitsLocked(n int64, big bool) bool {
	return b.used+n <= b.size && (!big || b.bigUsed+n <= b.bulk)
}

func (b *budget) takeLocked(n int64, big bool) {
	b.used += n
	if big {
		b.bigUsed += n
	}
}

// tryAcquire takes n bytes if they are free.
func (b *budget) tryAcquire(n int64, big bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fitsLocked(n, big) {
		b.takeLocked(n, big)
		return true
	}
	return false
}

// acquire takes n bytes (n <= growChunk), waiting until they are free or
// ctx ends.
func (b *budget) acquire(ctx context.Context, n int64, big bool) error {
	b.mu.Lock()
	if b.fitsLocked(n, big) {
		b.takeLocked(n, big)
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, big: big, ready: make(chan struct{})}
	el := b.waiters.PushBack(w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready:
			// Granted while giving up: hand the bytes back.
			b.releaseLocked(n, big)
		default:
			b.waiters.Remove(el)
		}
		b.mu.Unlock()
		return ctx.Err()
	}
}

// takeUpTo takes as much of n bulk bytes as is free, without waiting.
func (b *budget) takeUpTo(n int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	n = max(min(n, b.size-b.used, b.bulk-b.bigUsed), 0)
	b.takeLocked(n, true)
	return n
}

// force takes n bulk bytes even past the budget: for memory already
// allocated, so that what comes next waits or shrinks.
func (b *budget) force(n int64) {
	b.mu.Lock()
	b.takeLocked(n, true)
	b.mu.Unlock()
}

func (b *budget) release(n int64, big bool) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.releaseLocked(n, big)
	b.mu.Unlock()
}

func (b *budget) releaseLocked(n int64, big bool) {
	b.used -= n
	if big {
		b.bigUsed -= n
	}
	for el := b.waiters.Front(); el != nil; {
		next := el.Next()
		if w := el.Value.(*budgetWaiter); b.fitsLocked(w.n, w.big) {
			b.takeLocked(w.n, w.big)
			b.waiters.Remove(el)
			close(w.ready)
		}
		el = next
	}
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// clientIP is the address part of a connection's remote address, the key
// of the per-IP connection count.
func clientIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// checkNewPartitions answers whether a request may add n partitions: ""
// when it may, else why not (the message of a POLICY_VIOLATION). The
// cluster-wide count is read from the metadata this node knows, so two
// requests racing on different nodes can together pass the limit by at
// most one request's worth.
func (s *Server) checkNewPartitions(n int64) string {
	lim := s.cfg.Limits
	if n > int64(lim.MaxPartitionsPerRequest) {
		s.metrics.limitHits.WithLabelValues(hitPartitionsPerReq).Inc()
		return fmt.Sprintf("request adds %d partitions, more than the %d allowed per request (--max-partitions-per-request)", n, lim.MaxPartitionsPerRequest)
	}
	var have int64
	for _, t := range s.backend.Topics(nil, true) {
		have += int64(len(t.Partitions))
	}
	if have+n > int64(lim.MaxPartitions) {
		s.metrics.limitHits.WithLabelValues(hitPartitionsInCluster).Inc()
		return fmt.Sprintf("cluster has %d partitions; %d more would pass the limit of %d (--max-partitions)", have, n, lim.MaxPartitions)
	}
	return ""
}
