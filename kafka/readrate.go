package kafka

import (
	"net/netip"
	"sync"
	"time"
)

// Frames over bigFrame from one client address are read at most
// Limits.BigFrameRatePerIP bytes a second, all its connections together:
// reading a flood of 100 MiB frames at loopback speed costs CPU and memory
// bandwidth that the small requests of other clients then wait for. A
// reader over its address's rate gives its big-read slot up and waits,
// unread (TCP pushes back on the sender), within its frame timeout.

// rateBuckets holds a token bucket per client address with big frames
// being read; an address's bucket goes once its last connection closes.
type rateBuckets struct {
	rate  float64 // bytes a second; 0: no limit
	burst float64

	mu sync.Mutex
	by map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
	conns  int
}

func newRateBuckets(rate int64) *rateBuckets {
	// A burst of a tenth of a second, at least a chunk: reads go at most a
	// chunk at a time.
	return &rateBuckets{rate: float64(rate), burst: max(float64(rate)/10, float64(bigFrame)), by: map[netip.Addr]*bucket{}}
}

// open and close count an address's connections.
func (r *rateBuckets) open(ip netip.Addr) {
	if r == nil || r.rate <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.by[ip]
	if b == nil {
		b = &bucket{tokens: r.burst, last: time.Now()}
		r.by[ip] = b
	}
	b.conns++
}

func (r *rateBuckets) close(ip netip.Addr) {
	if r == nil || r.rate <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if b := r.by[ip]; b != nil {
		if b.conns--; b.conns <= 0 {
			delete(r.by, ip)
		}
	}
}

// allow returns how many of want bytes ip may read now, or how long to
// wait before asking again.
func (r *rateBuckets) allow(ip netip.Addr, want int, now time.Time) (int, time.Duration) {
	if r == nil || r.rate <= 0 {
		return want, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.by[ip]
	if b == nil {
		return want, 0 // not counted (a test's bare conn)
	}
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*r.rate, r.burst)
	b.last = now
	// Bytes are granted growChunk at a time at least: tiny reads as
	// each byte's tokens come in would spend the CPU the limit saves.
	need := float64(min(want, growChunk))
	if b.tokens < need {
		return 0, time.Duration((need - b.tokens) / r.rate * float64(time.Second))
	}
	return min(want, int(b.tokens)), 0
}

// spend takes n bytes read from ip's bucket.
func (r *rateBuckets) spend(ip netip.Addr, n int) {
	if r == nil || r.rate <= 0 || n <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if b := r.by[ip]; b != nil {
		b.tokens -= float64(n)
	}
}
