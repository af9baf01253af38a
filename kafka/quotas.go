package kafka

import (
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
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
	// QuotaRequestPercentage (KIP-124) bounds the time a client's requests
	// take on this node's handlers, in percent of one handler's time: 100
	// is one goroutine kept busy all the time.
	QuotaRequestPercentage = "request_percentage"
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
	QuotaProduce QuotaKind = iota // bytes produced
	QuotaFetch                    // bytes fetched
	QuotaRequest                  // nanoseconds of request handling
)

// maxMute bounds how long a connection is muted after one response, so a
// misbehaving client cannot make the reader sleep longer than a quota
// window.
const maxMute = 30 * time.Second

// A throttled client gets its answer at once, with throttle_time_ms, and
// its connection is muted for that long, as Kafka does since KIP-219 for
// every request version: the reader reads nothing more from it until the
// time has passed (a client that knows KIP-219 waits on its side too).

// muteConn mutes cc until t, or longer if it is muted longer already. It
// may run on the reader or the writer goroutine.
func muteConn(cc *connCtx, t time.Time) {
	for {
		old := cc.mutedUntil.Load()
		if t.UnixNano() <= old || cc.mutedUntil.CompareAndSwap(old, t.UnixNano()) {
			return
		}
	}
}

// waitMuted blocks, on the reader goroutine, while cc is muted.
func waitMuted(s *Server, cc *connCtx) {
	until := cc.mutedUntil.Load()
	if until == 0 {
		return
	}
	sleepUnless(time.Until(time.Unix(0, until)), cc.ctx.Done(), s.backend.ShuttingDown())
}

// clientUser is the quota user of a connection: its principal's name.
func clientUser(cc *connCtx) string {
	if cc.principal.Name == "" {
		return Anonymous.Name
	}
	return cc.principal.Name
}

// throttle records amount (bytes, or nanoseconds for QuotaRequest) of the
// traffic of user (clientUser, read on the reader goroutine, which owns
// the principal) against its quota, and returns the throttle time to
// answer with; when it is not zero the connection is muted for that long.
func throttle(s *Server, cc *connCtx, user string, kind QuotaKind, amount int) time.Duration {
	d := s.backend.Throttle(kind, user, cc.clientID, amount)
	if d <= 0 {
		return 0
	}
	d = min(d, maxMute)
	muteConn(cc, time.Now().Add(d))
	return d
}

// repliesWait lists the APIs whose reply waits on other work: replication,
// a rebalance, a metadata change. Their request time is what the handler
// takes, not the reply (in Kafka, time in purgatory does not count
// either). A Fetch's reply counts, less its long poll (connCtx.replyWaited).
var repliesWait = map[int16]bool{0: true, 8: true, 11: true, 12: true, 14: true, 13: true,
	19: true, 20: true, 21: true, 22: true, 30: true, 31: true, 33: true, 37: true, 43: true,
	44: true, 49: true, 51: true, 57: true, 68: true}

// requestQuota records a request's handling time against the client's
// request_percentage quota and puts the throttle time, if any, in the
// response (the larger of it and a byte-rate throttle already there). A
// throttled Fetch is answered empty instead, as Kafka does whichever
// quota throttles it: the records are not sent, and their bytes are taken
// back from the consumer's byte-rate quota when that quota counted them
// as throttled too. Runs on the writer goroutine, once the response is
// built; it returns the response to send.
func requestQuota(s *Server, cc *connCtx, user string, resp kmsg.Response, took time.Duration) kmsg.Response {
	d := throttle(s, cc, user, QuotaRequest, int(took))
	if d <= 0 {
		return resp
	}
	ms := int32(d.Milliseconds())
	if fr, ok := resp.(*kmsg.FetchResponse); ok {
		if size := fetchSize(fr); size > 0 {
			if fr.ThrottleMillis > 0 {
				s.backend.Unrecord(QuotaFetch, user, cc.clientID, size)
			}
			empty := kmsg.NewPtrFetchResponse()
			empty.Version, empty.ThrottleMillis = fr.Version, max(ms, fr.ThrottleMillis)
			return empty
		}
	}
	if tr, ok := resp.(kmsg.ThrottleResponse); ok {
		if cur, _ := tr.Throttle(); ms > cur {
			resp.(kmsg.SetThrottleResponse).SetThrottle(ms)
		}
	}
	return resp
}

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
