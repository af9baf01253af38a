package raft

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/chronik-dev/chronik/internal/testpki"
)

// oldHello is the previous release's hello (version 1, no cluster id).
func oldHello(from uint64) []byte {
	b := []byte(wireMagic)
	b = binary.BigEndian.AppendUint16(b, wireVersionV1)
	b = binary.BigEndian.AppendUint64(b, from)
	return binary.BigEndian.AppendUint64(b, 77)
}

func frameOf(msgs ...WireMsg) []byte {
	_, parts := buildFrame(msgs, nil, nil)
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func clusterFrame(id string) []byte {
	return frameOf(WireMsg{Channel: chanClusterID, Data: []byte(id)})
}

func join(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// waitMsgs waits until rec holds n messages.
func waitMsgs(t *testing.T, rec *recorder, n int) []WireMsg {
	t.Helper()
	waitFor(t, 10*time.Second, "messages delivered", func() bool { return rec.count() >= n })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]WireMsg(nil), rec.msgs...)
}

// TestPeerV1Accepted: a plaintext node takes the previous release's hello
// (no cluster id) and delivers what follows; one that states its cluster
// id after a v1 hello is taken, and the statement is not delivered.
func TestPeerV1Accepted(t *testing.T) {
	addrs := freeAddrs(t, 3)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	tr, rec := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1"})
	for i, tc := range []struct {
		from uint64
		send []byte
	}{
		{2, join(oldHello(2), frameOf(WireMsg{Group: 4, Channel: 5, Data: []byte("old")}))},
		{3, join(oldHello(3), clusterFrame("c1"), frameOf(WireMsg{Group: 4, Channel: 5, Data: []byte("new")}))},
	} {
		c, err := net.Dial("tcp", tr.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(tc.send); err != nil {
			t.Fatal(err)
		}
		msgs := waitMsgs(t, rec, i+1)
		if len(msgs) != i+1 || msgs[i].Channel != 5 {
			t.Fatalf("from node %d got %+v", tc.from, msgs)
		}
		rec.mu.Lock()
		up := rec.up[tc.from]
		rec.mu.Unlock()
		if !up {
			t.Fatalf("node %d not up", tc.from)
		}
	}
	for reason, v := range tr.RefusedPeers() {
		if v != 0 {
			t.Fatalf("refused %s: %d", reason, v)
		}
	}
}

// TestPeerV1OtherClusterRefused: a peer that says a v1 hello and then
// another cluster id is refused before it is up, and so is an old-style
// peer that states another cluster id later on.
func TestPeerV1OtherClusterRefused(t *testing.T) {
	addrs := freeAddrs(t, 3)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1], 3: addrs[2]}
	tr, rec := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1"})

	c, err := net.Dial("tcp", tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(join(oldHello(2), clusterFrame("c2"), frameOf(WireMsg{Group: 1, Channel: 5, Data: []byte("forged")})))
	expectClosed(t, c)
	if got := tr.RefusedPeers()[RefusedCluster]; got != 1 {
		t.Fatalf("refused cluster: %d, want 1", got)
	}
	rec.mu.Lock()
	up, n := len(rec.up), len(rec.msgs)
	rec.mu.Unlock()
	if up != 0 || n != 0 {
		t.Fatalf("a peer of another cluster got through: up %d, %d messages", up, n)
	}

	late, err := net.Dial("tcp", tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	late.Write(join(oldHello(3), frameOf(WireMsg{Group: 1, Channel: 5, Data: []byte("first")}), clusterFrame("c2"),
		frameOf(WireMsg{Group: 1, Channel: 5, Data: []byte("after")})))
	expectClosed(t, late)
	if got := tr.RefusedPeers()[RefusedCluster]; got != 2 {
		t.Fatalf("refused cluster: %d, want 2", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, m := range rec.msgs {
		if string(m.Data) != "first" {
			t.Fatalf("delivered %q from a peer of another cluster", m.Data)
		}
	}
}

// TestPeerV1RefusedOverTLS: a TLS node keeps requiring the v2 hello, even
// from a peer with a good certificate.
func TestPeerV1RefusedOverTLS(t *testing.T) {
	ca, err := testpki.NewCA("peers")
	if err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 2)
	peers := map[uint64]string{1: addrs[0], 2: addrs[1]}
	tr, rec := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1", TLS: peerTLS(t, ca, 1)})
	cert := peerTLS(t, ca, 2)
	c, err := tls.Dial("tcp", tr.Addr(), &tls.Config{Certificates: []tls.Certificate{cert.Cert}, RootCAs: ca.Pool(), ServerName: NodeCertName(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(join(oldHello(2), clusterFrame("c1"), frameOf(WireMsg{Group: 1, Channel: 5, Data: []byte("x")})))
	expectClosed(t, c)
	waitFor(t, 5*time.Second, "refusal counted", func() bool { return tr.RefusedPeers()[RefusedHello] == 1 })
	if rec.count() != 0 || len(rec.up) != 0 {
		t.Fatal("a v1 hello got through to a TLS node")
	}
}

// TestPeerHelloOldNodesRead reads what a plaintext node dials with as the
// previous release does: a 22-byte version 1 hello, then frames of known
// types, the first carrying the cluster id on a notice channel.
func TestPeerHelloOldNodesRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addrs := freeAddrs(t, 1)
	peers := map[uint64]string{1: addrs[0], 2: ln.Addr().String()}
	tr, _ := startTransport(t, 1, peers, PeerSecurity{ClusterID: "c1"})
	tr.Send(2, []WireMsg{{Group: 9, Channel: 5, Data: []byte("after")}})
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	hello := make([]byte, helloV1Size)
	if _, err := io.ReadFull(r, hello); err != nil {
		t.Fatal(err)
	}
	if string(hello[:4]) != wireMagic || binary.BigEndian.Uint16(hello[4:]) != 1 || binary.BigEndian.Uint64(hello[6:]) != 1 {
		t.Fatalf("hello % x", hello)
	}
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		t.Fatal(err)
	}
	if hdr[4] != frameMsgs {
		t.Fatalf("first frame of type %d", hdr[4])
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr))
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	msgs, err := decodeMsgs(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Group != 0 || msgs[0].Channel != chanClusterID || string(msgs[0].Data) != "c1" {
		t.Fatalf("first frame %+v", msgs)
	}
}
