package kafka

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// connCtx is what a handler knows of its connection.
type connCtx struct {
	ctx      context.Context
	clientID string
	remote   string
	// principal is who the connection acts for (principal.go); written
	// only by authentication on the reader goroutine, before the requests
	// it precedes are started.
	principal Principal
	// listener is the name of the listener the connection came in on.
	listener string
	// sasl is the login state on a SASL listener, nil elsewhere.
	sasl *saslState
	// closeAfter asks the reader to stop once the current request's
	// response is queued: a failed login ends the connection.
	closeAfter bool
	// mutedUntil is when a throttled connection may be read again (unix
	// ns; see muteConn).
	mutedUntil atomic.Int64
	// replyWaited is how long the reply being run waited on something
	// else (a Fetch's long poll), which request quotas do not count. Only
	// the writer goroutine touches it.
	replyWaited time.Duration
	// respMem is the request budget held by the response being built
	// (a Fetch's records), given back once it is written. Only the
	// writer goroutine, which runs replies one at a time, touches it.
	respMem int64
	// fwdAt is when (unix ns) a non-idempotent Produce of a partition not
	// led here was last forwarded or told NOT_LEADER (forwarded.go).
	fwdAt atomic.Int64
	// toldIdem holds the partitions whose idempotent batches this
	// draining node answered NOT_LEADER on this connection: every later
	// batch of theirs is answered so too, never forwarded (forwarded.go).
	// Only the writer goroutine, which runs the replies, touches it.
	toldIdem map[partKey]bool
	// toldAt is when (unix ns) toldIdem got its first partition.
	toldAt atomic.Int64
	// librdkafka is set when the client named itself a librdkafka one in
	// ApiVersions (KIP-511 client software name, from the reader
	// goroutine); a draining node tells only such clients NOT_LEADER for
	// idempotent batches (tellMovedIdempotent).
	librdkafka atomic.Bool
}

// conn is one client connection: a reader goroutine decodes requests and
// starts them in order; a writer goroutine writes responses in that same
// order, waiting on each in turn.
type conn struct {
	s   *Server
	nc  net.Conn // the TLS connection on a TLS listener
	raw net.Conn // the TCP connection under it
	tls *tls.Conn
	co  *coalescer // under tls: gathers its records into fewer, larger writes
	ip  netip.Addr
	cc  connCtx
	out chan pendingResp // made with the writer, at the first response
	// writerDone is closed when the writer goroutine ends.
	writerDone chan struct{}
	once       sync.Once
	done       chan struct{}
	// lastData is when the latest Produce or Fetch began (unix ns):
	// shutdown uses it to tell which clients have heard of the new leaders.
	lastData atomic.Int64
	// movedAt is the start (unix ns) of the latest Produce or Fetch answered,
	// while draining, with NOT_LEADER for every partition: that client knows
	// that nothing it uses is led here any more.
	movedAt atomic.Int64
	// served is what partitions its Produce and Fetch were served for
	// here lately (informed.go).
	served servedParts
	// metaAt is when (unix ns) its latest Metadata request began: a
	// client told NOT_LEADER learns the new leaders from one.
	metaAt atomic.Int64
	// key names the client (clients.go), set at its first request; 0
	// before that.
	key atomic.Uint64
}

type pendingResp struct {
	gen      int
	key      int16
	version  int16
	corr     int32
	flexible bool
	start    time.Time
	// handled is the time the reader spent on the request (decode and
	// handler), for request quotas.
	handled time.Duration
	user    string // the quota user, as the reader saw it after the handler
	r       reply
	mem     hold // request budget held until answered
	// rawToken, when set, is written as a bare size-prefixed SASL token
	// instead of a response.
	rawToken *[]byte
}

func newConn(s *Server, nc net.Conn, ip netip.Addr, l *boundListener) *conn {
	c := &conn{s: s, nc: nc, raw: nc, ip: ip, done: make(chan struct{})}
	c.cc = connCtx{ctx: s.ctx, remote: nc.RemoteAddr().String(), principal: Anonymous, listener: l.Name}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if l.Protocol.TLS() {
		c.co = &coalescer{Conn: nc}
		c.tls = tls.Server(c.co, l.TLS)
		c.nc = c.tls
	}
	if l.Protocol.SASL() {
		c.cc.sasl = &saslState{creds: s.cfg.Credentials, mechs: s.cfg.SASLMechanisms, lifetime: s.cfg.MaxReauth}
	}
	return c
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		if c.co != nil {
			c.co.closing.Store(true)
		}
		c.nc.Close()
		c.s.noteNews()
	})
}

// closeReset closes an idle connection with a TCP reset instead of a FIN.
// A client that later writes to a connection closed with a FIN only finds
// out when the read fails, and franz-go then backs off (250 ms by default)
// before retrying; after a reset the write itself fails with nothing sent,
// and franz-go retries at once on a new connection. That matters when a
// node comes back from a restart and takes leadership again: clients still
// hold connections to its previous process.
func (c *conn) closeReset() {
	if tc, ok := c.raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.close()
}

func (c *conn) serve() {
	defer c.s.wg.Done()
	err := c.handshake()
	if err == nil {
		err = c.readLoop()
	}
	if c.out != nil {
		close(c.out)
		<-c.writerDone
	}
	var br *badRequest
	if errors.As(err, &br) {
		// A frame no client sends: the close waits, the connection
		// unread and still counted against its address (tarpit.go).
		c.s.delayClose()
	}
	if c.s.ctx.Err() != nil {
		c.closeReset() // the server is stopping: see closeReset
	} else {
		c.close()
	}
	c.s.dropConn(c)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.s.logger.Debug("kafka connection closed", "remote", c.cc.remote, "client_id", c.cc.clientID, "err", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// hold is a request's share of the request budget: n bytes for its
// frame, taken from the bulk part when big (see budget), and decode bytes
// for its decoded structs.
type hold struct {
	n         int64
	big       bool
	decode    int64
	decodeBig bool
}

func (s *Server) releaseMemory(h hold) {
	s.reqMemory.release(h.n, h.big)
	s.reqMemory.release(h.decode, h.decodeBig)
}

// reserveDecode takes the memory decoding a request will allocate. A
// request that could never fit in the budget is refused outright.
func (c *conn) reserveDecode(h *hold, n int64) error {
	if n > c.s.reqMemory.bulk/2 {
		c.s.metrics.limitHits.WithLabelValues(hitRequestMemoryWait).Inc()
		return &badRequest{"size", fmt.Sprintf("request would decode into %d bytes", n)}
	}
	h.decodeBig = n > growChunk
	deadline := time.Now().Add(c.s.cfg.Limits.FrameTimeout)
	for h.decode < n {
		step := min(n-h.decode, growChunk)
		if err := c.takeMemory(step, h.decodeBig, deadline); err != nil {
			return err
		}
		h.decode += step
	}
	return nil
}

// decoded is a request read off the wire.
type decoded struct {
	key, version int16
	corr         int32
	clientID     *string
	req          kmsg.Request // nil when the version is not served
	api          *api
}

// badRequest explains why a frame cannot be served; the connection closes.
type badRequest struct {
	reason string // metric label
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

// decodeRequest parses a request frame's header and body. It never panics
// on any input (FuzzRequest checks that): unknown keys, versions outside
// the served range (except ApiVersions, which gets a v0 answer) and
// malformed bytes come back as a *badRequest.
//
// reserve, when not nil, is called with how many bytes decoding the body
// will allocate (decodeCost) before it does; an error from it fails the
// request.
func decodeRequest(apis map[int16]*api, body []byte, reserve func(int64) error) (decoded, error) {
	var d decoded
	if len(body) < 8 {
		return d, &badRequest{"size", "request shorter than its header"}
	}
	d.key = int16(binary.BigEndian.Uint16(body))
	d.version = int16(binary.BigEndian.Uint16(body[2:]))
	d.corr = int32(binary.BigEndian.Uint32(body[4:]))
	d.api = apis[d.key]
	if d.api == nil {
		return d, &badRequest{"unknown_key", fmt.Sprintf("unknown api key %d", d.key)}
	}
	if d.version < d.api.min || d.version > d.api.max {
		if d.key == 18 {
			return d, nil // answered in v0 form; the body is not parsed
		}
		return d, &badRequest{"unsupported_version", fmt.Sprintf("%s v%d is not served (v%d-v%d)",
			kmsg.NameForKey(d.key), d.version, d.api.min, d.api.max)}
	}
	req := kmsg.RequestForKey(d.key)
	if req == nil {
		return d, &badRequest{"unknown_key", fmt.Sprintf("unknown api key %d", d.key)}
	}
	req.SetVersion(d.version)
	rd := kbin.Reader{Src: body[8:]}
	d.clientID = rd.NullableString()
	if req.IsFlexible() {
		skipTags(&rd)
	}
	if !rd.Ok() {
		return d, &badRequest{"malformed", "malformed request header"}
	}
	cost, err := decodeCost(d.key, req.IsFlexible(), rd.Src)
	if err != nil {
		return d, &badRequest{"malformed", fmt.Sprintf("malformed %s v%d: %v", kmsg.NameForKey(d.key), d.version, err)}
	}
	if reserve != nil {
		if err := reserve(cost); err != nil {
			return d, err
		}
	}
	if err := req.ReadFrom(rd.Src); err != nil {
		return d, &badRequest{"malformed", fmt.Sprintf("malformed %s v%d: %v", kmsg.NameForKey(d.key), d.version, err)}
	}
	d.req = req
	return d, nil
}

// handle decodes one request and queues its reply; mem is the request
// budget the body holds, given back once the request is answered.
func (c *conn) handle(body []byte, mem hold) error {
	// A throttled connection is read again only once its time is up.
	waitMuted(c.s, &c.cc)
	began := time.Now()
	d, err := decodeRequest(c.s.apis, body, func(n int64) error { return c.reserveDecode(&mem, n) })
	if err != nil {
		c.s.releaseMemory(mem)
		var br *badRequest
		if !errors.As(err, &br) {
			return err // the decode memory did not come in time
		}
		c.s.logger.Warn("closing connection: "+br.msg, "remote", c.cc.remote, "client_id", c.cc.clientID)
		c.s.metrics.badRequests.WithLabelValues(br.reason).Inc()
		return err
	}
	if d.req == nil {
		// ApiVersions above what we serve: a v0-shaped answer with our
		// ranges, so the client retries at a version we speak.
		gen := c.s.requestStarted()
		return c.enqueue(pendingResp{gen: gen, key: d.key, version: 0, corr: d.corr, start: time.Now(), mem: mem, user: clientUser(&c.cc), r: func() kmsg.Response {
			resp := kmsg.NewPtrApiVersionsResponse()
			resp.ErrorCode = 35 // UNSUPPORTED_VERSION
			for _, r := range c.s.supported() {
				resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: r.Key, MinVersion: r.Min, MaxVersion: r.Max})
			}
			return resp
		}})
	}
	return c.serveRequest(d, mem, began, nil)
}

// serveRequest runs a decoded request's handler and queues its reply; wrap,
// when set, is given the reply to amend (screenProduce).
func (c *conn) serveRequest(d decoded, mem hold, began time.Time, wrap func(reply) reply) error {
	if d.clientID != nil && c.cc.clientID == "" {
		c.cc.clientID = *d.clientID
	}
	c.noteClient()
	if c.cc.sasl.expired(d.key, time.Now()) {
		c.s.releaseMemory(mem)
		c.s.logger.Info("closing connection: SASL session expired without re-authentication", "remote", c.cc.remote,
			"client_id", c.cc.clientID, "principal", c.cc.principal.String(), "api", kmsg.NameForKey(d.key))
		c.s.metrics.badRequests.WithLabelValues("session_expired").Inc()
		return errSessionExpired
	}
	if err := c.cc.sasl.admits(d.key); err != nil {
		c.s.releaseMemory(mem)
		c.s.logger.Info("closing connection: "+err.Error(), "remote", c.cc.remote, "client_id", c.cc.clientID,
			"listener", c.cc.listener)
		c.s.metrics.badRequests.WithLabelValues("unauthenticated").Inc()
		return err
	}
	c.s.metrics.requests.WithLabelValues(kmsg.NameForKey(d.key)).Inc()
	gen := c.s.requestStarted()
	start := time.Now()
	if d.key == 0 || d.key == 1 {
		c.lastData.Store(start.UnixNano())
		c.s.noteNews()
	}
	if d.key == 3 {
		c.metaAt.Store(start.UnixNano())
		if c.s.draining.Load() {
			c.s.noteNews()
		}
	}
	r := safeHandle(c, d.api, d.req)
	if r == nil {
		c.s.releaseMemory(mem)
		c.s.requestDone(gen)
		return nil
	}
	if wrap != nil {
		r = wrap(r)
	}
	flexible := d.req.IsFlexible() && d.key != 18
	if err := c.enqueue(pendingResp{gen: gen, key: d.key, version: d.version, corr: d.corr, flexible: flexible, start: start,
		handled: time.Since(began), user: clientUser(&c.cc), r: r, mem: mem}); err != nil {
		return err
	}
	if c.cc.closeAfter {
		return errLoginFailed // serve lets the writer send the answer, then closes
	}
	return nil
}

// safeHandle runs a handler, turning a panic into a closed connection
// rather than a dead broker.
func safeHandle(c *conn, a *api, req kmsg.Request) (r reply) {
	defer func() {
		if p := recover(); p != nil {
			c.s.logger.Error("kafka handler panic", "api", kmsg.NameForKey(a.key), "version", req.GetVersion(), "panic", fmt.Sprint(p))
			r = func() kmsg.Response { return nil }
			c.close()
		}
	}()
	return a.handle(c.s, &c.cc, req)
}

func (c *conn) enqueue(p pendingResp) error {
	if c.out == nil {
		c.startWriter()
	}
	select {
	case c.out <- p:
		return nil
	case <-c.done:
		c.s.releaseMemory(p.mem)
		c.s.requestDone(p.gen)
		return net.ErrClosed
	}
}

// startWriter starts the writer goroutine at the first response, so that
// a connection that never sends a request costs one goroutine, not two.
// Only the reader goroutine calls it; serve stops the writer by closing
// out and waits for it.
func (c *conn) startWriter() {
	c.out = make(chan pendingResp, c.s.cfg.MaxInFlight)
	c.writerDone = make(chan struct{})
	go func() {
		defer close(c.writerDone)
		c.writeLoop()
	}()
}

func skipTags(rd *kbin.Reader) {
	n := rd.Uvarint()
	// Stop at the first short read: a forged count would otherwise spin
	// up to 2^32 times over an exhausted reader.
	for i := uint32(0); i < n && rd.Ok(); i++ {
		rd.Uvarint()
		size := rd.Uvarint()
		rd.Span(int(size))
	}
}

func (c *conn) writeLoop() {
	var w *bufio.Writer // made at the first response: idle connections cost less
	var buf []byte
	broken := false
	held := false // c.co gathers writes until the queue is empty
	defer func() {
		if held {
			c.co.release()
		}
	}()
	// flush sends what w holds and what c.co gathered during the hold.
	flush := func() {
		err := w.Flush()
		if held {
			held = false
			if rerr := c.co.release(); err == nil {
				err = rerr
			}
		}
		if err != nil {
			broken = true
			c.close()
		}
	}
	for p := range c.out {
		var resp kmsg.Response
		if !broken && w != nil && (w.Buffered() > 0 || held) {
			// Answers already made go out before the next one is waited
			// for: it may take long (a produce held through a leadership
			// hand-over), and the client is owed these meanwhile. A node
			// handing off its leaderships also counts a client as told
			// once its NOT_LEADER answers are made (informed.go): they
			// must not sit here, nor in the TLS coalescer's hold, while
			// the connection is closed.
			flush()
		}
		if !broken && p.rawToken == nil {
			began := time.Now()
			c.cc.replyWaited = 0
			resp = c.await(p)
			if resp != nil && c.cc.clientID != ForwardClientID {
				took := p.handled
				if !repliesWait[p.key] {
					took += max(time.Since(began)-c.cc.replyWaited, 0)
				}
				resp = requestQuota(c.s, &c.cc, p.user, resp, took)
			}
		}
		if (resp == nil && p.rawToken == nil) || broken {
			c.finish(p)
			continue
		}
		if p.rawToken != nil {
			// A SASL token framed by its size alone (SaslHandshake v0).
			buf = binary.BigEndian.AppendUint32(buf[:0], uint32(len(*p.rawToken)))
			buf = append(buf, *p.rawToken...)
		} else {
			buf = c.appendResponse(buf[:0], p, resp)
		}
		c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if w == nil {
			w = bufio.NewWriterSize(c.nc, 16<<10)
		}
		if c.co != nil && !held {
			c.co.hold()
			held = true
		}
		if _, err := w.Write(buf); err != nil {
			broken = true
			c.close()
		}
		c.finish(p)
		if len(c.out) == 0 && !broken {
			flush()
		}
		if cap(buf) > 8<<20 {
			buf = nil
		}
	}
}

// appendResponse frames a response: size, correlation id, header tags.
func (c *conn) appendResponse(buf []byte, p pendingResp, resp kmsg.Response) []byte {
	buf = append(buf, 0, 0, 0, 0)
	buf = binary.BigEndian.AppendUint32(buf, uint32(p.corr))
	if p.flexible {
		buf = append(buf, 0) // no tagged fields in the response header
	}
	resp.SetVersion(p.version)
	if p.key == 0 || p.key == 1 {
		c.served.note(p.start.UnixNano(), resp)
		if c.s.draining.Load() {
			if allNotLeader(resp) {
				c.movedAt.Store(p.start.UnixNano())
			}
			c.s.noteNews()
		}
	}
	buf = resp.AppendTo(buf)
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	return buf
}

// allNotLeader reports whether a Produce or Fetch response answers every
// partition NOT_LEADER_OR_FOLLOWER.
func allNotLeader(resp kmsg.Response) bool {
	n := 0
	switch r := resp.(type) {
	case *kmsg.ProduceResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != kerr.NotLeaderForPartition.Code {
					return false
				}
				n++
			}
		}
	case *kmsg.FetchResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != kerr.NotLeaderForPartition.Code {
					return false
				}
				n++
			}
		}
	}
	return n > 0
}

func (c *conn) await(p pendingResp) (resp kmsg.Response) {
	defer func() {
		if r := recover(); r != nil {
			c.s.logger.Error("kafka reply panic", "api", kmsg.NameForKey(p.key), "panic", fmt.Sprint(r))
			resp = nil
			c.close()
		}
	}()
	return p.r()
}

func (c *conn) finish(p pendingResp) {
	c.s.metrics.observe(p.key, time.Since(p.start))
	c.s.releaseMemory(p.mem)
	c.s.reqMemory.release(c.cc.respMem, true)
	c.cc.respMem = 0
	c.s.requestDone(p.gen)
}
