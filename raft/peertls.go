package raft

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Peer authentication. Every hello names the sender's node id, and the
// sender states the cluster id (in a v2 hello, or in plaintext in the
// first frame after a v1 hello, see transport.go); a peer of another
// cluster or an unknown node is refused. A plaintext peer of the previous
// release states no cluster id and is accepted.
// With PeerSecurity.TLS set, both directions run mutual TLS against one CA,
// and a node's id is bound to its certificate: the certificate must carry
// the DNS name NodeCertName(id) ("chronik-node-<id>"). The listener refuses
// a peer whose certificate does not name the id its hello claims, so the
// connection's id, which Receive compares with each message's From, is the
// authenticated one. A TLS node refuses plaintext peers (their hello is
// not a TLS handshake) and a plaintext node refuses TLS peers (a
// ClientHello is not a hello).

// PeerSecurity configures how a TCPTransport authenticates its peers.
type PeerSecurity struct {
	// ClusterID is sent to every peer and checked when a peer states
	// one; at most 255 bytes.
	ClusterID string
	// TLS, when set, makes both directions mutual TLS.
	TLS *PeerTLS
}

// PeerTLS is this node's certificate and the CA its peers' chain to.
type PeerTLS struct {
	Cert tls.Certificate
	CA   *x509.CertPool
}

// NodeCertName is the DNS name node id's peer certificate must carry.
func NodeCertName(id uint64) string { return "chronik-node-" + strconv.FormatUint(id, 10) }

// LoadPeerTLS reads a PEM certificate, key and CA bundle.
func LoadPeerTLS(certFile, keyFile, caFile string) (*PeerTLS, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("raft: peer TLS needs a certificate, a key and a CA")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("raft: peer TLS: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("raft: peer TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("raft: peer TLS CA %s: no PEM certificate", caFile)
	}
	return &PeerTLS{Cert: cert, CA: pool}, nil
}

// serverConfig is the listener's: a client certificate is required and
// must chain to the CA; which id it names is checked after the hello.
func (p *PeerTLS) serverConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Cert}, ClientCAs: p.CA,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// clientConfig is for dialing node to: its certificate must name it.
func (p *PeerTLS) clientConfig(to uint64) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Cert}, RootCAs: p.CA,
		ServerName: NodeCertName(to), MinVersion: tls.VersionTLS12}
}

// certNames reports whether the verified peer certificate of c names node id.
func certNames(c *tls.Conn, id uint64) error {
	st := c.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	return st.PeerCertificates[0].VerifyHostname(NodeCertName(id))
}

// Reasons a peer connection is refused, the label of the refused-peers count.
const (
	RefusedTLS         = "tls"          // no TLS, or a handshake or chain that failed
	RefusedCertificate = "certificate"  // the certificate does not name the claimed node
	RefusedHello       = "hello"        // not a hello, or a version this node does not speak
	RefusedCluster     = "cluster"      // a hello from another cluster
	RefusedUnknownNode = "unknown_node" // a node id not in the cluster config
	RefusedTooMany     = "too_many"     // more inbound connections than allowed
	RefusedIncarnation = "incarnation"  // a retired data directory incarnation (a replaced disk)
)

// RefusedReasons lists every reason, for exporting zero counts.
var RefusedReasons = []string{RefusedTLS, RefusedCertificate, RefusedHello, RefusedCluster, RefusedUnknownNode, RefusedTooMany, RefusedIncarnation}

// refusals counts refused peer connections by reason and rate-limits the
// warnings about them, so a hostile host cannot flood the log.
type refusals struct {
	mu      sync.Mutex
	counts  map[string]uint64
	lastLog atomic.Int64
}

func (r *refusals) add(reason string) {
	r.mu.Lock()
	if r.counts == nil {
		r.counts = map[string]uint64{}
	}
	r.counts[reason]++
	r.mu.Unlock()
}

func (r *refusals) logNow() bool {
	now := time.Now().UnixNano()
	last := r.lastLog.Load()
	return now-last >= int64(time.Second) && r.lastLog.CompareAndSwap(last, now)
}

// refusedError is why serveConn refused a connection.
type refusedError struct {
	reason string
	err    error
}

func (e *refusedError) Error() string { return "peer refused (" + e.reason + "): " + e.err.Error() }

func refuse(reason string, format string, args ...any) error {
	return &refusedError{reason: reason, err: fmt.Errorf(format, args...)}
}

// RefusedPeers is how many inbound peer connections were refused, by reason.
func (t *TCPTransport) RefusedPeers() map[string]uint64 {
	t.refused.mu.Lock()
	defer t.refused.mu.Unlock()
	out := make(map[string]uint64, len(RefusedReasons))
	for _, r := range RefusedReasons {
		out[r] = t.refused.counts[r]
	}
	return out
}
