package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrorCount is one row of an error table in the report.
type ErrorCount struct {
	Name      string `json:"name"`
	Code      int16  `json:"code,omitempty"` // Kafka error code; 0 for client-side errors
	Retriable bool   `json:"retriable"`
	Count     int    `json:"count"`
	Example   string `json:"example,omitempty"` // first message seen, for errors without a Kafka code
}

// classify names an error by its Kafka error code when it has one, and
// otherwise by the client-side condition, so that tables group stably.
func classify(err error) ErrorCount {
	e := classifyKind(err)
	if e.Code == 0 {
		e.Example = err.Error()
		if len(e.Example) > 160 {
			e.Example = e.Example[:160] + "…"
		}
	}
	return e
}

func classifyKind(err error) ErrorCount {
	if ke, ok := errors.AsType[*kerr.Error](err); ok {
		return ErrorCount{Name: ke.Message, Code: ke.Code, Retriable: ke.Retriable}
	}
	var ne net.Error
	switch {
	case errors.Is(err, kgo.ErrRecordTimeout):
		return ErrorCount{Name: "RECORD_TIMEOUT"}
	case errors.Is(err, kgo.ErrRecordRetries):
		return ErrorCount{Name: "RECORD_RETRIES_EXHAUSTED"}
	case errors.Is(err, kgo.ErrClientClosed):
		return ErrorCount{Name: "CLIENT_CLOSED"}
	case isDataLoss(err):
		return ErrorCount{Name: "DATA_LOSS"}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ErrorCount{Name: "CONTEXT_DONE"}
	case errors.Is(err, syscall.ECONNREFUSED):
		return ErrorCount{Name: "CONNECTION_REFUSED", Retriable: true}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ErrorCount{Name: "CONNECTION_RESET", Retriable: true}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrorCount{Name: "CONNECTION_EOF", Retriable: true}
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ErrorCount{Name: "NETWORK_TIMEOUT", Retriable: true}
	case strings.Contains(err.Error(), "connection has died"): // kgo's unexported errChosenBrokerDead
		return ErrorCount{Name: "CONNECTION_DIED", Retriable: true}
	}
	return ErrorCount{Name: "OTHER", Retriable: kerr.IsRetriable(err)}
}

// errMark is one error occurrence, kept for the timeline.
type errMark struct {
	at   int64 // ns since the run's time zero
	kind errKind
}

type errKind uint8

const (
	errRetried errKind = iota // a produce request failed and the client retried it
	errFinal                  // a record failed for good
	errConsume                // a fetch or group error
)

// tally counts errors by name; not safe for concurrent use on its own.
type tally map[string]*ErrorCount

func (t tally) add(e ErrorCount, n int) {
	if c, ok := t[e.Name]; ok {
		c.Count += n
		return
	}
	e.Count = n
	t[e.Name] = &e
}

func (t tally) total() int {
	n := 0
	for _, c := range t {
		n += c.Count
	}
	return n
}

// rows returns the counts largest first.
func (t tally) rows() []ErrorCount {
	out := make([]ErrorCount, 0, len(t))
	for _, c := range t {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b ErrorCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

func isDataLoss(err error) bool {
	_, ok := errors.AsType[*kgo.ErrDataLoss](err)
	return ok
}
