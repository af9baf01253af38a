package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Record states.
const (
	pending uint8 = iota
	acked
	failed
)

// sendRec is what we know about one record we produced; index = seq.
type sendRec struct {
	sent      int64 // ns since t0, when handed to the client
	done      int64 // ns since t0, when acked or failed
	offset    int64
	partition int32
	state     uint8
}

type producer struct {
	cl    *kgo.Client
	topic string
	parts int32
	runID uint64
	size  int
	t0    time.Time
	slots chan struct{} // bounds records in flight
	wg    sync.WaitGroup

	// sentN is published before a record is handed to the client, so a
	// consumed seq at or above it was never sent by us.
	sentN atomic.Uint64

	mu        sync.Mutex
	recs      []sendRec
	final     tally // records that failed for good
	retried   tally // broker or connection errors the client retried
	marks     []errMark
	lastAck   []int64 // per partition, ns since t0
	leaders   [][]leaderChange
	inflight  []int   // per partition
	recentLat []int64 // latencies since the last progress line
	ackedN    int
	failedN   int
	closing   bool // stop counting the client's own shutdown noise
}

func newProducer(seeds []string, topic string, parts int32, run uint64, size, maxInflight int, t0 time.Time, clog *clientLog, extra ...kgo.Opt) (*producer, error) {
	p := &producer{
		topic: topic, parts: parts, runID: run, size: size, t0: t0,
		slots:    make(chan struct{}, maxInflight),
		final:    tally{},
		retried:  tally{},
		lastAck:  make([]int64, parts),
		leaders:  make([][]leaderChange, parts),
		inflight: make([]int, parts),
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(seeds...),
		// Both are franz-go defaults; spelled out because the verdict
		// depends on them.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// We pick partitions round-robin by seq so every partition gets a
		// steady stream and per-partition stalls are measurable.
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.WithLogger(retryLogger{p, clog}),
		kgo.WithHooks(p),
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, err
	}
	p.cl = cl
	return p, nil
}

func (p *producer) since() int64 { return time.Since(p.t0).Nanoseconds() }

// OnProduceBatchWritten (a kgo hook) notes which broker acked each
// partition's batches, so a stall can say where it happened. The client
// calls it before the batch's records are finished.
func (p *producer) OnProduceBatchWritten(meta kgo.BrokerMetadata, topic string, part int32, _ kgo.ProduceBatchMetrics) {
	if topic != p.topic || part < 0 || part >= p.parts {
		return
	}
	now := p.since()
	p.mu.Lock()
	defer p.mu.Unlock()
	ls := p.leaders[part]
	if len(ls) == 0 || ls[len(ls)-1].broker != meta.NodeID {
		p.leaders[part] = append(ls, leaderChange{at: now, broker: meta.NodeID})
	}
}

// run produces at rate records/s (0: as fast as the in-flight bound allows)
// until dur has passed or stop closes. It never cancels a record it handed
// to the client.
func (p *producer) run(stop <-chan struct{}, rate float64, dur time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	over := func() bool { return ctx.Err() != nil || time.Since(start) >= dur }
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	total := ^uint64(0)
	if rate > 0 {
		total = uint64(math.Ceil(rate * dur.Seconds()))
	}
	var seq uint64
	for seq < total {
		due := total
		if rate > 0 {
			// Scheduled, not closed-loop: after a stall the backlog is sent
			// as soon as slots free up, so the offered load stays honest.
			due = min(uint64(time.Since(start).Seconds()*rate)+1, total)
		}
		for seq < due {
			select {
			case p.slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			p.send(seq)
			seq++
			if seq%64 == 0 && over() {
				return
			}
		}
		if over() {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func (p *producer) send(seq uint64) {
	now := time.Now()
	part := int32(seq % uint64(p.parts))
	v := encode(payload{run: p.runID, seq: seq, sentUnix: now.UnixNano()}, p.size)
	p.mu.Lock()
	p.recs = append(p.recs, sendRec{sent: now.Sub(p.t0).Nanoseconds(), offset: -1, partition: part})
	p.inflight[part]++
	p.mu.Unlock()
	p.sentN.Add(1)
	p.wg.Add(1)
	// context.Background: records are never cancelled, only awaited.
	p.cl.Produce(context.Background(), &kgo.Record{Topic: p.topic, Partition: part, Value: v},
		func(r *kgo.Record, err error) { p.done(seq, r, err) })
}

func (p *producer) done(seq uint64, r *kgo.Record, err error) {
	now := p.since()
	p.mu.Lock()
	rec := &p.recs[seq]
	rec.done = now
	p.inflight[rec.partition]--
	if err == nil {
		rec.state = acked
		rec.offset = r.Offset
		rec.partition = r.Partition
		p.lastAck[r.Partition] = now
		p.recentLat = append(p.recentLat, now-rec.sent)
		p.ackedN++
	} else {
		rec.state = failed
		p.final.add(classify(err), 1)
		p.marks = append(p.marks, errMark{at: now, kind: errFinal})
		p.failedN++
	}
	p.mu.Unlock()
	<-p.slots
	p.wg.Done()
}

// waitAcks waits until every record handed to the client is acked or
// failed, at most timeout or until abort closes; it reports whether all
// were.
func (p *producer) waitAcks(timeout time.Duration, abort <-chan struct{}) bool {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-abort:
	}
	return false
}

// progress returns counters for the progress line and resets the recent
// latency window.
func (p *producer) progress() (sent uint64, ackedN, errs, retried int, p99, stall time.Duration) {
	now := p.since()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, n := range p.inflight {
		if n > 0 {
			stall = max(stall, time.Duration(now-p.lastAck[i]))
		}
	}
	slices.Sort(p.recentLat)
	p99 = time.Duration(percentile(p.recentLat, 0.99))
	p.recentLat = p.recentLat[:0]
	return p.sentN.Load(), p.ackedN, p.failedN, p.retried.total(), p99, stall
}

// close fails whatever is still pending; call it after the snapshot.
func (p *producer) close(within time.Duration) {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	closeWithin(p.cl, within)
}

// retryLogger turns franz-go's log into counts of errors the client retried
// on its own; without it a leader change that costs no record is invisible.
// Per-partition produce errors are only logged at debug level, inside the
// "produced" summary, so that one message is parsed; failed produce requests
// and anything at info level or above are counted when they carry an error.
type retryLogger struct {
	p   *producer
	out *clientLog // optional copy of every line, for diagnosing the broker
}

// clientLog writes franz-go's log lines with timestamps.
type clientLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *clientLog) log(level kgo.LogLevel, msg string, kv ...any) {
	if c == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", time.Now().UTC().Format("15:04:05.000000"), level, msg)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	b.WriteByte('\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	io.WriteString(c.w, b.String())
}

// debugLogger hands all of a client's debug log to a clientLog.
type debugLogger struct{ out *clientLog }

func (debugLogger) Level() kgo.LogLevel { return kgo.LogLevelDebug }

func (l debugLogger) Log(level kgo.LogLevel, msg string, kv ...any) { l.out.log(level, msg, kv...) }

func (l retryLogger) Level() kgo.LogLevel { return kgo.LogLevelDebug }

// producedRe matches one partition's retried outcome in franz-go's debug
// "produced" summary, e.g. "3{retrying@-1,12(NOT_LEADER_FOR_PARTITION: ...)}"
// or "3{move:2:7@-1,12}" (a KIP-951 leader hint, sent with
// NOT_LEADER_FOR_PARTITION).
var producedRe = regexp.MustCompile(`\d+\{(?:(?:retrying|resetting)@-?\d+,\d+\(([A-Z0-9_]+)|(move):)`)

// kerrByName maps Kafka error names back to their codes.
var kerrByName = func() map[string]*kerr.Error {
	m := map[string]*kerr.Error{}
	for c := int16(-1); c < 200; c++ {
		if e, ok := kerr.ErrorForCode(c).(*kerr.Error); ok {
			m[e.Message] = e
		}
	}
	return m
}()

// finalMsg is logged for a batch that failed for good; its records' promises
// already count it.
const finalMsg = "batch in a produce request failed"

func (l retryLogger) Log(level kgo.LogLevel, msg string, kv ...any) {
	l.out.log(level, msg, kv...)
	var found []ErrorCount
	if msg == "produced" {
		for i := 0; i+1 < len(kv); i += 2 {
			s, ok := kv[i+1].(string)
			if kv[i] != "to" || !ok {
				continue
			}
			for _, m := range producedRe.FindAllStringSubmatch(s, -1) {
				name := m[1]
				if m[2] != "" {
					name = kerr.NotLeaderForPartition.Message
				}
				e := ErrorCount{Name: name, Retriable: true}
				if ke, ok := kerrByName[name]; ok {
					e.Code, e.Retriable = ke.Code, ke.Retriable
				}
				found = append(found, e)
			}
		}
	} else if msg != finalMsg && (level != kgo.LogLevelNone && level <= kgo.LogLevelInfo ||
		// A produce connection dying (EOF when a broker is killed) is
		// only logged at debug level.
		strings.HasPrefix(msg, "produce request failed")) {
		for i := 0; i+1 < len(kv); i += 2 {
			if err, ok := kv[i+1].(error); ok && kv[i] == "err" {
				e := classify(err)
				if e.Code == 0 {
					e.Retriable = true // the client carries on with it
				}
				found = append(found, e)
			}
		}
	}
	if len(found) == 0 {
		return
	}
	now := l.p.since()
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	if l.p.closing {
		return
	}
	for _, e := range found {
		l.p.retried.add(e, 1)
		l.p.marks = append(l.p.marks, errMark{at: now, kind: errRetried})
	}
}
