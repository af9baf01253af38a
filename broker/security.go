package broker

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronik-dev/chronik/admin"
	"github.com/chronik-dev/chronik/raft"
)

// SecurityConfig is how peers and admin clients are authenticated. Empty,
// peers are checked by cluster id only and the admin server is open.
type SecurityConfig struct {
	// PeerTLSCert, PeerTLSKey and PeerTLSCA (PEM files), all set, make the
	// Raft transport mutual TLS; the certificate must carry the DNS name
	// chronik-node-<id> (raft.NodeCertName).
	PeerTLSCert, PeerTLSKey, PeerTLSCA string
	// PeerTLSAcceptPlaintext is the transition mode for switching a
	// running cluster's peers to TLS (or back) one node at a time: TLS
	// and plaintext peers are both taken, and TLS is dialed first (see
	// raft/peertls.go and README "Securing Chronik").
	PeerTLSAcceptPlaintext bool
	// AdminTLSCert and AdminTLSKey make the admin server HTTPS;
	// AdminClientCA lets a client certificate it signed stand in for the
	// token.
	AdminTLSCert, AdminTLSKey, AdminClientCA string
	// AdminToken (or the first line of AdminTokenFile) is the bearer token
	// required on every admin endpoint but /health and /ready.
	AdminToken, AdminTokenFile string
	// AdminPprof serves /debug/pprof/.
	AdminPprof bool
}

var (
	refusedPeersDesc = prometheus.NewDesc("chronik_raft_refused_peers_total",
		"Inbound Raft peer connections refused, by reason (tls, certificate, hello, cluster, unknown_node, too_many).",
		[]string{"reason"}, nil)
	rejectedMsgsDesc = prometheus.NewDesc("chronik_raft_rejected_messages_total",
		"Raft messages from peers dropped before they reached Raft (forged sender, empty proposal, ...).", nil, nil)
	retiredMsgsDesc = prometheus.NewDesc("chronik_raft_retired_messages_total",
		"Raft messages dropped because they came from a retired incarnation of a peer (a replaced disk).", nil, nil)
	refillMsgsDesc = prometheus.NewDesc("chronik_raft_refill_messages_total",
		"Appends a leader sent again to a follower that lacked entries it had counted as stored there (a wiped disk).", nil, nil)
	behindRefillsDesc = prometheus.NewDesc("chronik_raft_behind_refills_total",
		"Refills a leader started for a follower whose next entries were no longer in the entry cache (read off the Raft workers).", nil, nil)
	stepDownsDesc = prometheus.NewDesc("chronik_raft_step_downs_total",
		"Times a replica on this node stopped leading, by reason: quorum (CheckQuorum, a quorum of voters silent for an election timeout) or term (a higher term, a leadership transfer).",
		[]string{"reason"}, nil)
	adminUnauthorizedDesc = prometheus.NewDesc("chronik_admin_unauthorized_total",
		"Admin HTTP requests refused for want of a token or client certificate.", nil, nil)
)

// securityCollector exports the counts of refused peers and requests.
type securityCollector struct{ b *Broker }

func (c securityCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- refusedPeersDesc
	ch <- rejectedMsgsDesc
	ch <- retiredMsgsDesc
	ch <- refillMsgsDesc
	ch <- stepDownsDesc
	ch <- behindRefillsDesc
	ch <- adminUnauthorizedDesc
}

func (c securityCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range c.b.tr.RefusedPeers() {
		ch <- prometheus.MustNewConstMetric(refusedPeersDesc, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(rejectedMsgsDesc, prometheus.CounterValue, float64(c.b.host.RejectedMessages()))
	ch <- prometheus.MustNewConstMetric(retiredMsgsDesc, prometheus.CounterValue, float64(c.b.host.RetiredMessages()))
	ch <- prometheus.MustNewConstMetric(refillMsgsDesc, prometheus.CounterValue, float64(c.b.host.RefillMessages()))
	ch <- prometheus.MustNewConstMetric(behindRefillsDesc, prometheus.CounterValue, float64(c.b.host.BehindRefills()))
	for reason, n := range c.b.host.StepDowns() {
		ch <- prometheus.MustNewConstMetric(stepDownsDesc, prometheus.CounterValue, float64(n), reason)
	}
	var unauth uint64
	if c.b.admin != nil {
		unauth = c.b.admin.Unauthorized()
	}
	ch <- prometheus.MustNewConstMetric(adminUnauthorizedDesc, prometheus.CounterValue, float64(unauth))
}

// securePeers configures the transport's hello check and, when set, TLS,
// and registers the security metrics.
func (b *Broker) securePeers() error {
	sc := b.cfg.Security
	sec := raft.PeerSecurity{ClusterID: b.cfg.Cluster.ClusterID}
	if sc.PeerTLSCert != "" || sc.PeerTLSKey != "" || sc.PeerTLSCA != "" {
		p, err := raft.LoadPeerTLS(sc.PeerTLSCert, sc.PeerTLSKey, sc.PeerTLSCA, b.logger)
		if err != nil {
			return err
		}
		sec.TLS = p
		sec.AcceptPlaintext = sc.PeerTLSAcceptPlaintext
		b.reloaders = append(b.reloaders, p.Reload)
		if sec.AcceptPlaintext {
			b.logger.Warn("peer TLS transition mode: plaintext peers are accepted too; finish the switch by restarting without --peer-tls-accept-plaintext")
		}
	} else if sc.PeerTLSAcceptPlaintext {
		return errors.New("--peer-tls-accept-plaintext needs peer TLS (--peer-tls-cert, --peer-tls-key, --peer-tls-ca)")
	}
	if err := b.tr.Secure(sec); err != nil {
		return err
	}
	return b.reg.Register(securityCollector{b})
}

// adminConfig is the admin server's config, with TLS and token loaded.
func (b *Broker) adminConfig(listen string) (admin.Config, error) {
	sc := b.cfg.Security
	cfg := admin.Config{Listen: listen, Source: adminSource{b}, Gatherer: b.reg, Logger: b.logger,
		Token: sc.AdminToken, Pprof: sc.AdminPprof}
	if sc.AdminTokenFile != "" {
		raw, err := os.ReadFile(sc.AdminTokenFile)
		if err != nil {
			return cfg, err
		}
		cfg.Token, _, _ = strings.Cut(strings.TrimSpace(string(raw)), "\n")
		if cfg.Token == "" {
			return cfg, fmt.Errorf("admin token file %s is empty", sc.AdminTokenFile)
		}
	}
	if sc.AdminTLSCert != "" || sc.AdminTLSKey != "" || sc.AdminClientCA != "" {
		tc, reload, err := admin.LoadReloadingTLS(sc.AdminTLSCert, sc.AdminTLSKey, sc.AdminClientCA, b.logger)
		if err != nil {
			return cfg, err
		}
		cfg.TLS = tc
		b.reloaders = append(b.reloaders, reload)
	}
	return cfg, nil
}

// ReloadCertificates reads every TLS file of the node again (SIGHUP): the
// Kafka listeners', the peer port's and the admin server's. A file that
// fails keeps its previous certificates (each logs its own failure); the
// first error is returned.
func (b *Broker) ReloadCertificates() error {
	var first error
	reloaders := b.reloaders
	if b.cfg.TLS != nil {
		reloaders = append([]func() error{b.cfg.TLS.Reload}, reloaders...)
	}
	for _, r := range reloaders {
		if err := r(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
