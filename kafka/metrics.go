package kafka

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type metrics struct {
	requests    *prometheus.CounterVec
	errors      *prometheus.CounterVec
	badRequests *prometheus.CounterVec
	connections prometheus.Gauge
	produce     prometheus.Summary
	fetch       prometheus.Summary
	latency     *prometheus.HistogramVec
	limitHits   *prometheus.CounterVec
	reauths     prometheus.Counter
}

var objectives = map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.99: 0.001}

func newMetrics(reg prometheus.Registerer, requestBytes func() float64, requestBudget float64) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chronik_requests_total", Help: "Kafka requests received, by API.",
		}, []string{"api"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chronik_request_errors_total", Help: "Error codes returned, by API and Kafka error.",
		}, []string{"api", "error"}),
		badRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chronik_bad_requests_total", Help: "Connections closed for malformed, oversized, unknown or unsupported requests.",
		}, []string{"reason"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chronik_client_connections", Help: "Open Kafka client connections.",
		}),
		produce: prometheus.NewSummary(prometheus.SummaryOpts{
			Name: "chronik_produce_latency_seconds", Help: "Produce request latency, receipt to response.",
			Objectives: objectives, MaxAge: time.Minute,
		}),
		fetch: prometheus.NewSummary(prometheus.SummaryOpts{
			Name: "chronik_fetch_latency_seconds", Help: "Fetch request latency, receipt to response (includes long-poll waits).",
			Objectives: objectives, MaxAge: time.Minute,
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "chronik_request_duration_seconds", Help: "Request latency by API.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"api"}),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chronik_limit_hits_total", Help: "Times a resource limit refused, cut off or held back a client, by limit.",
		}, []string{"limit"}),
		reauths: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chronik_sasl_reauthentications_total", Help: "SASL re-authentications (KIP-368) completed on open connections.",
		}),
	}
	inUse := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chronik_request_memory_bytes", Help: "Request bytes held in memory, read but not yet answered.",
	}, requestBytes)
	limit := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chronik_request_memory_limit_bytes", Help: "The budget of request bytes in memory (--queued-max-request-bytes).",
	}, func() float64 { return requestBudget })
	for _, c := range []prometheus.Collector{m.requests, m.errors, m.badRequests, m.connections, m.produce, m.fetch, m.latency, m.limitHits, m.reauths, inUse, limit} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(key int16, d time.Duration) {
	switch key {
	case 0:
		m.produce.Observe(d.Seconds())
	case 1:
		m.fetch.Observe(d.Seconds())
	}
	m.latency.WithLabelValues(kmsg.NameForKey(key)).Observe(d.Seconds())
}

// countErr records a non-zero error code returned by an API.
func (m *metrics) countErr(key int16, code int16) {
	if code == 0 {
		return
	}
	name := "UNKNOWN"
	if e := kerr.ErrorForCode(code); e != nil {
		if ke, ok := e.(*kerr.Error); ok {
			name = ke.Message
		}
	}
	m.errors.WithLabelValues(kmsg.NameForKey(key), name).Inc()
}
