package compat

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPeersCertReloadOnSIGHUP: node 1's peer certificate is rotated on
// disk and the node gets SIGHUP. New peer connections get the new
// certificate, the cluster keeps replicating over the connections it has,
// and a node without any TLS survives SIGHUP too.
func TestPeersCertReloadOnSIGHUP(t *testing.T) {
	pki := newPeerPKI(t)
	c := startCluster(t, 3, withNodeArgs(func(id int) []string { return pki.args(t, id) }))
	createTopic(t, c, "rotate", 3, 3, nil)
	cl := newFranz(t, c)
	if acked := produceAll(t, cl, "rotate", 200, "before"); len(acked) != 200 {
		t.Fatalf("acked %d of 200", len(acked))
	}
	served := func() string {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", c.node(1).raft,
			&tls.Config{Certificates: []tls.Certificate{pki.tlsCert(t, 2)}, RootCAs: pki.ca.Pool(), ServerName: "chronik-node-1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := served()

	leaf, err := pki.ca.Issue("chronik-node-1", "chronik-node-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := leaf.WriteFiles(pki.dir, "node-1"); err != nil {
		t.Fatal(err)
	}
	nd := c.node(1)
	before := len(nd.log.lines("tls certificates reloaded"))
	if err := nd.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "node 1 to log the reload", func() bool {
		for _, l := range nd.log.lines("tls certificates reloaded")[before:] {
			if strings.Contains(l, "files=peer") {
				return true
			}
		}
		return false
	})
	if got := served(); got == first {
		t.Fatalf("node 1 still serves serial %s after SIGHUP", got)
	}
	if acked := produceAll(t, cl, "rotate", 200, "after"); len(acked) != 200 {
		t.Fatalf("acked %d of 200 after the rotation", len(acked))
	}
	for id := 1; id <= 3; id++ {
		c.waitHealthy(id, 30*time.Second)
	}
	if recs := consumeAll(t, c, "rotate", 400); len(recs) != 400 {
		t.Fatalf("consumed %d of 400", len(recs))
	}

	plain := startCluster(t, 1)
	if err := plain.node(1).cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a node killed by SIGHUP would be gone by now
	select {
	case <-plain.node(1).exited:
		t.Fatalf("a node without TLS exited on SIGHUP: %v", fmt.Sprint(plain.node(1).exitErr))
	default:
	}
	plain.waitReady(10 * time.Second)
}

// TestPeersRollingSwitchToTLS switches a loaded plaintext cluster's peers
// to mutual TLS without downtime, as README "Securing Chronik" tells an
// operator: one roll with the certificates and
// --peer-tls-accept-plaintext, a second without it. Every acknowledged
// record is kept, and afterwards the nodes refuse plaintext peers.
func TestPeersRollingSwitchToTLS(t *testing.T) {
	pki := newPeerPKI(t)
	c := startCluster(t, 3)
	createTopic(t, c, "switch", 6, 3, nil)
	c.waitReady(30 * time.Second)
	l := startLoader(t, c, "switch", 1000)
	l.waitAcks(1000, 30*time.Second)
	rollStart := time.Now()
	roll := func(phase string, args func(id int) []string) {
		for _, nd := range c.nodes {
			c.stop(nd.id, 30*time.Second)
			nd.extraArgs = args(nd.id)
			c.start(nd.id)
			c.waitReady(30 * time.Second)
			for id := 1; id <= 3; id++ {
				c.waitHealthy(id, 60*time.Second)
			}
			t.Logf("%s: node %d restarted, every node healthy", phase, nd.id)
		}
	}
	roll("transition", func(id int) []string { return append(pki.args(t, id), "--peer-tls-accept-plaintext") })
	roll("TLS only", func(id int) []string { return pki.args(t, id) })
	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	stalls := l.stallsBetween(rollStart, time.Now())
	t.Logf("longest gap between acks per partition during the two rolls: %s", stallSummary(stalls))
	checkStalls(t, stalls, 2*time.Second*raceSlack, " during the switch")
	l.checkDelivered(t, c, "the switch to TLS")

	before, _ := c.metric(1, `chronik_raft_refused_peers_total{reason="tls"}`)
	conn, err := net.DialTimeout("tcp", c.node(1).raft, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	conn.Write(peerHello(2, "compat"))
	waitClosedByNode(t, conn, "a plaintext peer after the switch")
	waitFor(t, 5*time.Second, "node 1 to count the refused plaintext peer", func() bool {
		v, _ := c.metric(1, `chronik_raft_refused_peers_total{reason="tls"}`)
		return v > before
	})
}
