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
