package broker

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
)

// Client quotas are kept in the cluster metadata (metaState.Quotas), keyed
// by quotaKey, each a map of quota key to value, so every node enforces the
// same ones. Rates are measured per node, as in Kafka: a quota bounds what
// one client sends to or reads from each broker.

// quotaKey encodes an entity canonically: its parts sorted by type, each
// "type=name" (the name query-escaped) or "type" alone for the default,
// joined by "&".
func quotaKey(entity []kafka.QuotaEntityPart) string {
	parts := make([]string, 0, len(entity))
	for _, p := range entity {
		if p.Name == nil {
			parts = append(parts, p.Type)
		} else {
			parts = append(parts, p.Type+"="+url.QueryEscape(*p.Name))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "&")
}

func parseQuotaKey(k string) []kafka.QuotaEntityPart {
	var out []kafka.QuotaEntityPart
	for _, s := range strings.Split(k, "&") {
		typ, name, named := strings.Cut(s, "=")
		p := kafka.QuotaEntityPart{Type: typ}
		if named {
			n, err := url.QueryUnescape(name)
			if err != nil {
				n = name
			}
			p.Name = &n
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// applyQuotas runs alter_client_quotas: cmd.Set's keys are set (an empty
// value removes one); an entity left with none is dropped. Called under
// m.mu from apply.
func (m *metaSM) applyQuotas(cmd *metaCmd) metaResult {
	if m.st.Quotas == nil {
		m.st.Quotas = map[string]map[string]string{}
	}
	q := alterMap(m.st.Quotas[cmd.Name], cmd.Set, false)
	if len(q) == 0 {
		delete(m.st.Quotas, cmd.Name)
	} else {
		m.st.Quotas[cmd.Name] = q
	}
	return metaResult{}
}

// quota returns the value of one quota key of one entity.
func (m *metaSM) quota(entity, key string) (float64, bool) {
	m.mu.RLock()
	v, ok := m.st.Quotas[entity][key]
	m.mu.RUnlock()
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil
}

// ClientQuotas implements kafka.Backend.
func (b *Broker) ClientQuotas() []kafka.QuotaEntry {
	b.metaSM.mu.RLock()
	defer b.metaSM.mu.RUnlock()
	out := make([]kafka.QuotaEntry, 0, len(b.metaSM.st.Quotas))
	for k, vals := range b.metaSM.st.Quotas {
		e := kafka.QuotaEntry{Entity: parseQuotaKey(k), Values: map[string]float64{}}
		for qk, v := range vals {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				e.Values[qk] = f
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return quotaKey(out[i].Entity) < quotaKey(out[j].Entity) })
	return out
}

// AlterClientQuotas implements kafka.Backend. Each key is set or removed
// on its own, so concurrent alterations of other keys are not lost.
func (b *Broker) AlterClientQuotas(ctx context.Context, entity []kafka.QuotaEntityPart, ops []kafka.QuotaOp, validateOnly bool) (int16, string) {
	if code, msg := checkQuotaEntity(entity); code != 0 {
		return code, msg
	}
	set := map[string]string{}
	for _, op := range ops {
		if op.Key != kafka.QuotaProducerByteRate && op.Key != kafka.QuotaConsumerByteRate && op.Key != kafka.QuotaRequestPercentage {
			return kerr.InvalidRequest.Code, fmt.Sprintf("unsupported quota key %q (producer_byte_rate, consumer_byte_rate and request_percentage are enforced)", op.Key)
		}
		if _, dup := set[op.Key]; dup {
			return kerr.InvalidRequest.Code, fmt.Sprintf("quota key %q named twice", op.Key)
		}
		if op.Remove {
			set[op.Key] = ""
			continue
		}
		if op.Key == kafka.QuotaRequestPercentage {
			if math.IsNaN(op.Value) || math.IsInf(op.Value, 0) || op.Value <= 0 || op.Value > maxRequestPercentage {
				return kerr.InvalidRequest.Code, fmt.Sprintf("quota %s=%v: a request percentage is above 0 and at most %d", op.Key, op.Value, maxRequestPercentage)
			}
		} else if math.IsNaN(op.Value) || math.IsInf(op.Value, 0) || op.Value <= 0 || op.Value != math.Trunc(op.Value) || op.Value > math.MaxInt64 {
			return kerr.InvalidRequest.Code, fmt.Sprintf("quota %s=%v: a byte rate is a positive whole number", op.Key, op.Value)
		}
		set[op.Key] = strconv.FormatFloat(op.Value, 'f', -1, 64)
	}
	if validateOnly || len(set) == 0 {
		return 0, ""
	}
	key := quotaKey(entity)
	b.metaSM.mu.RLock()
	_, exists := b.metaSM.st.Quotas[key]
	full := len(b.metaSM.st.Quotas) >= maxQuotaEntities
	b.metaSM.mu.RUnlock()
	if full && !exists {
		return kerr.PolicyViolation.Code, fmt.Sprintf("at most %d quota entities", maxQuotaEntities)
	}
	mr, err := b.metaPropose(ctx, metaCmd{Op: "alter_client_quotas", Name: key, Set: set})
	if err != nil {
		return kerr.RequestTimedOut.Code, "metadata change did not complete: " + err.Error()
	}
	return mr.Err, mr.Msg
}

// Bounds on what a client may store in the replicated metadata.
const (
	maxQuotaName     = 1024
	maxQuotaEntities = 10000
	// maxRequestPercentage is Kafka's bound too: 100 per handler thread,
	// and no node has that many.
	maxRequestPercentage = 100 * 1000
)

// checkQuotaEntity accepts a user, a client id, or both, as Kafka does
// (ip entities are not supported).
func checkQuotaEntity(entity []kafka.QuotaEntityPart) (int16, string) {
	if len(entity) == 0 {
		return kerr.InvalidRequest.Code, "a quota entity needs at least one part"
	}
	seen := map[string]bool{}
	for _, p := range entity {
		if p.Type != kafka.QuotaUser && p.Type != kafka.QuotaClientID {
			return kerr.InvalidRequest.Code, "unsupported quota entity type " + strconv.Quote(p.Type)
		}
		if seen[p.Type] {
			return kerr.InvalidRequest.Code, "quota entity type " + p.Type + " named twice"
		}
		if p.Name != nil && len(*p.Name) > maxQuotaName {
			return kerr.InvalidRequest.Code, fmt.Sprintf("quota entity names are at most %d bytes", maxQuotaName)
		}
		seen[p.Type] = true
	}
	return 0, ""
}

// Quota measurement, as Kafka's defaults: quotaSamples windows of
// quotaWindow each. A rate is the bytes in the windows kept over the time
// they span (at least one window), so a new client gets at most one
// window's worth before it is throttled.
const (
	quotaWindow  = time.Second
	quotaSamples = 11
	// sensorIdle is how long a client's rate is kept after its last
	// request; sweeps run at most every quotaWindow*quotaSamples.
	sensorIdle = 10 * time.Minute
)

type quotaSample struct {
	start time.Time
	bytes float64
}

// sensor is one client's measured rate of one kind of traffic.
type sensor struct {
	kind          kafka.QuotaKind
	user, client  string
	limit         float64
	samples       []quotaSample // oldest first
	last          time.Time
	total         float64 // everything recorded, for the request-time counter
	throttled     float64 // responses throttled
	throttledTime float64 // seconds of throttle time given
}

func (s *sensor) purge(now time.Time) {
	i := 0
	for i < len(s.samples) && now.Sub(s.samples[i].start) >= quotaSamples*quotaWindow {
		i++
	}
	s.samples = s.samples[i:]
}

func (s *sensor) record(now time.Time, n int) {
	s.purge(now)
	if len(s.samples) == 0 || now.Sub(s.samples[len(s.samples)-1].start) >= quotaWindow {
		s.samples = append(s.samples, quotaSample{start: now})
	}
	s.samples[len(s.samples)-1].bytes += float64(n)
	s.total += float64(n)
	s.last = now
}

// rate is bytes per second over the kept windows; elapsed is the time
// they span.
func (s *sensor) rate(now time.Time) (rate float64, elapsed time.Duration) {
	s.purge(now)
	if len(s.samples) == 0 {
		return 0, quotaWindow
	}
	elapsed = now.Sub(s.samples[0].start)
	if elapsed < quotaWindow {
		elapsed = quotaWindow
	}
	total := 0.0
	for _, x := range s.samples {
		total += x.bytes
	}
	return total / elapsed.Seconds(), elapsed
}

// quotaTracker holds every sensor of this node. The zero value is ready.
type quotaTracker struct {
	mu        sync.Mutex
	sensors   map[string]*sensor
	lastSweep time.Time
}

// Throttle implements kafka.Backend. As in Kafka, a rate above its bound
// is answered with the time that brings the rate over the measured span
// back to the bound: (rate-limit)/limit × span, at most the whole span
// kept.
func (b *Broker) Throttle(kind kafka.QuotaKind, user, clientID string, n int) time.Duration {
	var d time.Duration
	b.withSensor(kind, user, clientID, func(s *sensor, now time.Time) { d = s.throttle(now, n) })
	return d
}

// Unrecord implements kafka.Backend.
func (b *Broker) Unrecord(kind kafka.QuotaKind, user, clientID string, n int) {
	b.withSensor(kind, user, clientID, func(s *sensor, now time.Time) {
		s.record(now, -n)
		s.throttled--
	})
}

// QuotaWindow implements kafka.Backend.
func (b *Broker) QuotaWindow(kind kafka.QuotaKind, user, clientID string) int {
	limit, _, _, ok := b.findQuota(kind, user, clientID)
	if !ok || limit*quotaWindow.Seconds() >= math.MaxInt {
		return math.MaxInt
	}
	return int(limit * quotaWindow.Seconds())
}

// withSensor runs f on the client's sensor, under the tracker's lock; it
// does nothing for a client without a quota.
func (b *Broker) withSensor(kind kafka.QuotaKind, user, clientID string, f func(*sensor, time.Time)) {
	limit, tagUser, tagClient, ok := b.findQuota(kind, user, clientID)
	if !ok {
		return
	}
	t := &b.quotas
	now := time.Now()
	key := strconv.Itoa(int(kind)) + "\x00" + tagUser + "\x00" + tagClient
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sensors == nil {
		t.sensors = map[string]*sensor{}
	}
	if now.Sub(t.lastSweep) >= quotaSamples*quotaWindow {
		t.lastSweep = now
		for k, s := range t.sensors {
			if now.Sub(s.last) >= sensorIdle {
				delete(t.sensors, k)
			}
		}
	}
	s := t.sensors[key]
	if s == nil {
		s = &sensor{kind: kind, user: tagUser, client: tagClient}
		t.sensors[key] = s
	}
	s.limit = limit
	f(s, now)
}

// throttle records n bytes at now and returns the throttle time.
func (s *sensor) throttle(now time.Time, n int) time.Duration {
	s.record(now, n)
	r, elapsed := s.rate(now)
	if r <= s.limit {
		return 0
	}
	d := time.Duration((r - s.limit) / s.limit * float64(elapsed))
	if max := quotaSamples * quotaWindow; d > max {
		d = max
	}
	s.throttled++
	s.throttledTime += d.Seconds()
	return d
}

// findQuota looks the client's quota up in Kafka's order of precedence
// and returns it with the sensor's tags: the names of the entity that
// matched, a default standing for the client's own name.
//
// The limit is in the sensor's units: bytes per second, or for request
// time nanoseconds per second (request_percentage 100 is 1e9).
func (b *Broker) findQuota(kind kafka.QuotaKind, user, clientID string) (limit float64, tagUser, tagClient string, ok bool) {
	qk, scale := kafka.QuotaProducerByteRate, 1.0
	switch kind {
	case kafka.QuotaFetch:
		qk = kafka.QuotaConsumerByteRate
	case kafka.QuotaRequest:
		qk, scale = kafka.QuotaRequestPercentage, float64(time.Second)/100
	}
	b.metaSM.mu.RLock()
	none := len(b.metaSM.st.Quotas) == 0
	b.metaSM.mu.RUnlock()
	if none { // the common case: no lookups, no allocation
		return 0, "", "", false
	}
	u, c := &user, &clientID
	type level struct {
		parts      []kafka.QuotaEntityPart
		tagU, tagC bool
	}
	up := func(n *string) kafka.QuotaEntityPart { return kafka.QuotaEntityPart{Type: kafka.QuotaUser, Name: n} }
	cp := func(n *string) kafka.QuotaEntityPart {
		return kafka.QuotaEntityPart{Type: kafka.QuotaClientID, Name: n}
	}
	for _, l := range []level{
		{[]kafka.QuotaEntityPart{up(u), cp(c)}, true, true},
		{[]kafka.QuotaEntityPart{up(u), cp(nil)}, true, true},
		{[]kafka.QuotaEntityPart{up(u)}, true, false},
		{[]kafka.QuotaEntityPart{up(nil), cp(c)}, true, true},
		{[]kafka.QuotaEntityPart{up(nil), cp(nil)}, true, true},
		{[]kafka.QuotaEntityPart{up(nil)}, true, false},
		{[]kafka.QuotaEntityPart{cp(c)}, false, true},
		{[]kafka.QuotaEntityPart{cp(nil)}, false, true},
	} {
		v, found := b.metaSM.quota(quotaKey(l.parts), qk)
		if !found {
			continue
		}
		if l.tagU {
			tagUser = user
		}
		if l.tagC {
			tagClient = clientID
		}
		return v * scale, tagUser, tagClient, true
	}
	return 0, "", "", false
}

var (
	quotaRateDesc = prometheus.NewDesc("chronik_quota_byte_rate",
		"Measured byte rate of each client under a quota on this node, by traffic kind (produce, fetch).",
		[]string{"kind", "user", "client_id"}, nil)
	quotaLimitDesc = prometheus.NewDesc("chronik_quota_limit_bytes_per_second",
		"The quota in force for each measured client.", []string{"kind", "user", "client_id"}, nil)
	quotaThrottledDesc = prometheus.NewDesc("chronik_quota_throttled_responses_total",
		"Responses answered with a throttle time.", []string{"kind", "user", "client_id"}, nil)
	quotaThrottleTimeDesc = prometheus.NewDesc("chronik_quota_throttle_seconds_total",
		"Throttle time given to each client.", []string{"kind", "user", "client_id"}, nil)
	quotaRequestDesc = prometheus.NewDesc("chronik_quota_request_percentage",
		"Measured request handling time of each client under a request_percentage quota on this node, in percent of one handler's time.",
		[]string{"user", "client_id"}, nil)
	quotaRequestLimitDesc = prometheus.NewDesc("chronik_quota_request_percentage_limit",
		"The request_percentage quota in force for each measured client.", []string{"user", "client_id"}, nil)
	quotaRequestTotalDesc = prometheus.NewDesc("chronik_quota_request_seconds_total",
		"Request handling time recorded for each client under a request_percentage quota.", []string{"user", "client_id"}, nil)
)

// quotaCollector reports the sensors at scrape time.
type quotaCollector struct{ t *quotaTracker }

func (c quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{quotaRateDesc, quotaLimitDesc, quotaThrottledDesc, quotaThrottleTimeDesc,
		quotaRequestDesc, quotaRequestLimitDesc, quotaRequestTotalDesc} {
		ch <- d
	}
}

func (c quotaCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	for _, s := range c.t.sensors {
		kind := "produce"
		r, _ := s.rate(now)
		switch s.kind {
		case kafka.QuotaFetch:
			kind = "fetch"
		case kafka.QuotaRequest:
			kind = "request"
			pct := float64(time.Second) / 100
			ch <- prometheus.MustNewConstMetric(quotaRequestDesc, prometheus.GaugeValue, r/pct, s.user, s.client)
			ch <- prometheus.MustNewConstMetric(quotaRequestLimitDesc, prometheus.GaugeValue, s.limit/pct, s.user, s.client)
			ch <- prometheus.MustNewConstMetric(quotaRequestTotalDesc, prometheus.CounterValue, s.total/float64(time.Second), s.user, s.client)
		}
		if s.kind != kafka.QuotaRequest {
			ch <- prometheus.MustNewConstMetric(quotaRateDesc, prometheus.GaugeValue, r, kind, s.user, s.client)
			ch <- prometheus.MustNewConstMetric(quotaLimitDesc, prometheus.GaugeValue, s.limit, kind, s.user, s.client)
		}
		ch <- prometheus.MustNewConstMetric(quotaThrottledDesc, prometheus.CounterValue, s.throttled, kind, s.user, s.client)
		ch <- prometheus.MustNewConstMetric(quotaThrottleTimeDesc, prometheus.CounterValue, s.throttledTime, kind, s.user, s.client)
	}
}
