package kafka

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// forge fills the slice at path (field indexes from the request down)
// with n zero elements, and every slice above it with one, so the frame is
// made almost only of that array's elements at their smallest wire size:
// what an attacker sends to make the decoder allocate the most per byte.
func forge(v reflect.Value, path []int, n int) {
	f := v.Field(path[0])
	if len(path) == 1 {
		f.Set(reflect.MakeSlice(f.Type(), n, n))
		for i := 0; i < n; i++ {
			if d := f.Index(i).Addr().MethodByName("Default"); d.IsValid() {
				d.Call(nil)
			}
		}
		return
	}
	f.Set(reflect.MakeSlice(f.Type(), 1, 1))
	e := f.Index(0)
	if d := e.Addr().MethodByName("Default"); d.IsValid() {
		d.Call(nil)
	}
	forge(e, path[1:], n)
}

// slicePaths lists the paths of every slice of structs in t.
func slicePaths(t reflect.Type, prefix []int) [][]int {
	var out [][]int
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Slice || f.Type.Elem().Kind() != reflect.Struct || f.Name == "UnknownTags" {
			continue
		}
		p := append(append([]int(nil), prefix...), i)
		out = append(out, p)
		out = append(out, slicePaths(f.Type.Elem(), p)...)
	}
	return out
}

// decodeAlloc is how many bytes decoding body allocates.
func decodeAlloc(apis map[int16]*api, body []byte) (uint64, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := decodeRequest(apis, body, nil)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// Every array of every request, forged with thousands of empty elements,
// decodes into at most maxDecodeFactor bytes per frame byte, or for
// Produce into at most what its pre-scan charges.
func TestDecodeForgedCountsBounded(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation sizes")
	}
	apis := testAPIs()
	keys := make([]int, 0, len(apis))
	for k := range apis {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	worst := 0.0
	for _, k := range keys {
		a := apis[int16(k)]
		for v := a.min; v <= a.max; v++ {
			req := kmsg.RequestForKey(a.key)
			for _, path := range slicePaths(reflect.TypeOf(req).Elem(), nil) {
				req := kmsg.RequestForKey(a.key)
				req.SetVersion(v)
				forge(reflect.ValueOf(req).Elem(), path, 4000)
				body := frame(req, 1, "f")
				alloc, err := decodeAlloc(apis, body)
				if err != nil {
					continue // a field this version does not have
				}
				if a.key == 0 {
					// Produce is charged by a pre-scan, not by a factor.
					hdr := 8 + 2 + len("f")
					if req.IsFlexible() {
						hdr++
					}
					cost, err := decodeCost(0, req.IsFlexible(), body[hdr:])
					if err != nil || alloc > uint64(cost+cost/64+16<<10) { // size classes round up
						t.Errorf("Produce v%d, array %v: decodes into %d bytes, pre-scan says %d (%v)", v, path, alloc, cost, err)
					}
					continue
				}
				f := float64(alloc) / float64(len(body))
				worst = max(worst, f)
				if f > maxDecodeFactor {
					t.Errorf("%s v%d, array %v: %d-byte frame decodes into %d bytes (%.1fx)", kmsg.NameForKey(a.key), v, path, len(body), alloc, f)
				}
			}
		}
	}
	t.Logf("worst decode factor %.1fx", worst)
}

// Big frames may hold only the bulk of the budget: small requests still
// get the reserve. A waiter that gives up leaves nothing held, and one
// that waits is served when bytes come back.
func TestBudgetReserveForSmallRequests(t *testing.T) {
	b := newBudget(800) // bulk 700
	ctx := context.Background()
	if err := b.acquire(ctx, 700, true); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.acquire(short, 1, true); err == nil {
		t.Fatal("a big frame took past the bulk")
	}
	if !b.tryAcquire(100, false) {
		t.Fatal("a small request found no reserve")
	}
	if b.tryAcquire(1, false) {
		t.Fatal("took past the whole budget")
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(ctx, 50, false) }()
	select {
	case <-got:
		t.Fatal("served while the budget was spent")
	case <-time.After(20 * time.Millisecond):
	}
	b.release(100, true)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("waiter not served after a release")
	}
	if u := b.inUse(); u != 750 {
		t.Fatalf("in use %d, want 750", u)
	}
}

// A Produce frame of empty partitions costs a few bytes each on the wire
// and 40 decoded: the pre-scan counts them, and a frame that could never
// fit in the budget is refused before kmsg allocates anything.
func TestForgedProduceRefusedBeforeDecode(t *testing.T) {
	pr := kmsg.NewPtrProduceRequest()
	pr.SetVersion(9)
	pr.Topics = []kmsg.ProduceRequestTopic{{Topic: "t", Partitions: make([]kmsg.ProduceRequestTopicPartition, 100000)}}
	body := frame(pr, 1, "f")
	var asked int64
	_, err := decodeRequest(testAPIs(), body, func(n int64) error {
		asked = n
		return &badRequest{"size", "too big"}
	})
	if err == nil || asked < 100000*producePartitionSize {
		t.Fatalf("pre-scan asked for %d bytes for a %d-byte frame (err %v)", asked, len(body), err)
	}
}

// testConn is a server-side conn on a real loopback connection, with the
// client's end.
func testConn(t *testing.T, lim Limits) (*conn, net.Conn) {
	t.Helper()
	lim.defaults(200 << 20)
	mem := newBudget(lim.QueuedMaxRequestBytes)
	m, err := newMetrics(prometheus.NewRegistry(), func() float64 { return 0 }, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{MaxRequestSize: 200 << 20, Limits: lim}, logger: slog.New(slog.DiscardHandler),
		metrics: m, reqMemory: mem, bigReads: make(chan struct{}, lim.MaxBigFrameReads), apis: testAPIs(), ctx: context.Background()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); nc.Close() })
	return &conn{s: s, nc: nc, done: make(chan struct{})}, client
}

// A frame that declares 100 MiB and sends little holds little, and a
// frame not complete by its deadline gives everything back.
func TestFrameBufferGrowsAsBytesArrive(t *testing.T) {
	c, client := testConn(t, Limits{})
	client.Write(produceFrame("t", 100<<20-64)[:10000]) // 10 KB of a well-formed 100 MiB Produce
	deadline := time.Now().Add(500 * time.Millisecond)
	c.nc.SetReadDeadline(deadline)
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		body, _, err := c.readFrame(bufio.NewReaderSize(c.nc, readBufSize), deadline)
		done <- result{body, err}
	}()
	peak := int64(0)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		peak = max(peak, c.s.reqMemory.inUse())
	}
	if peak < 10000 || peak > 16<<10 {
		t.Fatalf("holding %d bytes of budget for 10 KB received", peak)
	}
	select {
	case r := <-done:
		if !isTimeout(r.err) || r.body != nil {
			t.Fatalf("half-sent frame: %v", r.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("half-sent frame still being read past its deadline")
	}
	if u := c.s.reqMemory.inUse(); u != 0 {
		t.Fatalf("%d bytes of budget still held after the frame failed", u)
	}
}

// A non-Produce frame over its limit is refused from its header.
func TestNonProduceFrameLimit(t *testing.T) {
	c, client := testConn(t, Limits{MaxNonProduceRequestSize: 1 << 20})
	hdr := binary.BigEndian.AppendUint32(nil, 2<<20)
	client.Write(append(hdr, 0, 3, 0, 12, 0, 0, 0, 1)) // Metadata v12
	c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _, err := c.readFrame(bufio.NewReaderSize(c.nc, readBufSize), time.Now().Add(2*time.Second))
	var br *badRequest
	if !errors.As(err, &br) {
		t.Fatalf("2 MiB Metadata frame: %v", err)
	}
}

// At the connection limit a new connection waits in the accept queue,
// neither served nor reset, and is served once another closes.
func TestConnectionLimitWaitsForASlot(t *testing.T) {
	s, err := NewServer(Config{Listeners: []Listener{{Name: "PLAIN", Protocol: Plaintext, Listen: "127.0.0.1:0"}},
		Backend: stubBackend{}, Limits: Limits{MaxConnections: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ask := func(c net.Conn, wait time.Duration) error {
		c.SetReadDeadline(time.Now().Add(wait))
		_, err := readSized(c)
		return err
	}
	var held []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		writeReq(t, c, int32(i), kmsg.NewPtrApiVersionsRequest())
		held = append(held, c)
	}
	for i, c := range held[:2] {
		if err := ask(c, 5*time.Second); err != nil {
			t.Fatalf("connection %d, under the limit: %v", i, err)
		}
	}
	if err := ask(held[2], 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("connection past the limit: %v, want no answer yet", err)
	}
	held[0].Close()
	if err := ask(held[2], 5*time.Second); err != nil {
		t.Fatalf("connection past the limit, after one closed: %v", err)
	}
}
