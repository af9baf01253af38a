package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// seenRec is what the consumer saw of one seq; index = seq.
type seenRec struct {
	count     uint32 // deliveries, redeliveries and duplicates included
	partition int32  // first location
	offset    int64
	first     int64 // ns since t0 of the first delivery
}

// Loc is a record's place in the topic.
type Loc struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

// SeqLoc names one record in report samples.
type SeqLoc struct {
	Seq       uint64 `json:"seq"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

type partTrack struct {
	next   int64 // one past the highest offset delivered, any run's record
	last   int64 // the offset delivered last, -1 for none
	maxSeq int64 // highest seq first seen here, -1 for none
}

// Rewind is the consumer going back on a partition, as after a rebalance
// that resumed from an older commit: every record from To to From is
// delivered again.
type Rewind struct {
	AtSec     float64 `json:"at_s"`
	Partition int32   `json:"partition"`
	From      int64   `json:"from"` // the offset delivered before
	To        int64   `json:"to"`   // the offset delivered next
}

const maxSamples = 20

// tracker classifies every delivered record; it is pure bookkeeping so the
// report math can be tested without a broker. Not safe for concurrent use.
type tracker struct {
	run    uint64
	sentN  func() uint64 // seqs at or above this were never produced
	bucket int64         // ns per timeline bucket

	seen  []seenRec
	extra map[uint64][]Loc // further distinct locations of a duplicated seq
	parts map[int32]*partTrack

	deliveries  int // deliveries of this run's valid records
	unique      int // seqs seen at least once
	foreign     int // other runs' or other tools' records
	redelivered int // the same offset delivered again
	reordered   int
	corrupt     int
	reorderS    []SeqLoc
	corruptS    []Loc
	rewinds     []Rewind
	buckets     []int // deliveries per bucket
}

func newTracker(run uint64, sentN func() uint64, bucket time.Duration) *tracker {
	return &tracker{run: run, sentN: sentN, bucket: bucket.Nanoseconds(),
		extra: map[uint64][]Loc{}, parts: map[int32]*partTrack{}}
}

func (t *tracker) part(p int32) *partTrack {
	pt, ok := t.parts[p]
	if !ok {
		pt = &partTrack{last: -1, maxSeq: -1}
		t.parts[p] = pt
	}
	return pt
}

// observe classifies one delivery made at now (ns since t0).
func (t *tracker) observe(p int32, off int64, value []byte, now int64) {
	pt := t.part(p)
	pt.next = max(pt.next, off+1)
	if off <= pt.last && len(t.rewinds) < 10*maxSamples {
		t.rewinds = append(t.rewinds, Rewind{float64(now) / 1e9, p, pt.last, off})
	}
	pt.last = off
	pl, err := decode(value)
	switch {
	case errors.Is(err, errForeign):
		t.foreign++
		return
	case err != nil || pl.run == t.run && pl.seq >= t.sentN():
		// A seq we never sent with a valid checksum is as corrupt as a bad
		// checksum: the value is not one we wrote.
		t.corrupt++
		if len(t.corruptS) < maxSamples {
			t.corruptS = append(t.corruptS, Loc{p, off})
		}
		return
	case pl.run != t.run:
		t.foreign++
		return
	}
	t.deliveries++
	if now >= 0 {
		b := int(now / t.bucket)
		for len(t.buckets) <= b {
			t.buckets = append(t.buckets, 0)
		}
		t.buckets[b]++
	}
	if pl.seq >= uint64(len(t.seen)) {
		t.seen = append(t.seen, make([]seenRec, int(pl.seq)+1-len(t.seen))...)
	}
	s := &t.seen[pl.seq]
	s.count++
	if s.count == 1 {
		t.unique++
		s.partition, s.offset, s.first = p, off, now
		// Only first sightings can be out of order: re-reading after a
		// rebalance or a duplicate written later are counted as such.
		if int64(pl.seq) < pt.maxSeq {
			t.reordered++
			if len(t.reorderS) < maxSamples {
				t.reorderS = append(t.reorderS, SeqLoc{pl.seq, p, off})
			}
		}
		pt.maxSeq = max(pt.maxSeq, int64(pl.seq))
		return
	}
	here := Loc{p, off}
	if here == (Loc{s.partition, s.offset}) {
		t.redelivered++
		return
	}
	for _, l := range t.extra[pl.seq] {
		if l == here {
			t.redelivered++
			return
		}
	}
	t.extra[pl.seq] = append(t.extra[pl.seq], here)
}

// caughtUp reports whether every partition was read up to end.
func (t *tracker) caughtUp(end map[int32]int64) bool {
	for p, e := range end {
		if e > 0 && t.part(p).next < e {
			return false
		}
	}
	return true
}

type consumer struct {
	cl       *kgo.Client
	t0       time.Time
	assigned chan struct{}

	mu    sync.Mutex
	tr    *tracker
	errs  tally
	marks []errMark
}

// newConsumer joins the group right away (franz-go manages the group in the
// background); t0 and tr must be set before loop starts.
func newConsumer(seeds []string, topic, group string, extra ...kgo.Opt) (*consumer, error) {
	c := &consumer{errs: tally{}, assigned: make(chan struct{})}
	var once sync.Once
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumerGroup(group),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			once.Do(func() { close(c.assigned) })
		}),
	}, extra...)...)
	if err != nil {
		return nil, err
	}
	c.cl = cl
	return c, nil
}

// loop consumes until ctx is done or the client is closed.
func (c *consumer) loop(ctx context.Context) {
	for {
		fs := c.cl.PollFetches(ctx)
		if fs.IsClientClosed() || ctx.Err() != nil {
			return
		}
		now := time.Since(c.t0).Nanoseconds()
		c.mu.Lock()
		fs.EachError(func(_ string, _ int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			c.errs.add(classify(err), 1)
			c.marks = append(c.marks, errMark{at: now, kind: errConsume})
		})
		fs.EachRecord(func(r *kgo.Record) { c.tr.observe(r.Partition, r.Offset, r.Value, now) })
		c.mu.Unlock()
	}
}

func (c *consumer) unique() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr.unique
}

// caughtUp reports whether every partition was read up to end.
func (c *consumer) caughtUp(end map[int32]int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tr.caughtUp(end)
}
