package compat

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// consumeLog records what the members of one consumer group consumed, and
// the offsets the group is known to have committed on each partition and
// since when, so that gaps in consumption and redeliveries can be judged
// once the test is over.
type consumeLog struct {
	mu      sync.Mutex
	events  []consumedAt            // in the order the members saw them
	commits map[int32][]committedAt // per partition, ascending in time and offset
	errs    map[string]int
}

type consumedAt struct {
	partition int32
	offset    int64
	at        time.Time
	member    int
	value     string
}

// committedAt: the group's committed offset on a partition was at least
// offset from at on (a commit answered, or seen in OffsetFetch, by then).
type committedAt struct {
	at     time.Time
	offset int64
}

func newConsumeLog() *consumeLog {
	return &consumeLog{commits: map[int32][]committedAt{}, errs: map[string]int{}}
}

func (cl *consumeLog) consumed(member int, p int32, off int64, value string) {
	now := time.Now()
	cl.mu.Lock()
	cl.events = append(cl.events, consumedAt{partition: p, offset: off, at: now, member: member, value: value})
	cl.mu.Unlock()
}

// committed notes that the group's offset on p is known to be off now;
// only advances are kept.
func (cl *consumeLog) committed(p int32, off int64) {
	now := time.Now()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cs := cl.commits[p]
	if n := len(cs); n > 0 && cs[n-1].offset >= off {
		return
	}
	cl.commits[p] = append(cs, committedAt{at: now, offset: off})
}

func (cl *consumeLog) fail(err error) {
	cl.mu.Lock()
	cl.errs[err.Error()]++
	cl.mu.Unlock()
}

// committedBefore is the highest offset known committed on p before t
// (0 if none).
func (cl *consumeLog) committedBefore(p int32, t time.Time) int64 {
	var off int64
	for _, c := range cl.commits[p] {
		if !c.at.Before(t) {
			break
		}
		off = c.offset
	}
	return off
}

// watchCommits asks the group's coordinator for its committed offsets
// every 20 ms until stopped (stop is also a cleanup of t), so commits a
// client does not report (sarama has no commit callback) are known too. A
// failed fetch (the coordinator moving) is skipped: a missed observation
// only makes the redelivery check more lenient, never wrong.
func watchCommits(t *testing.T, c *cluster, group string, log *consumeLog) (stop func()) {
	adm := kadm.NewClient(newFranz(t, c))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			offs, err := adm.FetchOffsets(rctx, group)
			rcancel()
			if err != nil {
				continue
			}
			offs.Each(func(o kadm.OffsetResponse) {
				if o.Err == nil && o.At >= 0 {
					log.committed(o.Partition, o.At)
				}
			})
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// consumeVerdict is what a consumeLog says about one roll.
type consumeVerdict struct {
	worst       time.Duration // longest gap in consumption on one partition while records were there
	worstP      int32
	worstFrom   time.Time
	perPart     []time.Duration // each partition's longest gap, ascending
	consumed    int             // records consumed, redeliveries included
	missing     int             // acknowledged records never consumed
	redelivered int             // consumptions of a record already consumed
	badRedeliv  []string        // redeliveries below the committed offset
}

// judge measures the consumption gaps that ended in [from, to] and checks
// the whole log against the acknowledged records: every one consumed, and
// a record consumed again only at or after the offset the group had
// committed on its partition when it was consumed again. A gap runs from
// the later of the last consumption and the ack of the next record on the
// partition (when records were there to read) to the next consumption.
func (cl *consumeLog) judge(acked map[string]ackPos, from, to time.Time) consumeVerdict {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	ackAt := make(map[[2]int64]time.Time, len(acked))
	for _, a := range acked {
		ackAt[[2]int64{int64(a.partition), a.offset}] = a.at
	}
	var v consumeVerdict
	seen := map[[2]int64]consumedAt{}
	last := map[int32]consumedAt{}
	worstOn := map[int32]time.Duration{}
	values := map[string]bool{}
	v.consumed = len(cl.events)
	for _, e := range cl.events {
		values[e.value] = true
		key := [2]int64{int64(e.partition), e.offset}
		if first, dup := seen[key]; dup {
			v.redelivered++
			if c := cl.committedBefore(e.partition, e.at); e.offset < c && len(v.badRedeliv) < 10 {
				v.badRedeliv = append(v.badRedeliv, fmt.Sprintf("partition %d offset %d: consumed by member %d, again by member %d %v later, below the committed offset %d",
					e.partition, e.offset, first.member, e.member, e.at.Sub(first.at).Round(time.Millisecond), c))
			}
		} else {
			seen[key] = e
		}
		if prev, ok := last[e.partition]; ok && !e.at.Before(from) && !e.at.After(to) {
			begin := prev.at
			if a, ok := ackAt[[2]int64{int64(e.partition), prev.offset + 1}]; ok && a.After(begin) {
				begin = a
			}
			if gap := e.at.Sub(begin); gap > worstOn[e.partition] {
				worstOn[e.partition] = gap
				if gap > v.worst {
					v.worst, v.worstP, v.worstFrom = gap, e.partition, begin
				}
			}
		}
		last[e.partition] = e
	}
	for val := range acked {
		if !values[val] {
			v.missing++
		}
	}
	for _, g := range worstOn {
		v.perPart = append(v.perPart, g)
	}
	sort.Slice(v.perPart, func(i, j int) bool { return v.perPart[i] < v.perPart[j] })
	return v
}

// consumedAll reports whether every value in acked has been consumed.
func (cl *consumeLog) consumedAll(acked map[string]ackPos) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	got := make(map[string]bool, len(cl.events))
	for _, e := range cl.events {
		got[e.value] = true
	}
	for v := range acked {
		if !got[v] {
			return false
		}
	}
	return true
}

func (cl *consumeLog) errors() string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.errs) == 0 {
		return "none"
	}
	var parts []string
	for e, n := range cl.errs {
		parts = append(parts, fmt.Sprintf("%dx %s", n, e))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// ackedValues copies the loader's acknowledged records.
func (l *loader) ackedValues() map[string]ackPos {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]ackPos, len(l.acked))
	for k, v := range l.acked {
		out[k] = v
	}
	return out
}

// TestConsumeLogJudge checks the verdict on a made-up log: no cluster.
func TestConsumeLogJudge(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	acked := map[string]ackPos{}
	for o := int64(0); o < 6; o++ {
		acked[fmt.Sprint("v", o)] = ackPos{partition: 0, offset: o, at: at(int(o) * 100)}
	}
	acked["never"] = ackPos{partition: 1, offset: 0, at: at(0)}
	cl := newConsumeLog()
	ev := func(member int, off int64, ms int) {
		cl.events = append(cl.events, consumedAt{partition: 0, offset: off, at: at(ms), member: member, value: fmt.Sprint("v", off)})
	}
	ev(1, 0, 10)
	ev(1, 1, 110)
	ev(1, 2, 210)
	cl.commits[0] = []committedAt{{at: at(220), offset: 2}} // offsets 0 and 1 are done
	ev(1, 3, 310)
	// Member 2 takes over at the committed offset 2 (allowed again), then
	// re-reads 1, which was committed (a bug), then reads on; offset 4 was
	// there from 400 ms and is read at 900 ms.
	ev(2, 2, 800)
	ev(2, 1, 850)
	ev(2, 4, 900)
	ev(2, 5, 950)
	v := cl.judge(acked, t0, at(1000))
	if v.consumed != 8 || v.redelivered != 2 || v.missing != 1 {
		t.Errorf("consumed %d, redelivered %d, missing %d; want 8, 2, 1", v.consumed, v.redelivered, v.missing)
	}
	if len(v.badRedeliv) != 1 || !strings.Contains(v.badRedeliv[0], "offset 1:") {
		t.Errorf("redeliveries below the commit: %q; want only offset 1's", v.badRedeliv)
	}
	// From 310 ms (offset 3 read; offset 4 acked at 400) to 800 ms.
	if v.worst != 400*time.Millisecond || v.worstP != 0 || !v.worstFrom.Equal(at(400)) {
		t.Errorf("worst gap %v on %d from %v; want 400ms on 0 from +400ms", v.worst, v.worstP, v.worstFrom.Sub(t0))
	}
}
