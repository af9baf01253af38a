package kafka

import (
	"net"
	"testing"
	"time"

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
	const delay = 400 * time.Millisecond
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
		second, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		took := closedAfter(t, second, start, 5*time.Second)
		second.Close()
		if d > 0 && took < delay || d < 0 && took >= delay {
			t.Errorf("delay %v: connection past the per-address limit closed after %v", d, took)
		}
		first.Close()
		// The slot is free once the first connection is gone: a
		// malformed frame (an unknown api key) on a new one.
		var bad net.Conn
		for i := 0; i < 50; i++ {
			if bad, err = net.Dial("tcp", s.Addr().String()); err != nil {
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
