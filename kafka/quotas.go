package kafka

import (
	"sync"
	"time"
)

// Client quotas (KIP-13, KIP-546). An entity is a user, a client id, or a
// user and a client id; a nil name is the entity type's default. The user
// is the name of the connection's principal: ANONYMOUS until it
// authenticates, as in Kafka.

// Quota entity types.
const (
	QuotaUser     = "user"
	QuotaClientID = "client-id"
)

// Quota keys enforced.
const (
	QuotaProducerByteRate = "producer_byte_rate"
	QuotaConsumerByteRate = "consumer_byte_rate"
)

// QuotaEntityPart is one component of a quota entity.
type QuotaEntityPart struct {
	Type string
	Name *string // nil: the default for Type
}

// QuotaEntry is one entity's quotas.
type QuotaEntry struct {
	Entity []QuotaEntityPart // sorted by Type
	Values map[string]float64
}

// QuotaOp sets a quota key, or removes it.
type QuotaOp struct {
	Key    string
	Value  float64
	Remove bool
}

// QuotaKind is the traffic a quota bounds.
type QuotaKind int8

const (
	QuotaProduce QuotaKind = iota
	QuotaFetch
)

// maxMute bounds how long a connection is muted after one response, so a
// misbehaving client cannot make the reader sleep longer than a quota
// window.
const maxMute = 30 * time.Second

// mutes holds, per connection, the time until which it is muted: Kafka
// answers a throttled request at once with throttle_time_ms (KIP-219) and
// then reads nothing more from that client until the time has passed. The
// reader goroutine waits here before it handles the connection's next
// Produce or Fetch, which stops reading from the socket as Kafka does.
// Entries go when they expire or when the next one is added after that.
var mutes = struct {
	mu    sync.Mutex
	until map[*connCtx]time.Time
}{until: map[*connCtx]time.Time{}}

// muteConn mutes cc until t.
func muteConn(cc *connCtx, t time.Time) {
	now := time.Now()
	mutes.mu.Lock()
	defer mutes.mu.Unlock()
	for k, u := range mutes.until {
		if !u.After(now) {
			delete(mutes.until, k)
		}
	}
	if t.After(now) {
		mutes.until[cc] = t
	}
}

// waitMuted blocks, on the reader goroutine, while cc is muted.
func waitMuted(s *Server, cc *connCtx) {
	mutes.mu.Lock()
	t, ok := mutes.until[cc]
	delete(mutes.until, cc)
	mutes.mu.Unlock()
	if !ok {
		return
	}
	sleepUnless(time.Until(t), cc.ctx.Done(), s.backend.ShuttingDown())
}

// throttle records a response's bytes against the client's quota and
// returns the throttle time to answer with. A client that understands
// KIP-219 (afterResponse) gets its answer at once and its connection is
// muted for that long; an older one gets the answer only after the delay,
// which is the caller's to wait (see delayReply).
func throttle(s *Server, cc *connCtx, kind QuotaKind, bytes int, afterResponse bool) time.Duration {
	user := cc.principal.Name
	if user == "" {
		user = Anonymous.Name
	}
	d := s.backend.Throttle(kind, user, cc.clientID, bytes)
	if d <= 0 {
		return 0
	}
	if d > maxMute {
		d = maxMute
	}
	if afterResponse {
		muteConn(cc, time.Now().Add(d))
	}
	return d
}

// delayReply waits d unless the server stops first.
func delayReply(cc *connCtx, d time.Duration) { sleepUnless(d, cc.ctx.Done(), nil) }

// sleepUnless waits d, or less if done or stop closes first (a nil
// channel never does).
func sleepUnless(d time.Duration, done, stop <-chan struct{}) {
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-done:
	case <-stop:
	}
}
