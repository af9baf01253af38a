package compat

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/chronik-dev/chronik/internal/testpki"
)

// peerPKI is an in-test CA and, per node, a certificate naming
// chronik-node-<id> (the README's contract), written as PEM files.
type peerPKI struct {
	ca    *testpki.CA
	dir   string
	caPEM string
}

func newPeerPKI(t *testing.T) *peerPKI {
	t.Helper()
	ca, err := testpki.NewCA("chronik-peers")
	if err != nil {
		t.Fatal(err)
	}
	p := &peerPKI{ca: ca, dir: t.TempDir()}
	if p.caPEM, err = ca.WriteFile(p.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *peerPKI) nodeFiles(t testing.TB, id int) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(p.dir, fmt.Sprintf("node-%d.crt", id)), filepath.Join(p.dir, fmt.Sprintf("node-%d.key", id))
	if _, err := os.Stat(cert); err == nil {
		return cert, key
	}
	leaf, err := p.ca.Issue(fmt.Sprintf("chronik-node-%d", id), fmt.Sprintf("chronik-node-%d", id))
	if err != nil {
		t.Fatal(err)
	}
	if cert, key, err = leaf.WriteFiles(p.dir, fmt.Sprintf("node-%d", id)); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (p *peerPKI) args(t testing.TB, id int) []string {
	cert, key := p.nodeFiles(t, id)
	return []string{"--peer-tls-cert", cert, "--peer-tls-key", key, "--peer-tls-ca", p.caPEM}
}

func (p *peerPKI) tlsCert(t testing.TB, id int) tls.Certificate {
	t.Helper()
	cert, key := p.nodeFiles(t, id)
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// peerHello is the transport hello (raft/transport.go): "CHRK", u16
// version 2, u64 node id, u64 incarnation, u8 length, cluster id.
func peerHello(from uint64, cluster string) []byte {
	b := []byte("CHRK")
	b = binary.BigEndian.AppendUint16(b, 2)
	b = binary.BigEndian.AppendUint64(b, from)
	b = binary.BigEndian.AppendUint64(b, 0xC0FFEE)
	b = append(b, byte(len(cluster)))
	return append(b, cluster...)
}

// raftFrame is one messages frame carrying m for group, protobuf encoded.
func raftFrame(t testing.TB, group uint64, m *pb.Message) []byte {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	data = append([]byte{0}, data...) // codec 0: protobuf
	body := binary.BigEndian.AppendUint64(nil, group)
	body = binary.BigEndian.AppendUint16(body, 0)
	body = binary.BigEndian.AppendUint32(body, uint32(len(data)))
	body = append(body, data...)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	frame = append(frame, 1)
	return append(frame, body...)
}

func raftMsg(typ pb.MessageType, from, to, term uint64) *pb.Message {
	return &pb.Message{Type: typ.Enum(), From: proto.Uint64(from), To: proto.Uint64(to), Term: proto.Uint64(term)}
}

// forgedSnapshot is an empty metadata-group snapshot from far in the
// future. Before peers were authenticated, one such message from any host
// that reached the Raft port made the node install it and forget every
// topic (its data directory went from 49,700 to 4,240 bytes).
func forgedSnapshot(from, to uint64, size int) *pb.Message {
	m := raftMsg(pb.MsgSnap, from, to, 1<<40)
	m.Snapshot = &pb.Snapshot{Data: make([]byte, size), Metadata: &pb.SnapshotMetadata{
		Index: proto.Uint64(1 << 40), Term: proto.Uint64(1 << 40), ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}}}}
	return m
}

// waitClosedByNode reads from c until the node closes it.
func waitClosedByNode(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s: the node kept the connection open", what)
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func TestPeersMutualTLS(t *testing.T) {
	pki := newPeerPKI(t)
	c := startCluster(t, 3, withNodeArgs(func(id int) []string { return pki.args(t, id) }))
	createTopic(t, c, "peers", 3, 3, nil)
	cl := newFranz(t, c)
	if acked := produceAll(t, cl, "peers", 300, "tls"); len(acked) != 300 {
		t.Fatalf("acked %d of 300 over peer mTLS", len(acked))
	}
	for id := 1; id <= 3; id++ {
		c.waitHealthy(id, 30*time.Second)
	}
	sizes := map[int]int64{}
	for _, nd := range c.nodes {
		sizes[nd.id] = dirBytes(t, nd.dataDir)
	}
	addr := c.node(1).raft
	metric := func(name string) float64 { v, _ := c.metric(1, name); return v }
	refusedTLS := `chronik_raft_refused_peers_total{reason="tls"}`
	refusedCert := `chronik_raft_refused_peers_total{reason="certificate"}`
	rejected := "chronik_raft_rejected_messages_total"
	tls0, cert0, rej0 := metric(refusedTLS), metric(refusedCert), metric(rejected)

	t.Run("plaintext peer with a forged metadata snapshot", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		conn.Write(append(peerHello(2, "compat"), raftFrame(t, 1, forgedSnapshot(2, 1, 8<<20))...))
		waitClosedByNode(t, conn, "plaintext peer")
	})
	dialAs := func(t *testing.T, cert tls.Certificate) *tls.Conn {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
			&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pki.ca.Pool(), ServerName: "chronik-node-1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return conn
	}
	t.Run("certificate of node 2 claiming node 3", func(t *testing.T) {
		conn := dialAs(t, pki.tlsCert(t, 2))
		conn.Write(append(peerHello(3, "compat"), raftFrame(t, 1, forgedSnapshot(3, 1, 1<<10))...))
		waitClosedByNode(t, conn, "node 2 claiming node 3")
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other := newPeerPKI(t)
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
			&tls.Config{Certificates: []tls.Certificate{other.tlsCert(t, 2)}, RootCAs: pki.ca.Pool(), ServerName: "chronik-node-1"})
		if err != nil {
			return // refused in the handshake already
		}
		defer conn.Close()
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		conn.Write(peerHello(2, "compat"))
		waitClosedByNode(t, conn, "foreign CA")
	})
	t.Run("node 2 with forged From, empty proposal, oversized frame", func(t *testing.T) {
		conn := dialAs(t, pki.tlsCert(t, 2))
		var b []byte
		b = append(b, peerHello(2, "compat")...)
		b = append(b, raftFrame(t, 1, raftMsg(pb.MsgHeartbeat, 3, 1, 1<<40))...) // From is not the peer
		b = append(b, raftFrame(t, 1, raftMsg(pb.MsgProp, 2, 1, 0))...)          // no entries
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "both messages rejected", func() bool { return metric(rejected) >= rej0+2 })
		// A frame above the transport's 256 MiB bound ends the connection
		// before anything is allocated for it.
		conn.Write([]byte{0x7f, 0xff, 0xff, 0xff, 1})
		waitClosedByNode(t, conn, "oversized frame")
	})

	// A failed handshake's alert can reach the peer a moment before the
	// node counts the refusal.
	waitFor(t, 5*time.Second, refusedTLS+" to count the plaintext peer and the foreign CA", func() bool { return metric(refusedTLS) >= tls0+2 })
	waitFor(t, 5*time.Second, refusedCert+" to count node 2 claiming node 3", func() bool { return metric(refusedCert) >= cert0+1 })
	log := c.node(1).log
	if len(log.lines("raft transport refused peer")) == 0 || len(log.lines("dropping raft message")) == 0 {
		t.Errorf("node 1 logged no refused peer or dropped message")
	}
	if n := len(log.lines("installed raft snapshot")); n != 0 {
		t.Errorf("node 1 installed %d snapshots", n)
	}
	// The cluster still serves and has lost nothing.
	if acked := produceAll(t, cl, "peers", 300, "after"); len(acked) != 300 {
		t.Fatalf("acked %d of 300 after the hostile peers", len(acked))
	}
	if recs := consumeAll(t, c, "peers", 600); len(recs) != 600 {
		t.Fatalf("consumed %d of 600", len(recs))
	}
	for _, nd := range c.nodes {
		c.waitHealthy(nd.id, 30*time.Second)
		if got := dirBytes(t, nd.dataDir); got < sizes[nd.id] {
			t.Errorf("node %d data shrank from %d to %d bytes", nd.id, sizes[nd.id], got)
		}
	}

	// A real node without TLS is refused by the TLS nodes; with its
	// certificate back it rejoins.
	c.kill(3)
	nd3 := c.node(3)
	tlsArgs := nd3.extraArgs
	nd3.extraArgs = nil
	before := metric(refusedTLS)
	c.start(3)
	waitFor(t, 20*time.Second, "node 1 to refuse plaintext node 3", func() bool { return metric(refusedTLS) > before })
	if acked := produceAll(t, cl, "peers", 50, "two"); len(acked) != 50 {
		t.Fatalf("acked %d of 50 with node 3 refused", len(acked))
	}
	c.kill(3)
	nd3.extraArgs = tlsArgs
	c.start(3)
	for id := 1; id <= 3; id++ {
		c.waitHealthy(id, 60*time.Second)
	}
}

// TestPeersClusterIDChecked starts a plaintext cluster and sends it the
// hello of another cluster's node 2.
func TestPeersClusterIDChecked(t *testing.T) {
	c := startCluster(t, 1)
	conn, err := net.DialTimeout("tcp", c.node(1).raft, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(append(peerHello(1, "another"), raftFrame(t, 1, forgedSnapshot(1, 1, 1<<10))...))
	waitClosedByNode(t, conn, "peer of another cluster")
	waitFor(t, 5*time.Second, "the refusal counted", func() bool {
		v, _ := c.metric(1, `chronik_raft_refused_peers_total{reason="cluster"}`)
		return v == 1
	})
}
