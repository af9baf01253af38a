// Package admin serves a node's operator HTTP endpoints: health, partition
// and node state, readiness, restart safety and Prometheus metrics.
package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures a Server.
type Config struct {
	// Listen is the TCP address to bind, e.g. "127.0.0.1:3000"; port 0
	// picks a free port (see Server.Addr).
	Listen string
	// Source supplies the broker state the endpoints report.
	Source Source
	// Gatherer is the node's own metrics registry, served on /metrics.
	Gatherer prometheus.Gatherer
	// Logger defaults to discarding output when nil.
	Logger *slog.Logger

	// TLS, when set, makes the server HTTPS (see LoadTLS).
	TLS *tls.Config
	// Token, when set, is required as "Authorization: Bearer <token>" on
	// every endpoint but /health and /ready (see auth.go).
	Token string
	// Pprof serves /debug/pprof/; off, those paths are 404.
	Pprof bool
}

// Server is the admin HTTP server of one node.
type Server struct {
	src    Source
	logger *slog.Logger
	mux    *http.ServeMux
	http   *http.Server
	listen string
	tls    *tls.Config
	pprof  bool

	unauthorized atomic.Uint64

	mu      sync.Mutex
	ln      net.Listener
	started bool
	closed  bool
	done    chan struct{} // closed when the serve goroutine returns
}

// New validates cfg and builds the server without binding anything.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("admin: Config.Source is nil")
	}
	if cfg.Gatherer == nil {
		return nil, errors.New("admin: Config.Gatherer is nil")
	}
	// An empty address would bind every interface on a random port, which
	// is never what an operator meant.
	if cfg.Listen == "" {
		return nil, errors.New("admin: Config.Listen is empty")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "admin")

	s := &Server{
		src:    cfg.Source,
		logger: logger,
		mux:    http.NewServeMux(),
		listen: cfg.Listen,
		tls:    cfg.TLS,
		pprof:  cfg.Pprof,
		done:   make(chan struct{}),
	}
	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelError)

	// Method-qualified patterns give 405 for other methods and 404 for
	// unknown paths without hand-written checks.
	s.mux.HandleFunc("GET /{$}", s.handleIndex)
	s.mux.HandleFunc("GET /health", s.handleHealth)
	s.mux.HandleFunc("GET /partitions", s.handlePartitions)
	s.mux.HandleFunc("GET /nodes", s.handleNodes)
	s.mux.HandleFunc("GET /ready", s.handleReady)
	s.mux.HandleFunc("GET /restart-safe", s.handleRestartSafe)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: errLog}))
	// Go profiling, for performance work on a running node. Off by
	// default: profiles show internals and cost CPU.
	if cfg.Pprof {
		s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	certAuth := cfg.TLS != nil && cfg.TLS.ClientCAs != nil && cfg.TLS.ClientAuth >= tls.VerifyClientCertIfGiven

	s.http = &http.Server{
		Handler:           s.guard(s.mux, cfg.Token, certAuth),
		TLSConfig:         cfg.TLS,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          errLog,
	}
	return s, nil
}

// Handler returns the request router behind the access check, for tests
// and embedding.
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Start binds the listener before returning, so Addr is valid and a port
// conflict is reported to the caller, then serves in the background.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("admin: server is closed")
	}
	if s.started {
		return errors.New("admin: server already started")
	}
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("admin: listen %s: %w", s.listen, err)
	}
	s.ln = ln
	s.started = true
	s.logger.Info("admin server listening", "addr", ln.Addr().String(), "tls", s.tls != nil)
	go func() {
		defer close(s.done)
		var err error
		if s.tls != nil {
			err = s.http.ServeTLS(ln, "", "")
		} else {
			err = s.http.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("admin server stopped", "err", err)
		}
	}()
	return nil
}

// Addr is the bound address, or the configured one before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.listen
}

// Close shuts the server down gracefully; if ctx ends first, open
// connections are cut. Calls after the first return nil.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()

	err := s.http.Shutdown(ctx)
	if err != nil {
		// Shutdown gave up waiting; do not leave handlers running.
		_ = s.http.Close()
	}
	if started {
		<-s.done
	}
	return err
}

func (s *Server) handleIndex(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprint(w, `Chronik admin endpoints:
  /health        node and partition health (503 unless healthy)
  /partitions    partition leaders, replicas and in-sync replicas
  /nodes         cluster nodes and their connectivity
  /ready         readiness to serve clients (503 when not ready)
  /restart-safe  whether stopping this node now keeps every quorum (503 if not)
  /metrics       Prometheus metrics
  /debug/pprof/  Go profiles (when started with --admin-pprof)
`)
}

type healthResponse struct {
	Status       string                     `json:"status"`
	NodeID       int32                      `json:"node_id"`
	ShuttingDown bool                       `json:"shutting_down"`
	Partitions   map[string]PartitionHealth `json:"partitions"`
	Reasons      []string                   `json:"reasons,omitempty"`
	Moves        *Reassignments             `json:"reassignments,omitempty"`
	PID          int                        `json:"pid"`
	StartedAt    time.Time                  `json:"started_at"`
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	r, snap := evaluate(s.src)
	proc := s.src.Process()
	code := http.StatusOK
	if r.Status != StatusHealthy {
		code = http.StatusServiceUnavailable
	}
	s.writeJSON(w, code, healthResponse{
		Status:       r.Status,
		NodeID:       snap.nodeID,
		ShuttingDown: snap.shuttingDown,
		Partitions:   r.Partitions,
		Reasons:      r.Reasons,
		Moves:        r.Reassignments,
		PID:          proc.PID,
		StartedAt:    proc.StartedAt,
	})
}

func (s *Server) handlePartitions(w http.ResponseWriter, _ *http.Request) {
	parts := s.src.Partitions()
	out := make([]PartitionStatus, len(parts))
	for i, p := range parts {
		p.Replicas = nonNil(p.Replicas)
		p.InSyncReplicas = nonNil(p.InSyncReplicas)
		// The runbook's jq checks expect a status; fill it if the broker
		// left it blank.
		if p.Status == "" {
			p.Status = partitionStatus(p)
		}
		out[i] = p
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleNodes(w http.ResponseWriter, _ *http.Request) {
	nodes := s.src.Nodes()
	if nodes == nil {
		nodes = []NodeStatus{}
	}
	s.writeJSON(w, http.StatusOK, nodes)
}

type readyResponse struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

func (s *Server) handleReady(w http.ResponseWriter, _ *http.Request) {
	// Shutting down wins over Ready so load balancers drain this node
	// before its listeners go away.
	if s.src.ShuttingDown() {
		s.writeJSON(w, http.StatusServiceUnavailable, readyResponse{Reason: "shutting down"})
		return
	}
	ok, reason := s.src.Ready()
	if !ok {
		if reason == "" {
			reason = "not ready"
		}
		s.writeJSON(w, http.StatusServiceUnavailable, readyResponse{Reason: reason})
		return
	}
	s.writeJSON(w, http.StatusOK, readyResponse{Ready: true})
}

type restartSafeResponse struct {
	Safe    bool     `json:"safe"`
	Reasons []string `json:"reasons,omitempty"`
}

func (s *Server) handleRestartSafe(w http.ResponseWriter, _ *http.Request) {
	r := Evaluate(s.src)
	if r.SafeToRestart {
		s.writeJSON(w, http.StatusOK, restartSafeResponse{Safe: true})
		return
	}
	s.writeJSON(w, http.StatusServiceUnavailable, restartSafeResponse{Reasons: r.Reasons})
}

// writeJSON encodes before writing the header so an encoding failure can
// still become a 500 instead of a truncated body.
func (s *Server) writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		s.logger.Error("encode admin response", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}
