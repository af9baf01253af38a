package raft

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chronik-dev/chronik/internal/testpki"
)

// recorder is a TransportHandler that remembers what arrived.
type recorder struct {
	mu   sync.Mutex
	msgs []WireMsg
	up   map[uint64]bool
	got  chan struct{}
	ups  chan uint64
}

func newRecorder() *recorder {
	return &recorder{up: map[uint64]bool{}, got: make(chan struct{}, 64), ups: make(chan uint64, 64)}
}

func (r *recorder) Receive(from uint64, msgs []WireMsg) {
	r.mu.Lock()
	r.msgs = append(r.msgs, msgs...)
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
}
func (r *recorder) PeerDown(uint64, bool) {}
func (r *recorder) PeerUp(id uint64) {
	r.mu.Lock()
	r.up[id] = true
	r.mu.Unlock()
	select {
	case r.ups <- id:
	default:
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ln.Addr().String())
		ln.Close()
	}
	return out
}

func peerTLS(t *testing.T, ca *testpki.CA, id uint64) *PeerTLS {
	t.Helper()
	leaf, err := ca.Issue(NodeCertName(id), NodeCertName(id))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := leaf.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return &PeerTLS{Cert: cert, CA: ca.Pool()}
}

// startTransport starts node id of peers with sec and a recorder.
func startTransport(t *testing.T, id uint64, peers map[uint64]string, sec PeerSecurity) (*TCPTransport, *recorder) {
	t.Helper()
	tr := NewTCPTransport(id, peers[id], peers, nil)
	if err := tr.Secure(sec); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	if err := tr.Start(rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, rec
}

func TestPeerTLSDelivers(t *testing.T) {
	ca, err := testpki.NewCA("peers")
	if err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 2)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1]}
	a, _ := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1", TLS: peerTLS(t, ca, 1)})
	_, rb := startTransport(t, 2, peers, PeerSecurity{ClusterID: "c1", TLS: peerTLS(t, ca, 2)})
	// A message sent while the first dial fails is dropped (Raft
	// resends): resend, a bounded number of times, until one arrives.
	for i := 0; rb.count() == 0; i++ {
		if i == 50 {
			t.Fatal("nothing arrived over TLS")
		}
		a.Send(2, []WireMsg{{Group: 7, Channel: 3, Data: []byte("hello")}})
		select {
		case <-rb.got:
		case <-time.After(200 * time.Millisecond):
		}
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if m := rb.msgs[0]; m.Group != 7 || string(m.Data) != "hello" {
		t.Fatalf("got %+v", m)
	}
}

// hostileHello is a hello claiming node from of cluster.
func hostileHello(from uint64, cluster string) []byte {
	b := make([]byte, helloSize)
	copy(b, wireMagic)
	binary.BigEndian.PutUint16(b[4:], wireVersion)
	binary.BigEndian.PutUint64(b[6:], from)
	binary.BigEndian.PutUint64(b[14:], 99)
	b[22] = byte(len(cluster))
	return append(b, cluster...)
}

// helloThenFrame is a hello followed by one message frame that would be
// delivered if the hello were accepted.
func helloThenFrame(from uint64, cluster string) []byte {
	b := hostileHello(from, cluster)
	_, parts := buildFrame([]WireMsg{{Group: 1, Channel: 5, Data: []byte("forged")}}, nil, nil)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// expectClosed reads from c until the node closes it.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the node kept a refused connection open")
	}
}

func TestPeerRefused(t *testing.T) {
	ca, err := testpki.NewCA("peers")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.NewCA("another")
	if err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 4)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	secure, srec := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1", TLS: peerTLS(t, ca, 1)})
	plainPeers := map[uint64]string{1: addrs[3], 2: addrs[1], 3: addrs[2]}
	plain, prec := startTransport(t, 1, plainPeers, PeerSecurity{ClusterID: "c1"})

	tlsDial := func(t *testing.T, addr string, cert *PeerTLS) net.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert.Cert}, RootCAs: ca.Pool(), ServerName: NodeCertName(1)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	plainDial := func(t *testing.T, addr string) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name   string
		tr     *TCPTransport
		reason string
		dial   func(t *testing.T) net.Conn
		send   []byte
	}{
		{"plaintext peer to a TLS node", secure, RefusedTLS,
			func(t *testing.T) net.Conn { return plainDial(t, secure.Addr()) }, helloThenFrame(2, "c1")},
		{"certificate of node 2 claiming node 3", secure, RefusedCertificate,
			func(t *testing.T) net.Conn { return tlsDial(t, secure.Addr(), peerTLS(t, ca, 2)) }, helloThenFrame(3, "c1")},
		{"certificate from another CA", secure, RefusedTLS,
			func(t *testing.T) net.Conn {
				c, err := tls.Dial("tcp", secure.Addr(), &tls.Config{Certificates: []tls.Certificate{peerTLS(t, other, 2).Cert}, InsecureSkipVerify: true})
				if err != nil {
					t.Fatal(err)
				}
				return c
			}, helloThenFrame(2, "c1")},
		{"TLS peer to a plaintext node", plain, RefusedHello,
			func(t *testing.T) net.Conn { return plainDial(t, plain.Addr()) },
			// The first bytes of a TLS ClientHello: a handshake record.
			[]byte{0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"plaintext peer of another cluster", plain, RefusedCluster,
			func(t *testing.T) net.Conn { return plainDial(t, plain.Addr()) }, helloThenFrame(2, "c2")},
		{"plaintext peer that is not in the cluster", plain, RefusedUnknownNode,
			func(t *testing.T) net.Conn { return plainDial(t, plain.Addr()) }, helloThenFrame(9, "c1")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.tr.RefusedPeers()[tc.reason]
			c := tc.dial(t)
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			c.Write(tc.send) // the node may close before it has read all
			expectClosed(t, c)
			// A failed handshake sends its alert before the node counts
			// it: the count may trail the close by a moment.
			waitFor(t, 5*time.Second, "refusal counted", func() bool { return tc.tr.RefusedPeers()[tc.reason] >= before+1 })
			if got := tc.tr.RefusedPeers()[tc.reason]; got != before+1 {
				t.Fatalf("refused %s: %d, want %d (all: %v)", tc.reason, got, before+1, tc.tr.RefusedPeers())
			}
		})
	}
	if srec.count() != 0 || prec.count() != 0 || len(srec.up)+len(prec.up) != 0 {
		t.Fatalf("a refused peer got through: %d, %d messages, up %v %v", srec.count(), prec.count(), srec.up, prec.up)
	}
}

// TestPeerFrameGrowsAsBytesArrive declares the largest frame from many
// connections and sends a few bytes of it: the node must not allocate
// what was declared.
func TestPeerFrameGrowsAsBytesArrive(t *testing.T) {
	addrs := freeAddrs(t, 5)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2], 4: addrs[3], 5: addrs[4]}
	tr, _ := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1"})
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	const conns = 16
	var open []net.Conn
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", tr.Addr())
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		b := hostileHello(2+uint64(i%4), "c1")           // within maxConnsPerPeer each
		b = append(b, 0x10, 0, 0, 0, frameMsgs, 1, 2, 3) // 256 MiB declared
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// The node never answers; waiting out a short read deadline on each
	// connection gives it time to read what was sent.
	deadline := time.Now().Add(500 * time.Millisecond)
	for _, c := range open {
		c.SetReadDeadline(deadline)
		bufio.NewReader(c).ReadByte()
	}
	runtime.ReadMemStats(&ms)
	if grown := ms.TotalAlloc - before; grown > 64<<20 {
		t.Fatalf("%d half-sent 256 MiB frames cost %d MiB", conns, grown>>20)
	}
	for _, c := range open {
		c.Close()
	}
}

// TestPeerConnectionsBounded opens more connections as one node than a
// node keeps: the one past the bound is refused.
func TestPeerConnectionsBounded(t *testing.T) {
	addrs := freeAddrs(t, 2)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1]}
	tr, rec := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1"})
	for i := 0; i < maxConnsPerPeer; i++ {
		c, err := net.Dial("tcp", tr.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(hostileHello(2, "c1")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-rec.ups:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %d not taken", i+1)
		}
	}
	c, err := net.Dial("tcp", tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(hostileHello(2, "c1"))
	expectClosed(t, c)
	if got := tr.RefusedPeers()[RefusedTooMany]; got != 1 {
		t.Fatalf("refused too_many: %d, want 1", got)
	}
}

// TestPeerHelloSlotsBounded holds every hello slot with silent
// connections: the next connection is closed at once, and a peer that
// says hello gets in again once the silent ones are gone.
func TestPeerHelloSlotsBounded(t *testing.T) {
	addrs := freeAddrs(t, 2)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1]}
	tr, rec := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1"})
	var silent []net.Conn
	for i := 0; i < maxUnhelloed; i++ {
		c, err := net.Dial("tcp", tr.Addr())
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	// The listener accepts in order, so this one comes after the others.
	c, err := net.Dial("tcp", tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(hostileHello(2, "c1"))
	expectClosed(t, c)
	c.Close()
	if got := tr.RefusedPeers()[RefusedTooMany]; got != 1 {
		t.Fatalf("refused too_many: %d, want 1", got)
	}
	for _, s := range silent {
		s.Close()
	}
	// The slots free as the node sees the closes; a bounded number of
	// attempts lets it catch up.
	for attempt := 0; ; attempt++ {
		c, err := net.Dial("tcp", tr.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(hostileHello(2, "c1"))
		select {
		case <-rec.ups:
			return
		case <-time.After(200 * time.Millisecond):
		}
		if attempt == 20 {
			t.Fatal("a peer's hello was not taken after the silent connections closed")
		}
	}
}
