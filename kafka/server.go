package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Config configures a Server.
type Config struct {
	// Listen is the address to bind, e.g. "0.0.0.0:9092", for a single
	// PLAINTEXT listener; used only when Listeners is empty.
	Listen string
	// Listeners are the sockets served, each with its security protocol
	// (listener.go).
	Listeners []Listener
	// Credentials check SASL logins; nil refuses every login.
	Credentials Credentials
	// SASLMechanisms enabled on SASL listeners (DefaultSASLMechanisms
	// when empty).
	SASLMechanisms []string
	// MaxRequestSize bounds a request frame (Kafka's
	// socket.request.max.bytes); larger frames close the connection.
	MaxRequestSize int32
	// IdleTimeout closes connections that send nothing for this long
	// (Kafka's connections.max.idle.ms).
	IdleTimeout time.Duration
	// MaxReauth is Kafka's connections.max.reauth.ms (KIP-368): a SASL
	// login lasts this long, SaslAuthenticate v1+ tells the client so,
	// and a connection that has not logged in again by then is closed at
	// its next request. 0: logins do not expire.
	MaxReauth time.Duration
	// MaxInFlight bounds pipelined requests per connection.
	MaxInFlight int
	// Limits bound connections, frames, request memory and partitions.
	Limits Limits
	// TellMovedOnce: while draining, answer a non-idempotent Produce of a
	// partition not led here NOT_LEADER once per partition and connection
	// before forwarding it (forwarded.go).
	TellMovedOnce bool
	Backend       Backend
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Server accepts Kafka clients and serves the protocol.
type Server struct {
	cfg     Config
	backend Backend
	logger  *slog.Logger
	metrics *metrics
	apis    map[int16]*api

	lns       []*boundListener
	serveOnce sync.Once
	mu        sync.Mutex
	conns     map[*conn]struct{}
	// clientsVer counts changes of the clients connected (clients.go).
	clientsVer atomic.Uint64
	perIP      map[netip.Addr]int
	closed     bool
	allGone    chan struct{} // closed once closed is set and conns is empty
	// Requests are counted in two generations: those received before a
	// drain began (the drain waits for them) and those after.
	draining atomic.Bool
	inflight [2]atomic.Int64
	idle     broadcast // fired when a generation drops to zero
	// news fires when a connection starts a Produce or Fetch, is answered
	// NOT_LEADER for everything or closes, while AwaitActiveClients waits.
	news     broadcast
	awaiting atomic.Int32
	gone     broadcast // fired when a connection closes
	moved    toldMoved // forwarded.go

	reqMemory *budget
	// bigReads holds a token per frame over bigFrame being read
	// (Limits.MaxBigFrameReads).
	bigReads chan struct{}
	// refused holds connections refused at the per-address limit until
	// their close is due (tarpit.go).
	refused *tarpit
	// readRate holds the per-address budgets of big-frame bytes
	// (Limits.BigFrameRatePerIP).
	readRate *rateBuckets
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// handler serves one request. It runs on the connection's reader goroutine
// and must not block for long: work that waits (replication, long polls,
// group rebalances) goes into the returned reply, which the connection's
// writer calls in request order. A nil reply means no response (Produce
// with acks=0).
type handler func(s *Server, cc *connCtx, req kmsg.Request) reply

type reply func() kmsg.Response

// api binds a key, the versions served and the handler.
type api struct {
	key      int16
	min, max int16
	handle   handler
}

// registry holds the APIs this package serves; each NN_name.go file adds
// its own at init and nothing changes it afterwards.
var registry = map[int16]*api{}

func register(key, min, max int16, h handler) {
	if _, dup := registry[key]; dup {
		panic(fmt.Sprintf("kafka: api key %d registered twice", key))
	}
	registry[key] = &api{key: key, min: min, max: max, handle: h}
}

// NewServer makes a server; Start listens.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, errors.New("kafka: no backend")
	}
	if cfg.MaxRequestSize <= 0 {
		cfg.MaxRequestSize = 100 << 20
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	cfg.Limits.defaults(cfg.MaxRequestSize)
	if len(cfg.SASLMechanisms) == 0 {
		cfg.SASLMechanisms = DefaultSASLMechanisms
	}
	if err := cfg.checkListeners(); err != nil {
		return nil, err
	}
	mem := newBudget(cfg.Limits.QueuedMaxRequestBytes)
	m, err := newMetrics(cfg.Registerer, func() float64 { return float64(mem.inUse()) }, float64(mem.size))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, backend: cfg.Backend, logger: cfg.Logger, metrics: m, reqMemory: mem,
		conns: map[*conn]struct{}{}, perIP: map[netip.Addr]int{}, allGone: make(chan struct{}),
		bigReads: make(chan struct{}, cfg.Limits.MaxBigFrameReads), ctx: ctx, cancel: cancel,
		refused:  newTarpit(cfg.Limits.RefusedCloseDelay, cfg.Limits.MaxConnections),
		readRate: newRateBuckets(cfg.Limits.BigFrameRatePerIP)}
	s.apis = map[int16]*api{}
	for k, a := range registry {
		s.apis[k] = a
	}
	for _, g := range cfg.Backend.GroupAPIs() {
		s.apis[g.Key] = &api{key: g.Key, min: g.Min, max: g.Max, handle: handleGroup}
	}
	return s, nil
}

// Start binds the listener and starts accepting.
func (s *Server) Start() error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.Serve()
	return nil
}

// Listen binds the listeners without accepting yet: clients that connect
// wait in the kernel's backlog until Serve.
func (s *Server) Listen() error {
	for _, l := range s.cfg.Listeners {
		// Keep-alive is set on the connections admitted (admit), not on
		// every one accepted: under a flood of connections past the
		// limits those setsockopt calls were a fifth of the node's CPU.
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err := lc.Listen(s.ctx, "tcp", l.Listen)
		if err != nil {
			for _, b := range s.lns {
				b.ln.Close()
			}
			s.lns = nil
			return fmt.Errorf("kafka: listener %s: listen %s: %w", l.Name, l.Listen, err)
		}
		s.lns = append(s.lns, &boundListener{Listener: l, ln: ln, slot: make(chan struct{}, 1)})
	}
	return nil
}

// Serve starts accepting connections; calls after the first do nothing.
func (s *Server) Serve() {
	s.serveOnce.Do(func() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.refused.run(s.ctx.Done())
		}()
		for _, l := range s.lns {
			s.wg.Add(1)
			go s.accept(l)
		}
	})
}

// Addr is the bound address of the first listener.
func (s *Server) Addr() net.Addr { return s.lns[0].ln.Addr() }

// ListenerAddr is the bound address of the named listener, or nil.
func (s *Server) ListenerAddr(name string) net.Addr {
	for _, l := range s.lns {
		if l.Name == name {
			return l.ln.Addr()
		}
	}
	return nil
}

func (s *Server) accept(l *boundListener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		if !s.waitSlot(l) {
			return
		}
		c, err := l.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, most likely: wait for some to be
			// freed, longer each time, rather than spin on the error.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logger.Warn("kafka accept failed", "listener", l.Name, "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		s.admit(c, l)
	}
}

func (s *Server) admit(c net.Conn, l *boundListener) {
	ip := clientIP(c.RemoteAddr())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	hit := ""
	switch {
	case len(s.conns) >= s.cfg.Limits.MaxConnections:
		hit = hitMaxConnections // another listener took the last slot
	case s.perIP[ip] >= s.cfg.Limits.MaxConnectionsPerIP:
		hit = hitConnectionsPerIP
	}
	if hit != "" {
		s.mu.Unlock()
		s.metrics.limitHits.WithLabelValues(hit).Inc()
		s.logger.Debug("kafka connection refused: limit reached", "remote", c.RemoteAddr().String(), "limit", hit)
		// A reset, not a FIN: it frees the socket at once, and franz-go
		// retries a reset but not an EOF on a new connection's first
		// request (FACTS.md).
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		// Past its address's limit, the reset comes after the refused
		// close delay (tarpit.go); another listener's last slot taken
		// is a race, not a flood.
		if hit == hitMaxConnections || !s.refused.hold(c) {
			c.Close()
		}
		return
	}
	cn := newConn(s, c, ip, l)
	s.conns[cn] = struct{}{}
	s.perIP[ip]++
	s.mu.Unlock()
	s.readRate.open(ip)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true}) // Go's defaults: 15 s idle and interval
	}
	s.metrics.connections.Inc()
	s.wg.Add(1)
	go cn.serve()
}

// waitSlot waits, at the connection limit, until a connection closes, and
// reports false when the server stops first. As in Kafka's acceptor, the
// connections past the limit wait in the kernel's accept queue (and, once
// it is full, their SYNs go unanswered and are retried by the client's
// kernel) rather than being accepted and reset at once: a client that
// redials at once after a reset, thousands of times a second, then costs
// the node nothing, where each accept and reset cost it ~80 µs of CPU
// (TestHostileClients logs the figure).
func (s *Server) waitSlot(l *boundListener) bool {
	counted := false
	for {
		s.mu.Lock()
		full := !s.closed && len(s.conns) >= s.cfg.Limits.MaxConnections
		s.mu.Unlock()
		if !full {
			return true
		}
		if !counted {
			s.metrics.limitHits.WithLabelValues(hitMaxConnections).Inc()
			counted = true
			s.logger.Debug("kafka connections at the limit: not accepting until one closes", "listener", l.Name,
				"limit", s.cfg.Limits.MaxConnections)
		}
		select {
		case <-l.slot:
		case <-s.ctx.Done():
			return false
		}
	}
}

func (s *Server) dropConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.key.Load() != 0 {
		s.clientsVer.Add(1)
	}
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
	s.noteAllGoneLocked()
	s.mu.Unlock()
	s.readRate.close(c.ip)
	for _, l := range s.lns {
		select {
		case l.slot <- struct{}{}: // wakes its accept loop if it waits at the limit
		default:
		}
	}
	s.metrics.connections.Dec()
	s.gone.fire()
	s.noteNews()
}

func (s *Server) noteAllGoneLocked() {
	if !s.closed || len(s.conns) > 0 {
		return
	}
	select {
	case <-s.allGone:
	default:
		close(s.allGone)
	}
}

// noteNews wakes AwaitActiveClients, if it is waiting.
func (s *Server) noteNews() {
	if s.awaiting.Load() > 0 {
		s.news.fire()
	}
}

// StopAccepting closes the listener: new connections are refused by the
// kernel rather than accepted and dropped (franz-go does not retry an EOF
// on a fresh connection's first request).
func (s *Server) StopAccepting() {
	for _, l := range s.lns {
		l.ln.Close()
	}
}

// InFlight is the number of requests received but not yet answered.
func (s *Server) InFlight() int64 { return s.inflight[0].Load() + s.inflight[1].Load() }

// requestStarted counts a request and returns its generation.
func (s *Server) requestStarted() int {
	gen := 0
	if s.draining.Load() {
		gen = 1
	}
	s.inflight[gen].Add(1)
	return gen
}

func (s *Server) requestDone(gen int) {
	if s.inflight[gen].Add(-1) == 0 {
		s.idle.fire()
	}
}

// BeginDrain starts a drain: Drain waits for the requests received so far.
// Later requests are still served (a partition this node still leads is
// best served here); they are counted apart.
func (s *Server) BeginDrain() { s.draining.Store(true) }

// Drain waits until every request received before BeginDrain has been
// answered, or ctx ends.
func (s *Server) Drain(ctx context.Context) error {
	return s.waitGen(ctx, 0)
}

// DrainAll waits until no request at all is in flight, or ctx ends.
func (s *Server) DrainAll(ctx context.Context) error {
	if err := s.waitGen(ctx, 0); err != nil {
		return err
	}
	return s.waitGen(ctx, 1)
}

func (s *Server) waitGen(ctx context.Context, gen int) error {
	for {
		// Take the channel before looking at the count: a drop to zero
		// after the look closes it.
		zero := s.idle.wait()
		if s.inflight[gen].Load() <= 0 {
			return nil
		}
		select {
		case <-zero:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// AwaitActiveClients waits until every connection that sent a Produce or
// Fetch in the window before since has sent another one at or after since,
// and had every partition served here in the window answered NOT_LEADER,
// or ctx ends. A request handled after since sees the state of then (for a
// node that just handed off its leaderships: NOT_LEADER with the new
// leader), so an active client learns where to go before its connection
// closes, instead of finding a closed port and waiting for its next
// metadata refresh. Idle and metadata-only connections are not waited for,
// nor is one whose latest such request was already answered NOT_LEADER for
// every partition. It returns how many connections it waited for and how
// many of those were not heard from.
func (s *Server) AwaitActiveClients(ctx context.Context, since time.Time, window time.Duration) (waited, silent int) {
	from, to := since.Add(-window).UnixNano(), since.UnixNano()
	pending := func() []*conn {
		s.mu.Lock()
		defer s.mu.Unlock()
		var out []*conn
		for c := range s.conns {
			if c.waitingForNews(from, to) {
				out = append(out, c)
			}
		}
		return out
	}
	s.awaiting.Add(1)
	defer s.awaiting.Add(-1)
	waiting := pending()
	waited = len(waiting)
	for len(waiting) > 0 {
		news := s.news.wait()
		still := waiting[:0]
		for _, c := range waiting {
			select {
			case <-c.done: // closed by the client: nothing to tell it
				continue
			default:
			}
			if c.waitingForNews(from, to) {
				still = append(still, c)
			}
		}
		waiting = still
		if len(waiting) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return waited, len(waiting)
		case <-news:
		}
	}
	return waited, 0
}

// waitingForNews reports whether c's latest Produce or Fetch began in
// [from, to) and was not already answered NOT_LEADER for everything, or
// some partition was served here by such a request and not answered
// NOT_LEADER since (informed.go).
func (c *conn) waitingForNews(from, to int64) bool {
	t := c.lastData.Load()
	return t >= from && t < to && c.movedAt.Load() < t || c.served.pending(from, to)
}

// AwaitMetadataRequests waits until no open connection told NOT_LEADER
// for an idempotent batch still awaits its metadata request
// (awaitsMetadata), or ctx ends; it returns how many still did.
func (s *Server) AwaitMetadataRequests(ctx context.Context) int {
	s.awaiting.Add(1)
	defer s.awaiting.Add(-1)
	for {
		news := s.news.wait()
		now := time.Now().UnixNano()
		n := 0
		var next int64 // when the first waiting connection turns quiet
		s.mu.Lock()
		for c := range s.conns {
			select {
			case <-c.done:
				continue
			default:
			}
			if quietAt, waits := c.awaitsMetadata(now); waits {
				n++
				if next == 0 || quietAt < next {
					next = quietAt
				}
			}
		}
		s.mu.Unlock()
		if n == 0 {
			return 0
		}
		t := time.NewTimer(time.Duration(next - now))
		select {
		case <-ctx.Done():
			t.Stop()
			return n
		case <-news:
		case <-t.C:
		}
		t.Stop()
	}
}

// movedQuiet: a connection told NOT_LEADER that has sent no Produce or
// Fetch here for this long has moved its partitions, having learnt the
// leaders from another broker (sarama asks any). librdkafka retries a
// told batch here every retry.backoff.ms (100 ms) until it has moved.
const movedQuiet = 300 * time.Millisecond

// awaitsMetadata reports whether c was told NOT_LEADER for an idempotent
// batch (forwarded.go) and has neither asked for metadata since nor gone
// quiet (movedQuiet), and when it turns quiet. Until then the client still
// routes the partition here; were the connection to close now, it would
// try to reconnect at once (librdkafka), which lengthens its reconnect
// back-off towards this node.
func (c *conn) awaitsMetadata(now int64) (quietAt int64, waits bool) {
	told := c.cc.toldAt.Load()
	if told == 0 || c.metaAt.Load() >= told {
		return 0, false
	}
	quietAt = max(c.lastData.Load(), told) + int64(movedQuiet)
	return quietAt, now < quietAt
}

// Close stops the listener and closes every connection. Safe to call twice.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()
	s.StopAccepting()
	// Stop reading, let the writers send what was already read, then
	// close (see closeReset). A connection still busy after closeGrace is
	// cut.
	for _, c := range conns {
		c.nc.SetReadDeadline(time.Now())
	}
	s.mu.Lock()
	s.noteAllGoneLocked()
	s.mu.Unlock()
	grace := time.NewTimer(closeGrace)
	select {
	case <-s.allGone:
	case <-grace.C:
	}
	grace.Stop()
	for _, c := range conns {
		c.closeReset()
	}
	s.wg.Wait()
	return nil
}

// closeGrace bounds how long Close waits for responses to be written.
const closeGrace = 500 * time.Millisecond

// supported lists the API ranges for ApiVersions, sorted by key.
func (s *Server) supported() []APIRange {
	out := make([]APIRange, 0, len(s.apis))
	for _, a := range s.apis {
		out = append(out, APIRange{Key: a.key, Min: a.min, Max: a.max})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// broadcast wakes every waiter at once: wait returns a channel that the
// next fire closes.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) fire() {
	b.mu.Lock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
	b.mu.Unlock()
}
