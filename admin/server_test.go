package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeSource stands in for the broker; the mutex matters because handlers
// run on server goroutines while tests change the state.
type fakeSource struct {
	mu           sync.Mutex
	nodeID       int32
	parts        []PartitionStatus
	shuttingDown bool
	ready        bool
	readyReason  string
	nodes        []NodeStatus
}

func (f *fakeSource) NodeID() int32 { f.mu.Lock(); defer f.mu.Unlock(); return f.nodeID }
func (f *fakeSource) Partitions() []PartitionStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]PartitionStatus(nil), f.parts...)
}
func (f *fakeSource) ShuttingDown() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.shuttingDown }
func (f *fakeSource) Ready() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.readyReason
}
func (f *fakeSource) Nodes() []NodeStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]NodeStatus(nil), f.nodes...)
}

func (f *fakeSource) Process() ProcessInfo {
	return ProcessInfo{PID: 42, StartedAt: time.Unix(1700000000, 0)}
}

func (f *fakeSource) set(fn func(f *fakeSource)) { f.mu.Lock(); defer f.mu.Unlock(); fn(f) }

// healthyCluster is three nodes, every partition replicated on all three
// with a full ISR, seen from node 1.
func healthyCluster() *fakeSource {
	part := func(topic string, p int32, leader int32, internal bool) PartitionStatus {
		return PartitionStatus{
			Topic: topic, Partition: p, Leader: leader,
			Replicas: []int32{1, 2, 3}, InSyncReplicas: []int32{1, 2, 3},
			LeaderEpoch: 4, HighWatermark: 100, LogStartOffset: 0, AppliedIndex: 120,
			Status: StatusHealthy, Internal: internal,
		}
	}
	return &fakeSource{
		nodeID: 1,
		ready:  true,
		parts: []PartitionStatus{
			part("__consumer_offsets", 0, 2, true),
			part("test-topic", 0, 1, false),
			part("test-topic", 1, 3, false),
		},
		nodes: []NodeStatus{
			{ID: 1, Kafka: "node1:9092", Admin: "node1:3000", Connected: true},
			{ID: 2, Kafka: "node2:9092", Admin: "node2:3000", Connected: true},
			{ID: 3, Kafka: "node3:9092", Admin: "node3:3000", Connected: true},
		},
	}
}

func newTestServer(t *testing.T, src Source, g prometheus.Gatherer) *Server {
	t.Helper()
	if g == nil {
		g = prometheus.NewRegistry()
	}
	s, err := New(Config{Listen: "127.0.0.1:0", Source: src, Gatherer: g})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// get runs one request through the handler without a network listener.
func get(t *testing.T, h http.Handler, method, path string) (int, http.Header, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Header(), rec.Body.Bytes()
}

// getJSON also checks the content type and decodes the body generically,
// the way jq sees it.
func getJSON[T any](t *testing.T, h http.Handler, path string) (int, T) {
	t.Helper()
	code, hdr, body := get(t, h, http.MethodGet, path)
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q", path, ct)
	}
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: decode %q: %v", path, body, err)
	}
	return code, v
}

func TestHealthHealthyMatchesRunbookShape(t *testing.T) {
	s := newTestServer(t, healthyCluster(), nil)
	code, body := getJSON[map[string]any](t, s.Handler(), "/health")
	if code != http.StatusOK {
		t.Fatalf("code %d, want 200: %v", code, body)
	}
	if body["status"] != "healthy" {
		t.Fatalf("status %v", body["status"])
	}
	if body["node_id"] != float64(1) {
		t.Fatalf("node_id %v", body["node_id"])
	}
	if _, ok := body["reasons"]; ok {
		t.Fatalf("healthy response carries reasons: %v", body["reasons"])
	}
	parts, ok := body["partitions"].(map[string]any)
	if !ok {
		t.Fatalf("partitions is %T", body["partitions"])
	}
	if len(parts) != 3 {
		t.Fatalf("want 3 partitions (internal included), got %v", parts)
	}
	p, ok := parts["test-topic-0"].(map[string]any)
	if !ok {
		t.Fatalf("missing test-topic-0: %v", parts)
	}
	if p["leader"] != float64(1) || p["status"] != "healthy" {
		t.Fatalf("test-topic-0 = %v", p)
	}
	if !reflect.DeepEqual(p["in_sync_replicas"], []any{float64(1), float64(2), float64(3)}) {
		t.Fatalf("in_sync_replicas = %v", p["in_sync_replicas"])
	}
	if _, ok := parts["__consumer_offsets-0"]; !ok {
		t.Fatalf("internal partition missing: %v", parts)
	}
}

func TestHealthUnderReplicatedIsDegraded(t *testing.T) {
	src := healthyCluster()
	src.parts[2].InSyncReplicas = []int32{1, 3}
	s := newTestServer(t, src, nil)
	code, body := getJSON[map[string]any](t, s.Handler(), "/health")
	if code != http.StatusServiceUnavailable || body["status"] != "degraded" {
		t.Fatalf("got %d %v", code, body)
	}
	p := body["partitions"].(map[string]any)["test-topic-1"].(map[string]any)
	if p["status"] != "under_replicated" {
		t.Fatalf("test-topic-1 = %v", p)
	}
	if reasons, _ := body["reasons"].([]any); len(reasons) == 0 {
		t.Fatalf("no reasons: %v", body)
	}
}

func TestHealthNoLeaderIsUnhealthy(t *testing.T) {
	src := healthyCluster()
	src.parts[1].Leader = 0
	src.parts[2].InSyncReplicas = []int32{1, 3} // offline must outrank degraded
	s := newTestServer(t, src, nil)
	code, body := getJSON[map[string]any](t, s.Handler(), "/health")
	if code != http.StatusServiceUnavailable || body["status"] != "unhealthy" {
		t.Fatalf("got %d %v", code, body)
	}
	p := body["partitions"].(map[string]any)["test-topic-0"].(map[string]any)
	if p["status"] != "offline" || p["leader"] != float64(0) {
		t.Fatalf("test-topic-0 = %v", p)
	}
}

func TestShuttingDown(t *testing.T) {
	src := healthyCluster()
	s := newTestServer(t, src, nil)
	h := s.Handler()

	code, ready := getJSON[map[string]any](t, h, "/ready")
	if code != http.StatusOK || ready["ready"] != true {
		t.Fatalf("before shutdown /ready: %d %v", code, ready)
	}

	src.set(func(f *fakeSource) { f.shuttingDown = true })

	code, body := getJSON[map[string]any](t, h, "/health")
	if code != http.StatusServiceUnavailable || body["status"] != "unhealthy" || body["shutting_down"] != true {
		t.Fatalf("/health: %d %v", code, body)
	}
	code, ready = getJSON[map[string]any](t, h, "/ready")
	if code != http.StatusServiceUnavailable || ready["ready"] != false || ready["reason"] != "shutting down" {
		t.Fatalf("/ready: %d %v", code, ready)
	}
	code, safe := getJSON[map[string]any](t, h, "/restart-safe")
	if code != http.StatusServiceUnavailable || safe["safe"] != false {
		t.Fatalf("/restart-safe: %d %v", code, safe)
	}
}

func TestNotReady(t *testing.T) {
	src := healthyCluster()
	src.ready, src.readyReason = false, "catching up on metadata"
	s := newTestServer(t, src, nil)
	code, ready := getJSON[map[string]any](t, s.Handler(), "/ready")
	if code != http.StatusServiceUnavailable || ready["reason"] != "catching up on metadata" {
		t.Fatalf("/ready: %d %v", code, ready)
	}
	code, body := getJSON[map[string]any](t, s.Handler(), "/health")
	if code != http.StatusServiceUnavailable || body["status"] != "unhealthy" {
		t.Fatalf("/health: %d %v", code, body)
	}
}

func TestPartitionsJSONNames(t *testing.T) {
	src := healthyCluster()
	src.parts[0].InSyncReplicas = nil // must still come out as []
	s := newTestServer(t, src, nil)
	code, list := getJSON[[]map[string]any](t, s.Handler(), "/partitions")
	if code != http.StatusOK || len(list) != 3 {
		t.Fatalf("got %d %v", code, list)
	}
	for _, k := range []string{"topic", "partition", "leader", "replicas", "in_sync_replicas",
		"leader_epoch", "high_watermark", "log_start_offset", "applied_index", "status", "internal"} {
		if _, ok := list[1][k]; !ok {
			t.Errorf("key %q missing from %v", k, list[1])
		}
	}
	p := list[1]
	if p["topic"] != "test-topic" || p["partition"] != float64(0) || p["leader"] != float64(1) ||
		p["leader_epoch"] != float64(4) || p["high_watermark"] != float64(100) || p["status"] != "healthy" {
		t.Errorf("fields: %v", p)
	}
	if isr, ok := list[0]["in_sync_replicas"].([]any); !ok || len(isr) != 0 {
		t.Errorf("nil ISR encoded as %#v, want []", list[0]["in_sync_replicas"])
	}
}

func TestPartitionsEmptyIsArray(t *testing.T) {
	s := newTestServer(t, &fakeSource{nodeID: 1, ready: true}, nil)
	code, _, body := get(t, s.Handler(), http.MethodGet, "/partitions")
	if code != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("got %d %q", code, body)
	}
	code, _, body = get(t, s.Handler(), http.MethodGet, "/nodes")
	if code != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("/nodes got %d %q", code, body)
	}
}

func TestNodes(t *testing.T) {
	s := newTestServer(t, healthyCluster(), nil)
	code, list := getJSON[[]map[string]any](t, s.Handler(), "/nodes")
	if code != http.StatusOK || len(list) != 3 {
		t.Fatalf("got %d %v", code, list)
	}
	want := map[string]any{"id": float64(2), "kafka": "node2:9092", "admin": "node2:3000", "connected": true}
	if !reflect.DeepEqual(list[1], want) {
		t.Fatalf("node 2 = %v", list[1])
	}
}

func TestRestartSafe(t *testing.T) {
	tests := []struct {
		name   string
		change func(f *fakeSource)
		safe   bool
	}{
		{"healthy", func(*fakeSource) {}, true},
		{"two replicas lose quorum", func(f *fakeSource) {
			f.parts[1].Replicas = []int32{1, 2}
			f.parts[1].InSyncReplicas = []int32{1, 2}
		}, false},
		{"other replica already out of ISR", func(f *fakeSource) {
			f.parts[2].InSyncReplicas = []int32{1, 3}
		}, false},
		{"single replica on another node", func(f *fakeSource) {
			f.parts[2].Replicas = []int32{3}
			f.parts[2].InSyncReplicas = []int32{3}
		}, true},
		{"peer disconnected", func(f *fakeSource) { f.nodes[2].Connected = false }, false},
		{"partition offline", func(f *fakeSource) { f.parts[0].Leader = 0 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := healthyCluster()
			src.set(tc.change)
			s := newTestServer(t, src, nil)
			code, body := getJSON[map[string]any](t, s.Handler(), "/restart-safe")
			wantCode := http.StatusOK
			if !tc.safe {
				wantCode = http.StatusServiceUnavailable
			}
			if code != wantCode || body["safe"] != tc.safe {
				t.Fatalf("got %d %v, want safe=%v", code, body, tc.safe)
			}
			reasons, _ := body["reasons"].([]any)
			if tc.safe != (len(reasons) == 0) {
				t.Fatalf("reasons %v with safe=%v", reasons, tc.safe)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "chronik_test_requests_total", Help: "test counter"})
	reg.MustRegister(c)
	c.Add(7)
	s := newTestServer(t, healthyCluster(), reg)
	code, _, body := get(t, s.Handler(), http.MethodGet, "/metrics")
	if code != http.StatusOK || !strings.Contains(string(body), "chronik_test_requests_total 7") {
		t.Fatalf("got %d %q", code, body)
	}
	// One registry per node: the process-wide default collectors must not leak in.
	if strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("default registry content served")
	}
}

func TestRoutingAndMethods(t *testing.T) {
	s := newTestServer(t, healthyCluster(), nil)
	h := s.Handler()
	if code, hdr, body := get(t, h, http.MethodGet, "/"); code != http.StatusOK ||
		!strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") || !strings.Contains(string(body), "/restart-safe") {
		t.Fatalf("index: %d %q", code, body)
	}
	if code, _, _ := get(t, h, http.MethodGet, "/nope"); code != http.StatusNotFound {
		t.Fatalf("unknown path: %d", code)
	}
	for _, path := range []string{"/", "/health", "/partitions", "/nodes", "/ready", "/restart-safe", "/metrics"} {
		if code, _, _ := get(t, h, http.MethodPost, path); code != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d", path, code)
		}
	}
}

func TestNewValidates(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, cfg := range []Config{
		{Listen: "127.0.0.1:0", Gatherer: reg},
		{Listen: "127.0.0.1:0", Source: healthyCluster()},
		{Source: healthyCluster(), Gatherer: reg},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted an incomplete config", cfg)
		}
	}
}

func TestStartServeClose(t *testing.T) {
	s := newTestServer(t, healthyCluster(), nil)
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := s.Start(); err == nil {
		t.Fatalf("second Start succeeded")
	}
	addr := s.Addr()
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("Addr %q is not the bound port", addr)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"healthy"`) {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := client.Get("http://" + addr + "/health"); err == nil {
		t.Fatalf("server still answering after Close")
	}
	if err := s.Start(); err == nil {
		t.Fatalf("Start after Close succeeded")
	}
}

func TestCloseWithoutStart(t *testing.T) {
	s := newTestServer(t, healthyCluster(), nil)
	for range 2 {
		if err := s.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}
