package kafka

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceFrame is a size-prefixed Produce v9 frame (acks 1) with one
// partition of topic holding n record bytes.
func produceFrame(topic string, n int) []byte {
	pr := kmsg.NewPtrProduceRequest()
	pr.SetVersion(9)
	pr.Acks, pr.TimeoutMillis = 1, 5000
	pr.Topics = []kmsg.ProduceRequestTopic{{Topic: topic, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: make([]byte, n)}}}}
	body := frame(pr, 7, "f")
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// testConns is n server-side conns of one server, each on a real loopback
// connection, with the clients' ends.
func testConns(t testing.TB, lim Limits, n int) ([]*conn, []net.Conn) {
	t.Helper()
	lim.defaults(200 << 20)
	m, err := newMetrics(prometheus.NewRegistry(), func() float64 { return 0 }, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{MaxRequestSize: 200 << 20, Limits: lim}, logger: slog.New(slog.DiscardHandler),
		metrics: m, reqMemory: newBudget(lim.QueuedMaxRequestBytes), bigReads: make(chan struct{}, lim.MaxBigFrameReads),
		apis: testAPIs(), ctx: context.Background()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []*conn
	var clients []net.Conn
	for range n {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); nc.Close() })
		conns = append(conns, &conn{s: s, nc: nc, done: make(chan struct{})})
		clients = append(clients, client)
	}
	return conns, clients
}

type frameResult struct {
	body []byte
	err  error
}

// readFrameAsync reads one frame off c with the given frame timeout.
func readFrameAsync(c *conn, timeout time.Duration) <-chan frameResult {
	done := make(chan frameResult, 1)
	deadline := time.Now().Add(timeout)
	c.nc.SetReadDeadline(deadline)
	go func() {
		body, mem, err := c.readFrame(bufio.NewReaderSize(c.nc, readBufSize), deadline)
		c.s.releaseMemory(mem)
		done <- frameResult{body, err}
	}()
	return done
}

// The frame TestHostileClients' attackers send, 100 MiB declared and
// zeros after the header (a Produce with no topics and 100 MiB after it),
// is refused once its first chunk is in, and so is one whose records
// would run past its end.
func TestMalformedBigProduceRefusedFromHeader(t *testing.T) {
	zeros := binary.BigEndian.AppendUint32(nil, 100<<20)
	zeros = append(zeros, 0, 0, 0, 9, 0, 0, 0, 1)
	zeros = append(zeros, make([]byte, 8<<10)...)
	past := produceFrame("t", 1<<20)
	binary.BigEndian.PutUint32(past, uint32(len(past)-4-1000)) // 1000 bytes short of its records
	for name, head := range map[string][]byte{"zeros after the header": zeros, "records past the end": past[:16<<10]} {
		cs, clients := testConns(t, Limits{}, 1)
		clients[0].Write(head)
		select {
		case r := <-readFrameAsync(cs[0], 5*time.Second):
			var br *badRequest
			if !errors.As(r.err, &br) || br.reason != "malformed" {
				t.Errorf("%s: %v, want a malformed-request refusal", name, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still being read", name)
		}
		if u := cs[0].s.reqMemory.inUse(); u != 0 {
			t.Errorf("%s: %d bytes of budget held after the refusal", name, u)
		}
	}
	// A well-formed frame of the same kind reads through.
	cs, clients := testConns(t, Limits{}, 1)
	good := produceFrame("t", 3<<20)
	go clients[0].Write(good)
	if r := <-readFrameAsync(cs[0], 10*time.Second); r.err != nil || len(r.body) != len(good)-4 {
		t.Fatalf("well-formed 3 MiB Produce: %d bytes, %v", len(r.body), r.err)
	}
}

// A frame that stops sending gives its big-read slot up: with one slot,
// a second big frame is read while the first one stalls.
func TestBigReadSlotNotHeldByStalledSender(t *testing.T) {
	cs, clients := testConns(t, Limits{MaxBigFrameReads: 1}, 2)
	stalled := produceFrame("t", 4<<20)
	clients[0].Write(stalled[:2<<20]) // half of it, then nothing
	stalledDone := readFrameAsync(cs[0], 10*time.Second)
	// Once it has read what it got it held the slot; it then stalls.
	for end := time.Now().Add(5 * time.Second); cs[0].s.reqMemory.inUse() < 2<<20-64<<10; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("stalled frame's first 2 MiB not read in 5 s (%d bytes)", cs[0].s.reqMemory.inUse())
		}
	}
	good := produceFrame("t", 4<<20)
	go clients[1].Write(good)
	start := time.Now()
	select {
	case r := <-readFrameAsync(cs[1], 10*time.Second):
		if r.err != nil || len(r.body) != len(good)-4 {
			t.Fatalf("second big frame: %d bytes, %v", len(r.body), r.err)
		}
		t.Logf("second big frame read in %v while the first stalled", time.Since(start).Round(time.Millisecond))
	case <-stalledDone:
		t.Fatal("stalled frame ended first")
	case <-time.After(5 * time.Second):
		t.Fatal("second big frame not read in 5 s: the stalled sender holds the slot")
	}
	// The stalled one goes on once its bytes come.
	clients[0].Write(stalled[2<<20:])
	if r := <-stalledDone; r.err != nil || len(r.body) != len(stalled)-4 {
		t.Fatalf("stalled frame, completed: %d bytes, %v", len(r.body), r.err)
	}
	if n := len(cs[0].s.bigReads); n != 0 {
		t.Fatalf("%d big-read slots still held", n)
	}
}

// screenBackend knows one topic, "t", whose max.message.bytes is 1 MiB.
type screenBackend struct{ stubBackend }

func (screenBackend) ScreenProduce(topic string, part int32, size int) (int16, string) {
	switch {
	case topic != "t":
		return kerr.UnknownTopicOrPartition.Code, ""
	case size > 1<<20:
		return kerr.MessageTooLarge.Code, "batch larger than max.message.bytes"
	}
	return 0, ""
}

// A big Produce every partition of which would be refused is answered
// from its header, its records discarded as they come without taking the
// request budget, and the connection goes on serving.
func TestBigProduceAnsweredFromHeader(t *testing.T) {
	s, err := NewServer(Config{Listeners: []Listener{{Name: "PLAIN", Protocol: Plaintext, Listen: "127.0.0.1:0"}},
		Backend: screenBackend{}, Limits: Limits{QueuedMaxRequestBytes: 16 << 20}, MaxRequestSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for topic, want := range map[string]int16{"nope": kerr.UnknownTopicOrPartition.Code, "t": kerr.MessageTooLarge.Code} {
		// 48 MiB: three times the whole request budget.
		f := produceFrame(topic, 48<<20)
		sent := make(chan error, 1)
		go func() { _, err := c.Write(f); sent <- err }()
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := readSized(c)
		if err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
		if err := <-sent; err != nil {
			t.Fatalf("%s: sending: %v", topic, err)
		}
		resp := kmsg.NewPtrProduceResponse()
		resp.SetVersion(9)
		if err := resp.ReadFrom(b[5:]); err != nil { // correlation id, header tags
			t.Fatal(err)
		}
		if got := resp.Topics[0].Partitions[0].ErrorCode; got != want || resp.Topics[0].Topic != topic {
			t.Fatalf("%s: error %d, want %d", topic, got, want)
		}
	}
	writeReq(t, c, 9, kmsg.NewPtrApiVersionsRequest())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readSized(c); err != nil {
		t.Fatalf("ApiVersions after the refused frames: %v", err)
	}
}

// BenchmarkReadBigFrame reads 16 MiB Produce frames off a loopback
// connection: run with -benchmem for what a big frame allocates.
func BenchmarkReadBigFrame(b *testing.B) {
	cs, clients := testConns(b, Limits{}, 1)
	f := produceFrame("t", 16<<20)
	go func() {
		for range b.N {
			if _, err := clients[0].Write(f); err != nil {
				return
			}
		}
	}()
	r := bufio.NewReaderSize(cs[0].nc, readBufSize)
	b.SetBytes(int64(len(f)))
	b.ResetTimer()
	for range b.N {
		deadline := time.Now().Add(10 * time.Second)
		cs[0].nc.SetReadDeadline(deadline)
		body, mem, err := cs[0].readFrame(r, deadline)
		if err != nil || len(body) != len(f)-4 {
			b.Fatalf("%d bytes, %v", len(body), err)
		}
		cs[0].s.releaseMemory(mem)
	}
}

// Every prefix of a Produce that kmsg encodes reads as well formed, and
// once all of it has arrived its partitions are all known.
func TestProduceShapeOfEncodedRequests(t *testing.T) {
	txn := "tx"
	for v := int16(3); v <= 11; v++ {
		pr := kmsg.NewPtrProduceRequest()
		pr.SetVersion(v)
		pr.Acks, pr.TimeoutMillis = -1, 1000
		if v%2 == 0 {
			pr.TransactionID = &txn
		}
		pr.Topics = []kmsg.ProduceRequestTopic{
			{Topic: "a", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: make([]byte, 300)}, {Partition: 2}}},
			{Topic: "bb", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 1, Records: make([]byte, 5)}}},
			{Topic: "empty"},
		}
		body := frame(pr, 1, "client")[8:]
		for k := 0; k <= len(body); k++ {
			sh := readProduceShape(pr.IsFlexible(), body[:k], len(body))
			if sh.malformed {
				t.Fatalf("v%d: %d of %d bytes read as malformed", v, k, len(body))
			}
			if k == len(body) {
				want := []shapePart{{"a", 0, 300, 0}, {"a", 2, -1, 0}, {"bb", 1, 5, 0}}
				for i := range min(len(want), len(sh.parts)) {
					want[i].at = sh.parts[i].at // checked below, against the bytes
				}
				if !sh.known || len(sh.parts) != 3 || sh.parts[0] != want[0] || sh.parts[1] != want[1] || sh.parts[2] != want[2] ||
					sh.acks != -1 || sh.timeout != 1000 || sh.txnID != (v%2 == 0) || sh.clientID == nil || *sh.clientID != "client" {
					t.Fatalf("v%d: %+v", v, sh)
				}
				// The records are where at says: 300 zeros for a-0, bb-1's
				// five zeros end just before its tags (or the next topic).
				if a := sh.parts[0].at; a < 2 || binary.BigEndian.Uint32(body[a-4:]) != 300 && !pr.IsFlexible() {
					t.Fatalf("v%d: a-0's records at %d", v, a)
				}
				if b := sh.parts[2]; b.at+b.records > len(body) {
					t.Fatalf("v%d: bb-1's records at %d run past the end", v, b.at)
				}
			}
		}
		// One byte more or less than the layout: malformed.
		for _, n := range []int{len(body) - 1, len(body) + 1} {
			src := append(append([]byte(nil), body...), 0)[:n]
			if sh := readProduceShape(pr.IsFlexible(), src, n); !sh.malformed {
				t.Fatalf("v%d: %d bytes for a %d-byte layout read as well formed", v, n, len(body))
			}
		}
	}
}

// readProduceShape never panics, whatever it is given.
func FuzzProduceShape(f *testing.F) {
	f.Add(produceFrame("t", 100)[12:], 50, true)
	f.Add(make([]byte, 40), 20, false)
	f.Fuzz(func(t *testing.T, body []byte, k int, flexible bool) {
		k = max(min(k, len(body)), 0)
		readProduceShape(flexible, body[:k], len(body))
	})
}
