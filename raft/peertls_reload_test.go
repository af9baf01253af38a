package raft

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/chronik-dev/chronik/internal/testpki"
)

// issueFiles writes a new certificate for node id into dir (the same
// file names each time, as an operator's rotation does) and returns its
// serial number.
func issueFiles(t *testing.T, ca *testpki.CA, dir string, id uint64) *big.Int {
	t.Helper()
	leaf, err := ca.Issue(NodeCertName(id), NodeCertName(id))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := leaf.WriteFiles(dir, "node"); err != nil {
		t.Fatal(err)
	}
	c, err := leaf.TLS()
	if err != nil {
		t.Fatal(err)
	}
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.SerialNumber
}

// loadFiles is LoadPeerTLS of the files issueFiles wrote.
func loadFiles(t *testing.T, ca *testpki.CA, dir string) *PeerTLS {
	t.Helper()
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	p, err := LoadPeerTLS(dir+"/node.crt", dir+"/node.key", caFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sendUntilArrives sends from a to b's node until a message arrives (the first
// dial may drop it, as Raft's resends would cover).
func sendUntilArrives(t *testing.T, a *TCPTransport, to uint64, rb *recorder) {
	t.Helper()
	want := rb.count() + 1
	for i := 0; rb.count() < want; i++ {
		if i == 50 {
			t.Fatal("nothing arrived")
		}
		a.Send(to, []WireMsg{{Group: 1, Channel: 3, Data: []byte("x")}})
		select {
		case <-rb.got:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// servedSerial is the serial of the certificate node 1 serves a new
// inbound connection with.
func servedSerial(t *testing.T, addr string, ca *testpki.CA, client *PeerTLS) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{client.Cert}, RootCAs: ca.Pool(), ServerName: NodeCertName(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestPeerTLSReload: a node's peer certificate is rotated on disk. After
// Reload (SIGHUP), and after a file change without one, new connections in
// both directions use the new certificate, and the established connection
// keeps carrying messages without a reconnect.
func TestPeerTLSReload(t *testing.T) {
	ca, err := testpki.NewCA("peers")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	first := issueFiles(t, ca, dir, 1)
	p1 := loadFiles(t, ca, dir)
	addrs := freeAddrs(t, 3)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	a, _ := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1", TLS: p1})
	// Node 2 does not know node 3, so only node 1 dials it.
	_, rb := startTransport(t, 2, map[uint64]string{1: addrs[0], 2: addrs[1]}, PeerSecurity{ClusterID: "c1", TLS: peerTLS(t, ca, 2)})
	sendUntilArrives(t, a, 2, rb)
	<-rb.ups // node 2 saw node 1 connect
	if got := servedSerial(t, a.Addr(), ca, peerTLS(t, ca, 2)); got.Cmp(first) != 0 {
		t.Fatalf("served serial %v, want %v", got, first)
	}

	// Node 3 is a bare TLS listener that records the client certificate
	// node 1 dials it with.
	node3 := peerTLS(t, ca, 3)
	ln, err := tls.Listen("tcp", addrs[2], &tls.Config{Certificates: []tls.Certificate{node3.Cert},
		ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialedWith := make(chan *big.Int, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.Handshake() == nil {
				dialedWith <- tc.ConnectionState().PeerCertificates[0].SerialNumber
			}
			tc.Close()
		}
	}()
	// dialedWithSerial waits until node 1 dials node 3 with the
	// certificate want. Node 1 redials node 3, which hangs up each time;
	// a dial begun before a reload may still show the previous one.
	dialedWithSerial := func(want *big.Int) {
		t.Helper()
		var seen []*big.Int
		for i := 0; i < 50; i++ {
			a.Send(3, []WireMsg{{Group: 1, Channel: 3, Data: []byte("x")}})
			select {
			case s := <-dialedWith:
				if s.Cmp(want) == 0 {
					return
				}
				seen = append(seen, s)
			case <-time.After(200 * time.Millisecond):
			}
		}
		t.Fatalf("node 1 never dialed node 3 with serial %v (dialed with %v)", want, seen)
	}
	dialedWithSerial(first)

	second := issueFiles(t, ca, dir, 1)
	if err := p1.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, a.Addr(), ca, peerTLS(t, ca, 2)); got.Cmp(second) != 0 {
		t.Fatalf("after Reload served serial %v, want %v", got, second)
	}
	// Node 3 hangs up every connection: the next dials are new ones.
	dialedWithSerial(second)
	// The connection to node 2 predates the reload and still carries
	// messages: node 2 sees no new connection.
	sendUntilArrives(t, a, 2, rb)
	select {
	case <-rb.ups:
		t.Fatal("node 1 reconnected to node 2 after the reload")
	default:
	}

	// Changed files are read again without a Reload.
	third := issueFiles(t, ca, dir, 1)
	future := time.Now().Add(time.Minute)
	for _, f := range []string{dir + "/node.crt", dir + "/node.key"} {
		if err := os.Chtimes(f, future, future); err != nil {
			t.Fatal(err)
		}
	}
	p1.files.LookNext() // as if the once-a-second look were due
	if got := servedSerial(t, a.Addr(), ca, peerTLS(t, ca, 2)); got.Cmp(third) != 0 {
		t.Fatalf("after the files changed served serial %v, want %v", got, third)
	}

	// A broken file keeps the certificate that works.
	if err := os.WriteFile(dir+"/node.crt", []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p1.Reload(); err == nil {
		t.Fatal("a broken certificate file reloaded")
	}
	if got := servedSerial(t, a.Addr(), ca, peerTLS(t, ca, 2)); got.Cmp(third) != 0 {
		t.Fatalf("after a failed reload served serial %v, want %v", got, third)
	}
	sendUntilArrives(t, a, 2, rb)
}
