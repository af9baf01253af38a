package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Event is one line another tool appended to the events file.
type Event struct {
	Time  time.Time `json:"time"`
	AtSec float64   `json:"at_s"` // since producing started; negative before
	Text  string    `json:"text"`
	// Untimed lines had no RFC 3339 timestamp; Time is when we read them.
	Untimed bool `json:"untimed,omitempty"`
}

// eventTail follows the events file while we run. The file may not exist
// yet, and writers append whole lines, so we poll rather than watch.
type eventTail struct {
	path string
	t0   time.Time
	log  io.Writer

	pollMu  sync.Mutex // poll runs from the ticker and from list
	off     int64
	partial []byte

	mu     sync.Mutex
	events []Event
}

func (e *eventTail) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		e.poll()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (e *eventTail) poll() {
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	f, err := os.Open(e.path)
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() < e.off {
		e.off, e.partial = 0, nil // truncated: start over
	}
	b, err := io.ReadAll(io.NewSectionReader(f, e.off, 1<<40))
	if err != nil && len(b) == 0 {
		return
	}
	e.off += int64(len(b))
	b = append(e.partial, b...)
	last := bytes.LastIndexByte(b, '\n')
	e.partial = bytes.Clone(b[last+1:])
	now := time.Now()
	for line := range strings.Lines(string(b[:last+1])) {
		if ev, ok := parseEvent(line, now); ok {
			ev.AtSec = ev.Time.Sub(e.t0).Seconds()
			e.mu.Lock()
			e.events = append(e.events, ev)
			e.mu.Unlock()
			fmt.Fprintf(e.log, "event  t=%6.1fs  %s\n", ev.AtSec, ev.Text)
		}
	}
}

// parseEvent parses "<RFC3339Nano timestamp> <free text>".
func parseEvent(line string, now time.Time) (Event, bool) {
	line = strings.TrimSpace(line)
	if line == "" {
		return Event{}, false
	}
	ts, text, _ := strings.Cut(line, " ")
	if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		return Event{Time: t, Text: strings.TrimSpace(text)}, true
	}
	return Event{Time: now, Text: line, Untimed: true}, true
}

// list returns the events so far, after a last look at the file.
func (e *eventTail) list() []Event {
	if e == nil {
		return nil
	}
	e.poll()
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.events...)
}
