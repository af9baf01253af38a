package compat

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// rollTimeline records when each step of a roll happened, so a gap in
// acks can be told where it fell.
type rollTimeline struct {
	mu     sync.Mutex
	start  time.Time
	events []rollEvent
}

type rollEvent struct {
	at   time.Time
	what string
}

func newRollTimeline() *rollTimeline { return &rollTimeline{start: time.Now()} }

func (tl *rollTimeline) note(format string, args ...any) {
	tl.mu.Lock()
	tl.events = append(tl.events, rollEvent{at: time.Now(), what: fmt.Sprintf(format, args...)})
	tl.mu.Unlock()
}

// rel is t relative to the start of the roll.
func (tl *rollTimeline) rel(t time.Time) string {
	return fmt.Sprintf("%+.3fs", t.Sub(tl.start).Seconds())
}

// around names the roll steps last before t and next after it.
func (tl *rollTimeline) around(t time.Time) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	before, after := "start of the roll", "end"
	for _, e := range tl.events {
		if !e.at.After(t) {
			before = e.what + " at " + tl.rel(e.at)
		} else {
			after = e.what + " at " + tl.rel(e.at)
			break
		}
	}
	return "after " + before + ", before " + after
}

// worstGaps describes the n longest gaps between acks on one partition
// that ended in [from, to]: which partition, when, and next to which step.
func (l *loader) worstGaps(tl *rollTimeline, from, to time.Time, n int) string {
	l.mu.Lock()
	var gs []gapAt
	for _, g := range l.allGaps {
		if !g.end.Before(from) && !g.end.After(to) {
			gs = append(gs, g)
		}
	}
	l.mu.Unlock()
	sort.Slice(gs, func(i, j int) bool { return gs[i].gap > gs[j].gap })
	var b strings.Builder
	for i := 0; i < n && i < len(gs); i++ {
		g := gs[i]
		begin := g.end.Add(-g.gap)
		fmt.Fprintf(&b, "\n  partition %d: %v from %s (%s)", g.partition, g.gap.Round(time.Millisecond), tl.rel(begin), tl.around(begin))
	}
	return b.String()
}

// fullISR reports whether node id's /partitions shows every partition of
// topic ("": of every topic) led and with every replica in sync.
func (c *cluster) fullISR(id int, topic string) bool {
	ps, err := c.partitions(id)
	if err != nil {
		return false
	}
	n := 0
	for _, p := range ps {
		if topic != "" && p.Topic != topic {
			continue
		}
		n++
		if p.Leader <= 0 || len(p.InSyncReplicas) < len(p.Replicas) {
			return false
		}
	}
	return n > 0
}

// rollFast restarts the nodes in order with SIGTERM at an orchestrator's
// pace: the next SIGTERM goes out as soon as a node that stayed up shows
// every partition of topic led with a full ISR, with no settle time and
// no wait for the restarted node's own readiness.
func rollFast(t *testing.T, c *cluster, tl *rollTimeline, topic string, order ...int) {
	t.Helper()
	for i, id := range order {
		watch := order[(i+1)%len(order)]
		tl.note("SIGTERM to node %d", id)
		c.stop(id, 30*time.Second)
		tl.note("node %d exited", id)
		c.start(id)
		tl.note("node %d started", id)
		waitFor(t, 30*time.Second, fmt.Sprintf("node %d to show a full ISR", watch), func() bool { return c.fullISR(watch, topic) })
		tl.note("node %d shows a full ISR", watch)
	}
}

// paceWatch measures how late a 5 ms ticker in the test process fires:
// on a loaded machine the process running the client is itself descheduled
// for a while, and an ack gap that long says nothing about the brokers.
type paceWatch struct {
	mu    sync.Mutex
	lates []gapAt // lateness above 20 ms, with when it ended
	stop  chan struct{}
	done  chan struct{}
}

func startPaceWatch(t *testing.T) *paceWatch {
	pw := &paceWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(pw.done)
		const every = 5 * time.Millisecond
		tk := time.NewTicker(every)
		defer tk.Stop()
		last := time.Now()
		for {
			select {
			case <-pw.stop:
				return
			case now := <-tk.C:
				now = time.Now()
				if late := now.Sub(last) - every; late > 20*time.Millisecond {
					pw.mu.Lock()
					pw.lates = append(pw.lates, gapAt{gap: late, end: now})
					pw.mu.Unlock()
				}
				last = now
			}
		}
	}()
	t.Cleanup(func() { close(pw.stop); <-pw.done })
	return pw
}

// worst is the longest lateness that ended in [from, to], and when it began.
func (pw *paceWatch) worst(tl *rollTimeline, from, to time.Time) string {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	var w gapAt
	for _, g := range pw.lates {
		if !g.end.Before(from) && !g.end.After(to) && g.gap > w.gap {
			w = g
		}
	}
	if w.gap == 0 {
		return "under 20ms"
	}
	return fmt.Sprintf("%v from %s", w.gap.Round(time.Millisecond), tl.rel(w.end.Add(-w.gap)))
}
