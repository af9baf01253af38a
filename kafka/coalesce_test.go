package kafka

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// countConn records each Write it is given.
type countConn struct {
	net.Conn
	writes [][]byte
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestCoalescerGathersHeldWrites(t *testing.T) {
	under := &countConn{}
	co := &coalescer{Conn: under}
	if _, err := co.Write([]byte("hello")); err != nil || len(under.writes) != 1 {
		t.Fatalf("unheld write: %v, %d writes; want it passed straight through", err, len(under.writes))
	}
	var want bytes.Buffer
	want.WriteString("hello")
	co.hold()
	for i := range 64 { // a 1 MiB response as crypto/tls writes it
		rec := bytes.Repeat([]byte{byte(i)}, 16<<10+29)
		want.Write(rec)
		if n, err := co.Write(rec); err != nil || n != len(rec) {
			t.Fatalf("held write %d: %d, %v", i, n, err)
		}
	}
	if err := co.release(); err != nil {
		t.Fatal(err)
	}
	if n := len(under.writes) - 1; n > (64*(16<<10+29))/(coalesceSize-16<<10-29)+1 {
		t.Errorf("64 records went out in %d writes", n)
	}
	if got := bytes.Join(under.writes, nil); !bytes.Equal(got, want.Bytes()) {
		t.Errorf("bytes out differ from bytes in (%d vs %d)", len(got), want.Len())
	}
	if co.buf != nil {
		t.Error("release kept its buffer")
	}
}

func TestCoalescerDropsCloseAlertBehindAFlush(t *testing.T) {
	co := &coalescer{Conn: &countConn{}}
	co.closing.Store(true)
	co.mu.Lock() // the writer, flushing to a client that does not read
	if _, err := co.Write([]byte("alert")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write while closing behind a flush: %v, want net.ErrClosed", err)
	}
	co.mu.Unlock()
	if _, err := co.Write([]byte("alert")); err != nil {
		t.Errorf("write while closing, nobody flushing: %v", err)
	}
}
