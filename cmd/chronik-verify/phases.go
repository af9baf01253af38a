package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// settle keeps consuming until every acknowledged record was seen and every
// partition was read to its end (so late duplicates count too), at most
// --settle.
func settle(cfg Config, prod *producer, cons *consumer, adm *kadm.Client, abort <-chan struct{}, stderr io.Writer) {
	deadline := time.Now().Add(time.Duration(cfg.Settle))
	var cursor int
	for {
		var unseen int
		unseen, cursor = unseenAcked(prod, cons, cursor)
		if unseen == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ends, err := adm.ListEndOffsets(ctx, cfg.Topic)
			cancel()
			if err == nil && ends.Error() == nil {
				end := map[int32]int64{}
				ends.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset })
				if cons.caughtUp(end) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(stderr, "settle: gave up after %s with %d acknowledged records unseen\n", time.Duration(cfg.Settle), unseen)
			return
		}
		select {
		case <-abort:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// unseenAcked counts acknowledged records the consumer has not seen yet,
// from cursor on; records before the returned cursor are settled for good.
func unseenAcked(prod *producer, cons *consumer, cursor int) (int, int) {
	prod.mu.Lock()
	defer prod.mu.Unlock()
	cons.mu.Lock()
	defer cons.mu.Unlock()
	seen := cons.tr.seen
	unseen, settled := 0, true
	for seq := cursor; seq < len(prod.recs); seq++ {
		rec := prod.recs[seq]
		done := rec.state == failed || rec.state == acked && seq < len(seen) && seen[seq].count > 0
		if rec.state == acked && !done {
			unseen++
		}
		if settled && done {
			cursor = seq + 1
		} else {
			settled = false
		}
	}
	return unseen, cursor
}

func takeSnapshot(prod *producer, cons *consumer, parts int32, produceEnd, end int64) snapshot {
	prod.mu.Lock()
	defer prod.mu.Unlock()
	cons.mu.Lock()
	defer cons.mu.Unlock()
	clone := func(t tally) tally {
		out := tally{}
		for k, v := range t {
			c := *v
			out[k] = &c
		}
		return out
	}
	// The tracker is copied too: a consumer loop we stopped waiting for
	// may still touch it.
	tr := *cons.tr
	tr.seen = slices.Clone(tr.seen)
	tr.extra = maps.Clone(tr.extra)
	tr.buckets = slices.Clone(tr.buckets)
	return snapshot{
		recs: slices.Clone(prod.recs), final: clone(prod.final), retried: clone(prod.retried),
		prodMarks: slices.Clone(prod.marks), leaders: slices.Clone(prod.leaders),
		tr: &tr, consErrs: clone(cons.errs), consMarks: slices.Clone(cons.marks),
		parts: parts, produceEnd: produceEnd, end: end,
	}
}

func progressLoop(ctx context.Context, w io.Writer, every time.Duration, t0 time.Time, prod *producer, cons *consumer) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent, ackedN, errs, retried, p99, stall := prod.progress()
		fmt.Fprintf(w, "[%6.1fs] sent %d  acked %d  consumed %d  errors %d (retried %d)  p99 %s  stall %s\n",
			time.Since(t0).Seconds(), sent, ackedN, cons.unique(), errs, retried,
			p99.Round(100*time.Microsecond), stall.Round(time.Millisecond))
	}
}

// closeWithin closes a client but gives up waiting after d: closing a group
// member commits and leaves, which needs a reachable broker.
func closeWithin(cl *kgo.Client, d time.Duration) {
	done := make(chan struct{})
	go func() { cl.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
