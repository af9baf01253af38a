package kafka

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A big Produce frame is mostly record bytes, and the fields that say where
// they go come first. produceShape reads those fields from the first bytes
// of the frame, before the rest has arrived, so that a frame whose layout
// is already wrong (its fields run past its end, or it ends before its
// declared size: bytes no decoder would look at) is refused without being
// buffered, and one every partition of which would be refused anyway
// (unknown topic, denied, larger than max.message.bytes) is answered
// without keeping its records (screenProduce).

// shapePart is one partition of a Produce request as its header gives it.
type shapePart struct {
	topic   string
	part    int32
	records int // the records' length on the wire (-1 when null)
	at      int // where the records start in the bytes walked
}

// produceShape is what the first bytes of a Produce frame tell.
type produceShape struct {
	// malformed: the layout cannot be that of a Produce request of this
	// size.
	malformed bool
	// known: every partition is in parts (only trailing tagged fields
	// may lie past the bytes seen).
	known bool
	txnID bool // a transactional id is set
	// clientID is the header's client id, when it arrived.
	clientID *string
	acks     int16
	timeout  int32
	parts    []shapePart
}

// shapeCursor walks a region of end bytes of which only src has arrived.
// bad is set when a field would run past end; short when it lies past
// src (not known yet).
type shapeCursor struct {
	src        []byte
	pos, end   int
	bad, short bool
}

func (c *shapeCursor) stopped() bool { return c.bad || c.short }

// take returns the next n bytes, or nil when they are not all there.
func (c *shapeCursor) take(n int) []byte {
	if c.stopped() {
		return nil
	}
	if n < 0 || c.pos+n > c.end {
		c.bad = true
		return nil
	}
	if c.pos+n > len(c.src) {
		c.short = true
		return nil
	}
	b := c.src[c.pos : c.pos+n]
	c.pos += n
	return b
}

// skip passes n bytes that need not have arrived.
func (c *shapeCursor) skip(n int) {
	if c.stopped() {
		return
	}
	if n < 0 || c.pos+n > c.end {
		c.bad = true
		return
	}
	c.pos += n
}

func (c *shapeCursor) int16() int16 {
	if b := c.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (c *shapeCursor) int32() int32 {
	if b := c.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (c *shapeCursor) uvarint() uint64 {
	if c.stopped() {
		return 0
	}
	if c.pos >= min(len(c.src), c.end) {
		if c.pos < c.end {
			c.short = true
		} else {
			c.bad = true
		}
		return 0
	}
	avail := c.src[c.pos:min(len(c.src), c.end)]
	v, n := binary.Uvarint(avail)
	switch {
	case n > 0 && n <= 5:
		c.pos += n
		return v
	case n == 0 && len(avail) < 5 && c.pos+len(avail) < c.end:
		c.short = true // the varint goes on past what arrived
	default:
		c.bad = true // overlong, or cut by the frame's end
	}
	return 0
}

// length reads a length prefix: compact (uvarint, 0 for null) when
// flexible, else int16 or int32. It returns -1 for null; a negative length
// other than null is malformed.
func (c *shapeCursor) length(flexible, wide bool) int {
	var n int
	switch {
	case flexible:
		u := c.uvarint()
		if u > 1<<31 {
			c.bad = true
		}
		n = int(u) - 1
	case wide:
		n = int(c.int32())
	default:
		n = int(c.int16())
	}
	if n < -1 {
		c.bad = true
	}
	return n
}

func (c *shapeCursor) tags() {
	n := c.uvarint()
	for i := uint64(0); i < n && !c.stopped(); i++ {
		c.uvarint()
		c.skip(int(c.uvarint()))
	}
}

// readProduceShape walks the first bytes of a Produce frame body: src is
// what has arrived of it, after the api key, version and correlation id;
// size is the whole of that part as the frame declares it.
func readProduceShape(flexible bool, src []byte, size int) produceShape {
	c := &shapeCursor{src: src, end: size}
	var sh produceShape
	if n := c.length(false, false); n >= 0 { // client id: never compact
		if b := c.take(n); b != nil {
			id := string(b)
			sh.clientID = &id
		}
	}
	if flexible {
		c.tags()
	}
	txn := c.length(flexible, false)
	sh.txnID = txn >= 0
	c.skip(max(txn, 0))
	sh.acks = c.int16()
	sh.timeout = c.int32()
	topics := c.length(flexible, true)
	for i := 0; i < topics && !c.stopped(); i++ {
		n := c.length(flexible, false)
		name := c.take(max(n, 0))
		if n < 0 && !c.stopped() {
			c.bad = true // a topic name is never null
		}
		parts := c.length(flexible, true)
		for j := 0; j < parts && !c.stopped(); j++ {
			p := shapePart{topic: string(name), part: c.int32()}
			p.records = c.length(flexible, true)
			p.at = c.pos
			c.skip(max(p.records, 0))
			if c.bad {
				break
			}
			if !c.short {
				sh.parts = append(sh.parts, p)
			}
			last := i == topics-1 && j == parts-1
			if last && !c.short {
				sh.known = true
			}
			if flexible {
				c.tags()
			}
		}
		if flexible {
			c.tags()
		}
	}
	if flexible {
		c.tags()
	}
	if !c.stopped() {
		sh.known = true
	}
	// All of it walked: it must end where the frame does.
	sh.malformed = c.bad || !c.short && c.pos != c.end
	return sh
}

// ProduceScreener is a Backend that can tell, from a partition and the
// size of its records alone, that a Produce of them would be refused for
// sure: a big frame all of whose partitions would be is answered without
// its records being read into memory.
type ProduceScreener interface {
	// ScreenProduce is the error records of size bytes for the partition
	// would get whatever they hold, with its message; 0 when they might
	// be accepted.
	ScreenProduce(topic string, partition int32, size int) (code int16, msg string)
}

// discardPool holds the scratch buffers the rest of a refused frame is
// read into.
var discardPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// screenProduce looks at the first chunk of a big Produce frame (body,
// from the api key on; the frame is size bytes). It refuses a frame whose
// layout is wrong. When every partition would be refused, or every one
// that might not has its records within body, nothing past body is needed:
// it returns the answer to run once the rest of the frame has been read
// into scratch and dropped (see readFrame). Otherwise it returns nil, and
// the frame is read.
//
// The partitions that may be written are served as their own Produce, and
// the refused ones added to its answer: Kafka answers each partition on
// its own, and a refused partition's records are never looked at, so the
// client sees what it would had the frame been read through.
func (c *conn) screenProduce(body []byte, size int) (answer func() error, err error) {
	version := int16(binary.BigEndian.Uint16(body[2:]))
	corr := int32(binary.BigEndian.Uint32(body[4:]))
	flexible := version >= 9
	src := body[8:]
	sh := readProduceShape(flexible, src, size-8)
	if sh.malformed {
		return nil, c.refuse(&badRequest{"malformed", "malformed Produce frame: its fields do not fill its size"}, "size", size)
	}
	if !sh.known || len(sh.parts) == 0 || c.cc.sasl.expired(0, time.Now()) || c.cc.sasl.admits(0) != nil {
		return nil, nil
	}
	scr, _ := c.s.backend.(ProduceScreener)
	refused := kmsg.NewPtrProduceResponse()
	refused.Version = version
	var keep []shapePart
	for _, p := range sh.parts {
		code, msg := topicErr(c.s, &c.cc, kmsg.ACLOperationWrite, p.topic), ""
		switch {
		case code != 0:
		case sh.txnID:
			code, msg = kerr.TransactionalIDAuthorizationFailed.Code, "transactions are not supported"
		case sh.acks != 0 && sh.acks != 1 && sh.acks != -1:
			code = kerr.InvalidRequiredAcks.Code
		case scr != nil:
			code, msg = scr.ScreenProduce(p.topic, p.part, p.records)
		}
		if code == 0 {
			if p.records > 0 && p.at+p.records > len(src) {
				return nil, nil // this one may be written and its records are still to come: read the frame
			}
			keep = append(keep, p)
			continue
		}
		rp := kmsg.ProduceResponseTopicPartition{Partition: p.part, ErrorCode: code, BaseOffset: -1, LogAppendTime: -1, LogStartOffset: -1}
		if msg != "" {
			rp.ErrorMessage = &msg
		}
		rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = -1, -1
		addPartition(refused, p.topic, rp)
	}
	if len(keep) > 0 {
		// The kept records are copied out of the first chunk, which
		// readFrame gives back at once.
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = version, sh.acks, sh.timeout
		n := 0
		for i, p := range keep {
			if i == 0 || keep[i-1].topic != p.topic {
				req.Topics = append(req.Topics, kmsg.ProduceRequestTopic{Topic: p.topic})
			}
			rp := kmsg.ProduceRequestTopicPartition{Partition: p.part}
			if p.records >= 0 {
				rp.Records = append([]byte{}, src[p.at:p.at+p.records]...)
				n += p.records
			}
			t := &req.Topics[len(req.Topics)-1]
			t.Partitions = append(t.Partitions, rp)
		}
		d := decoded{key: 0, version: version, corr: corr, clientID: sh.clientID, req: req, api: c.s.apis[0]}
		return func() error { return c.answerSplit(d, n, refused) }, nil
	}
	return func() error { return c.answerRefused(refused, sh.acks, version, corr, flexible) }, nil
}

// addPartition adds a partition's answer to resp, under its topic.
func addPartition(resp *kmsg.ProduceResponse, topic string, rp kmsg.ProduceResponseTopicPartition) {
	for i := range resp.Topics {
		if resp.Topics[i].Topic == topic {
			resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, rp)
			return
		}
	}
	resp.Topics = append(resp.Topics, kmsg.ProduceResponseTopic{Topic: topic, Partitions: []kmsg.ProduceResponseTopicPartition{rp}})
}

// answerRefused queues the answer to a Produce every partition of which
// was refused from its header.
func (c *conn) answerRefused(resp *kmsg.ProduceResponse, acks, version int16, corr int32, flexible bool) error {
	c.s.metrics.requests.WithLabelValues(kmsg.NameForKey(0)).Inc()
	if acks == 0 {
		return nil
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			c.s.metrics.countErr(0, p.ErrorCode)
		}
	}
	start := time.Now()
	c.lastData.Store(start.UnixNano())
	c.s.noteNews()
	gen := c.s.requestStarted()
	return c.enqueue(pendingResp{gen: gen, key: 0, version: version, corr: corr, flexible: flexible, start: start,
		user: clientUser(&c.cc), r: func() kmsg.Response { return resp }})
}

// answerSplit serves the partitions of a Produce that may be written (d,
// holding n record bytes) and adds the ones refused from its header to
// the answer.
func (c *conn) answerSplit(d decoded, n int, refused *kmsg.ProduceResponse) error {
	waitMuted(c.s, &c.cc)
	began := time.Now()
	var mem hold
	if err := c.takeMemory(int64(n), false, began.Add(c.s.cfg.Limits.FrameTimeout)); err != nil {
		return err
	}
	mem.n = int64(n)
	for _, t := range refused.Topics {
		for _, p := range t.Partitions {
			c.s.metrics.countErr(0, p.ErrorCode)
		}
	}
	return c.serveRequest(d, mem, began, func(r reply) reply {
		return func() kmsg.Response {
			resp := r()
			if pr, ok := resp.(*kmsg.ProduceResponse); ok {
				for _, t := range refused.Topics {
					for _, p := range t.Partitions {
						addPartition(pr, t.Topic, p)
					}
				}
			}
			return resp
		}
	})
}
