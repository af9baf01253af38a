package kafka

import (
	"bufio"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// closedAfter reads c until it is closed and returns how long that took
// from start; it fails the test if c is still open after limit.
func closedAfter(t *testing.T, c net.Conn, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	c.SetReadDeadline(start.Add(limit))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			if isTimeout(err) {
				t.Fatalf("connection still open after %v", limit)
			}
			return time.Since(start)
		}
	}
}

// A connection past its address's limit, and one that sent a frame no
// client sends, are closed only after the refused close delay; with the
// delay off, at once.
func TestRefusedCloseDelay(t *testing.T) {
	const delay = time.Second
	for _, d := range []time.Duration{delay, -1} {
		s, err := NewServer(Config{Listeners: []Listener{{Name: "PLAIN", Protocol: Plaintext, Listen: "127.0.0.1:0"}},
			Backend: stubBackend{}, Limits: Limits{MaxConnectionsPerIP: 1, RefusedCloseDelay: d}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		first, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		writeReq(t, first, 1, kmsg.NewPtrApiVersionsRequest())
		first.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := readSized(first); err != nil {
			t.Fatalf("first connection: %v", err)
		}
		start := time.Now()
		var took time.Duration
		if second, err := net.Dial("tcp", s.Addr().String()); err != nil {
			// Reset before the dial returned: closed at once.
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatal(err)
			}
			took = time.Since(start)
		} else {
			took = closedAfter(t, second, start, 5*time.Second)
			second.Close()
		}
		if d > 0 && took < delay || d < 0 && took >= delay {
			t.Errorf("delay %v: connection past the per-address limit closed after %v", d, took)
		}
		first.Close()
		// The slot is free once the first connection is gone: a
		// malformed frame (an unknown api key) on a new one.
		var bad net.Conn
		for i := 0; i < 50; i++ {
			if bad, err = net.Dial("tcp", s.Addr().String()); err != nil {
				if errors.Is(err, syscall.ECONNRESET) {
					continue // still refused
				}
				t.Fatal(err)
			}
			writeReq(t, bad, 2, kmsg.NewPtrApiVersionsRequest())
			bad.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := readSized(bad); err == nil {
				break
			}
			bad.Close() // still refused: the first one's close not seen yet
			bad = nil
			time.Sleep(20 * time.Millisecond)
		}
		if bad == nil {
			t.Fatal("no connection admitted after the first closed")
		}
		start = time.Now()
		if _, err := bad.Write([]byte{0, 0, 0, 8, 0x7f, 0x7f, 0, 0, 0, 0, 0, 3}); err != nil {
			t.Fatal(err)
		}
		took = closedAfter(t, bad, start, 5*time.Second)
		bad.Close()
		if d > 0 && took < delay || d < 0 && took >= delay {
			t.Errorf("delay %v: connection with a malformed frame closed after %v", d, took)
		}
		s.Close()
	}
}

// Frames over 1 MiB from one address are read no faster than its rate:
// 4 MiB at 8 MiB/s, with a burst of 1 MiB, take at least 3/8 s.
func TestBigFrameRatePerIP(t *testing.T) {
	for _, rate := range []int64{0, 8 << 20} {
		c, client := testConn(t, Limits{})
		c.s.readRate = newRateBuckets(rate)
		c.s.readRate.open(c.ip)
		frame := produceFrame("t", 4<<20)
		go client.Write(frame)
		start := time.Now()
		deadline := start.Add(5 * time.Second)
		c.nc.SetReadDeadline(deadline)
		body, mem, err := c.readFrame(bufio.NewReaderSize(c.nc, readBufSize), deadline)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("rate %d: %v", rate, err)
		}
		c.s.releaseMemory(mem)
		if len(body) != len(frame)-4 {
			t.Fatalf("rate %d: body of %d bytes, want %d", rate, len(body), len(frame)-4)
		}
		var m dto.Metric
		if err := c.s.metrics.limitHits.WithLabelValues(hitBigFrameRate).Write(&m); err != nil {
			t.Fatal(err)
		}
		hits := m.GetCounter().GetValue()
		if rate > 0 && (took < 3*time.Second/8 || hits != 1) {
			t.Errorf("rate %d: 4 MiB read in %v, %v limit hits", rate, took, hits)
		}
		if rate == 0 && hits != 0 {
			t.Errorf("no rate: %v limit hits", hits)
		}
		t.Logf("rate %d: 4 MiB read in %v", rate, took)
	}
}
