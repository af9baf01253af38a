package raft

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chronik-dev/chronik/internal/pemfiles"
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
//
// Switching a running cluster to TLS (or back) one node at a time needs a
// node that speaks both: PeerSecurity.AcceptPlaintext. Such a node takes
// TLS peers and plaintext ones (told apart by the first byte: a TLS
// record starts with 0x16, a hello with "C"), and dials TLS first, then
// plaintext when the TLS handshake fails. Its plaintext peers are checked
// by cluster id only, as without TLS; TLS peers still by certificate.

// PeerSecurity configures how a TCPTransport authenticates its peers.
type PeerSecurity struct {
	// ClusterID is sent to every peer and checked when a peer states
	// one; at most 255 bytes.
	ClusterID string
	// TLS, when set, makes both directions mutual TLS.
	TLS *PeerTLS
	// AcceptPlaintext, with TLS, is the transition mode (see above).
	AcceptPlaintext bool
}

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// secureInbound runs the TLS handshake of an accepted connection, within
// the hello deadline already set on c. It returns the connection to read
// the hello from and, when TLS, the TLS connection (nil in plaintext).
func (t *TCPTransport) secureInbound(c net.Conn) (net.Conn, *tls.Conn, error) {
	if t.sec.TLS == nil {
		return c, nil, nil
	}
	if t.sec.AcceptPlaintext {
		var first [1]byte
		if _, err := io.ReadFull(c, first[:]); err != nil {
			return nil, nil, refuse(RefusedHello, "%v", err)
		}
		c = &replayConn{Conn: c, first: first[:]}
		if first[0] != tlsRecordHandshake {
			return c, nil, nil
		}
	}
	tc := tls.Server(c, t.sec.TLS.serverConfig())
	ctx, cancel := context.WithTimeout(t.ctx, helloTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, refuse(RefusedTLS, "%v", err)
	}
	return tc, tc, nil
}

// replayConn gives back the bytes secureInbound looked at before the rest.
type replayConn struct {
	net.Conn
	first []byte
}

func (r *replayConn) Read(b []byte) (int, error) {
	if len(r.first) > 0 {
		n := copy(b, r.first)
		r.first = r.first[n:]
		return n, nil
	}
	return r.Conn.Read(b)
}

// dialPeer connects to node to at addr, over TLS when configured; in the
// transition mode a failed TLS handshake is followed by a plaintext dial
// (the peer may not have TLS yet).
func (t *TCPTransport) dialPeer(ctx context.Context, addr string, to uint64) (c net.Conn, overTLS bool, err error) {
	dial := func() (net.Conn, error) {
		d := net.Dialer{Timeout: dialTimeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		return c, nil
	}
	if c, err = dial(); err != nil || t.sec.TLS == nil {
		return c, false, err
	}
	tc := tls.Client(c, t.sec.TLS.clientConfig(to))
	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err == nil {
		return tc, true, nil
	}
	c.Close()
	if !t.sec.AcceptPlaintext || ctx.Err() != nil {
		return nil, false, err
	}
	t.logger.Debug("raft transport: TLS to peer failed, dialing plaintext (transition mode)", "peer", to, "err", err)
	c, err = dial()
	return c, false, err
}

// PeerTLS is this node's certificate and the CA its peers' chain to.
// Loaded from files (LoadPeerTLS), they are read again on Reload and when
// the files change, looked at on each new connection at most once a
// second: new connections, in and out, use the new certificate and CA;
// established ones keep the session they have.
type PeerTLS struct {
	Cert tls.Certificate
	CA   *x509.CertPool
	// files, when set, supersedes Cert and CA.
	files *pemfiles.Files
}

// NodeCertName is the DNS name node id's peer certificate must carry.
func NodeCertName(id uint64) string { return "chronik-node-" + strconv.FormatUint(id, 10) }

// LoadPeerTLS reads a PEM certificate, key and CA bundle; logger hears of
// reloads.
func LoadPeerTLS(certFile, keyFile, caFile string, logger *slog.Logger) (*PeerTLS, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("raft: peer TLS needs a certificate, a key and a CA")
	}
	f := &pemfiles.Files{CertFile: certFile, KeyFile: keyFile, CAFile: caFile, What: "peer", Logger: logger}
	if err := f.Load(); err != nil {
		return nil, fmt.Errorf("raft: peer %w", err)
	}
	return &PeerTLS{files: f}, nil
}

// Reload reads the files again (SIGHUP); a failure keeps the previous
// certificates. Without files there is nothing to do.
func (p *PeerTLS) Reload() error {
	if p.files == nil {
		return nil
	}
	return p.files.Reload()
}

// current is the certificate and CA to use for a new connection.
func (p *PeerTLS) current() (tls.Certificate, *x509.CertPool) {
	if p.files == nil {
		return p.Cert, p.CA
	}
	l := p.files.Current()
	return l.Cert, l.CA
}

// serverConfig is the listener's: a client certificate is required and
// must chain to the CA; which id it names is checked after the hello.
func (p *PeerTLS) serverConfig() *tls.Config {
	cert, ca := p.current()
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: ca,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// clientConfig is for dialing node to: its certificate must name it.
func (p *PeerTLS) clientConfig(to uint64) *tls.Config {
	cert, ca := p.current()
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca,
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
