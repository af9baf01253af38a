package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/chronik-dev/chronik/broker"
	"github.com/chronik-dev/chronik/kafka"
)

func serverFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "node-id", Usage: "this node's id in the cluster config", EnvVars: []string{"CHRONIK_NODE_ID"}},
		&cli.StringFlag{Name: "cluster-config", Usage: "cluster TOML file ([[nodes]] with id, kafka, raft, admin)", EnvVars: []string{"CHRONIK_CLUSTER_CONFIG"}},
		&cli.StringFlag{Name: "data-dir", Usage: "data directory (default ./data/node-<id>)", EnvVars: []string{"CHRONIK_DATA_DIR"}},
		&cli.StringFlag{Name: "fsync", Value: "interval", Usage: "fsync policy: always (every write, group committed) or interval", EnvVars: []string{"CHRONIK_FSYNC"}},
		&cli.StringFlag{Name: "fsync-interval", Value: "100ms", Usage: "with --fsync interval, how often logs are synced", EnvVars: []string{"CHRONIK_FSYNC_INTERVAL"}},
		&cli.StringFlag{Name: "drain-timeout", Value: "10", Usage: "shutdown stage 1 timeout (seconds, or a Go duration)", EnvVars: []string{"CHRONIK_DRAIN_TIMEOUT"}},
		&cli.StringFlag{Name: "transfer-timeout", Value: "30", Usage: "shutdown stage 2 timeout (seconds, or a Go duration)", EnvVars: []string{"CHRONIK_TRANSFER_TIMEOUT"}},
		&cli.StringFlag{Name: "wal-sync-timeout", Value: "5", Usage: "shutdown stage 3 timeout (seconds, or a Go duration)", EnvVars: []string{"CHRONIK_WAL_SYNC_TIMEOUT"}},
		&cli.StringFlag{Name: "forward-wait", Value: "6.5s", Usage: "at shutdown, how long to stay up forwarding for clients that follow neither leader hints nor errors (kafka-go's Writer refreshes metadata every 6 s); 0: no wait", EnvVars: []string{"CHRONIK_FORWARD_WAIT"}},
		&cli.StringFlag{Name: "raft-tick", Value: "100ms", Usage: "Raft tick interval", EnvVars: []string{"CHRONIK_RAFT_TICK"}},
		&cli.IntFlag{Name: "election-ticks", Value: 10, Usage: "ticks without a leader before an election", EnvVars: []string{"CHRONIK_ELECTION_TICKS"}},
		&cli.IntFlag{Name: "heartbeat-ticks", Value: 2, Usage: "ticks between leader heartbeats", EnvVars: []string{"CHRONIK_HEARTBEAT_TICKS"}},
		&cli.StringFlag{Name: "isr-lag-time", Value: "10s", Usage: "how long a follower may lag and stay in sync (replica.lag.time.max.ms)", EnvVars: []string{"CHRONIK_ISR_LAG_TIME"}},
		&cli.BoolFlag{Name: "auto-leader-rebalance", Value: true, Usage: "move leadership back to preferred replicas once they are in sync", EnvVars: []string{"CHRONIK_AUTO_LEADER_REBALANCE"}},
		&cli.StringFlag{Name: "rebalance-delay", Value: "2s", Usage: "how long a preferred replica must be in sync before it gets leadership back", EnvVars: []string{"CHRONIK_REBALANCE_DELAY"}},
		&cli.Int64Flag{Name: "replication-throttle", Usage: "bytes per second this node sends to replicas a reassignment adds or a node back on an empty disk refills, all partitions together; negative: unlimited (default: cluster.toml replication_throttle, else 33554432, 32 MiB/s; the dynamic broker config leader.replication.throttled.rate overrides it)", EnvVars: []string{"CHRONIK_REPLICATION_THROTTLE"}},
		&cli.Int64Flag{Name: "segment-bytes", Value: 128 << 20, Usage: "default log segment size", EnvVars: []string{"CHRONIK_SEGMENT_BYTES"}},
		&cli.StringFlag{Name: "retention-check-interval", Value: "30s", Usage: "how often retention runs", EnvVars: []string{"CHRONIK_RETENTION_CHECK_INTERVAL"}},
		&cli.IntFlag{Name: "max-request-size", Value: 100 << 20, Usage: "largest Kafka request frame accepted (bytes)", EnvVars: []string{"CHRONIK_MAX_REQUEST_SIZE"}},
		&cli.IntFlag{Name: "max-nonproduce-request-size", Value: kafka.DefaultMaxNonProduceRequestSize, Usage: "largest request frame accepted for any API but Produce (bytes)", EnvVars: []string{"CHRONIK_MAX_NONPRODUCE_REQUEST_SIZE"}},
		&cli.Int64Flag{Name: "queued-max-request-bytes", Value: kafka.DefaultQueuedMaxRequestBytes, Usage: "node-wide budget of request bytes in memory; readers wait when it is spent (queued.max.request.bytes)", EnvVars: []string{"CHRONIK_QUEUED_MAX_REQUEST_BYTES"}},
		&cli.IntFlag{Name: "max-connections", Value: kafka.DefaultMaxConnections, Usage: "open Kafka client connections allowed (max.connections)", EnvVars: []string{"CHRONIK_MAX_CONNECTIONS"}},
		&cli.IntFlag{Name: "max-connections-per-ip", Value: kafka.DefaultMaxConnectionsPerIP, Usage: "open Kafka client connections allowed per client address (max.connections.per.ip)", EnvVars: []string{"CHRONIK_MAX_CONNECTIONS_PER_IP"}},
		&cli.IntFlag{Name: "max-big-frame-reads", Value: kafka.DefaultMaxBigFrameReads, Usage: "request frames over 1 MiB read at once, node-wide; others wait unread within their frame timeout", EnvVars: []string{"CHRONIK_MAX_BIG_FRAME_READS"}},
		&cli.Int64Flag{Name: "big-frame-rate-per-ip", Value: 0, Usage: "bytes a second at which request frames over 1 MiB from one client address are read, all its connections together (0: no limit)", EnvVars: []string{"CHRONIK_BIG_FRAME_RATE_PER_IP"}},
		&cli.StringFlag{Name: "refused-close-delay", Value: "1s", Usage: "a connection refused at --max-connections-per-ip, or cut for a malformed or oversized frame, is reset only after this, unread (0: at once)", EnvVars: []string{"CHRONIK_REFUSED_CLOSE_DELAY"}},
		&cli.StringFlag{Name: "frame-timeout", Value: "20s", Usage: "time a request frame may take to arrive once begun, and a new connection to send its first (seconds, or a Go duration)", EnvVars: []string{"CHRONIK_FRAME_TIMEOUT"}},
		&cli.IntFlag{Name: "fetch-max-bytes", Value: kafka.DefaultFetchMaxBytes, Usage: "most bytes one Fetch response carries, whatever the client asks (fetch.max.bytes)", EnvVars: []string{"CHRONIK_FETCH_MAX_BYTES"}},
		&cli.IntFlag{Name: "max-partitions-per-request", Value: kafka.DefaultMaxPartitionsPerRequest, Usage: "partitions one CreateTopics or CreatePartitions request may add", EnvVars: []string{"CHRONIK_MAX_PARTITIONS_PER_REQUEST"}},
		&cli.IntFlag{Name: "max-partitions", Value: kafka.DefaultMaxPartitions, Usage: "partitions the whole cluster may have (checked on CreateTopics and CreatePartitions)", EnvVars: []string{"CHRONIK_MAX_PARTITIONS"}},
		// Peer and admin security (README "Securing Chronik").
		&cli.StringFlag{Name: "peer-tls-cert", Usage: "PEM certificate for the Raft peer port; with --peer-tls-key and --peer-tls-ca peers use mutual TLS, and the certificate must carry the DNS name chronik-node-<id>", EnvVars: []string{"CHRONIK_PEER_TLS_CERT"}},
		&cli.StringFlag{Name: "peer-tls-key", Usage: "PEM private key of --peer-tls-cert", EnvVars: []string{"CHRONIK_PEER_TLS_KEY"}},
		&cli.StringFlag{Name: "peer-tls-ca", Usage: "PEM CA bundle that peer certificates must chain to", EnvVars: []string{"CHRONIK_PEER_TLS_CA"}},
		&cli.BoolFlag{Name: "peer-tls-accept-plaintext", Usage: "transition mode for switching a running cluster's peers to TLS one node at a time: take plaintext peers besides TLS ones, and dial plaintext when TLS fails (README \"Securing Chronik\")", EnvVars: []string{"CHRONIK_PEER_TLS_ACCEPT_PLAINTEXT"}},
		&cli.StringFlag{Name: "admin-tls-cert", Usage: "PEM certificate: the admin server serves HTTPS", EnvVars: []string{"CHRONIK_ADMIN_TLS_CERT"}},
		&cli.StringFlag{Name: "admin-tls-key", Usage: "PEM private key of --admin-tls-cert", EnvVars: []string{"CHRONIK_ADMIN_TLS_KEY"}},
		&cli.StringFlag{Name: "admin-client-ca", Usage: "PEM CA: an admin client certificate it signed authorizes like the token (needs --admin-tls-cert)", EnvVars: []string{"CHRONIK_ADMIN_CLIENT_CA"}},
		&cli.StringFlag{Name: "admin-token", Usage: "bearer token required on every admin endpoint but /health and /ready", EnvVars: []string{"CHRONIK_ADMIN_TOKEN"}},
		&cli.StringFlag{Name: "admin-token-file", Usage: "file holding the admin bearer token (instead of --admin-token)", EnvVars: []string{"CHRONIK_ADMIN_TOKEN_FILE"}},
		&cli.BoolFlag{Name: "admin-pprof", Usage: "serve Go profiles on the admin server at /debug/pprof/", EnvVars: []string{"CHRONIK_ADMIN_PPROF"}},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate (chain) of this node's SSL and SASL_SSL listeners; reloaded on SIGHUP or when the file changes", EnvVars: []string{"CHRONIK_TLS_CERT"}},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM private key of --tls-cert", EnvVars: []string{"CHRONIK_TLS_KEY"}},
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM CA certificates that sign client certificates (for --tls-client-auth)", EnvVars: []string{"CHRONIK_TLS_CA"}},
		&cli.StringFlag{Name: "tls-client-auth", Value: "none", Usage: "client certificates on TLS listeners: none, request or required (ssl.client.auth)", EnvVars: []string{"CHRONIK_TLS_CLIENT_AUTH"}},
		&cli.StringFlag{Name: "sasl-users-file", Usage: "bootstrap SASL users (TOML [[users]] name, password); passwords are salted and hashed at load", EnvVars: []string{"CHRONIK_SASL_USERS_FILE"}},
		&cli.StringFlag{Name: "sasl-mechanisms", Value: strings.Join(kafka.DefaultSASLMechanisms, ","), Usage: "SASL mechanisms enabled on SASL listeners", EnvVars: []string{"CHRONIK_SASL_MECHANISMS"}},
		&cli.StringFlag{Name: "sasl-max-reauth", Value: "0", Usage: "how long a SASL login lasts before the client must re-authenticate on its connection (connections.max.reauth.ms, KIP-368; seconds or a Go duration; 0: forever)", EnvVars: []string{"CHRONIK_SASL_MAX_REAUTH"}},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"CHRONIK_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json", EnvVars: []string{"CHRONIK_LOG_FORMAT"}},
	}
}

// parseSeconds reads a timeout given as plain seconds ("30", "2.5", as the
// runbook writes them) or as a Go duration ("30s", "500ms").
func parseSeconds(name, v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 {
			return 0, fmt.Errorf("--%s: negative", name)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("--%s: %q is neither seconds nor a duration", name, v)
	}
	return d, nil
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q: want text or json", format)
}

func configFromFlags(c *cli.Context) (broker.Config, error) {
	var cfg broker.Config
	if !c.IsSet("node-id") {
		return cfg, fmt.Errorf("--node-id (or CHRONIK_NODE_ID) is required")
	}
	if c.String("cluster-config") == "" {
		return cfg, fmt.Errorf("--cluster-config (or CHRONIK_CLUSTER_CONFIG) is required")
	}
	cf, err := broker.LoadClusterFile(c.String("cluster-config"))
	if err != nil {
		return cfg, err
	}
	logger, err := newLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return cfg, err
	}
	cfg = broker.Config{
		NodeID: int32(c.Int("node-id")), Cluster: cf, DataDir: c.String("data-dir"),
		Fsync: broker.FsyncMode(c.String("fsync")), ElectionTicks: c.Int("election-ticks"),
		HeartbeatTicks: c.Int("heartbeat-ticks"), AutoLeaderRebalance: c.Bool("auto-leader-rebalance"),
		ReplicationThrottle: c.Int64("replication-throttle"),
		SegmentBytes:        c.Int64("segment-bytes"), MaxRequestSize: int32(c.Int("max-request-size")),
		KafkaLimits: kafka.Limits{
			MaxConnections: c.Int("max-connections"), MaxConnectionsPerIP: c.Int("max-connections-per-ip"),
			QueuedMaxRequestBytes:    c.Int64("queued-max-request-bytes"),
			MaxBigFrameReads:         c.Int("max-big-frame-reads"),
			BigFrameRatePerIP:        c.Int64("big-frame-rate-per-ip"),
			MaxNonProduceRequestSize: int32(c.Int("max-nonproduce-request-size")),
			FetchMaxBytes:            int32(c.Int("fetch-max-bytes")),
			MaxPartitionsPerRequest:  c.Int("max-partitions-per-request"), MaxPartitions: c.Int("max-partitions"),
		},
		Logger: logger, Registry: prometheus.NewRegistry(),
		Security: broker.SecurityConfig{
			PeerTLSCert: c.String("peer-tls-cert"), PeerTLSKey: c.String("peer-tls-key"), PeerTLSCA: c.String("peer-tls-ca"),
			PeerTLSAcceptPlaintext: c.Bool("peer-tls-accept-plaintext"),
			AdminTLSCert:           c.String("admin-tls-cert"), AdminTLSKey: c.String("admin-tls-key"), AdminClientCA: c.String("admin-client-ca"),
			AdminToken: c.String("admin-token"), AdminTokenFile: c.String("admin-token-file"), AdminPprof: c.Bool("admin-pprof"),
		},
	}
	durs := []struct {
		flag string
		dst  *time.Duration
	}{
		{"fsync-interval", &cfg.FsyncInterval}, {"drain-timeout", &cfg.DrainTimeout},
		{"transfer-timeout", &cfg.TransferTimeout}, {"wal-sync-timeout", &cfg.WALSyncTimeout},
		{"forward-wait", &cfg.ForwardWait},
		{"raft-tick", &cfg.RaftTick}, {"isr-lag-time", &cfg.ISRLagTime},
		{"rebalance-delay", &cfg.RebalanceDelay}, {"retention-check-interval", &cfg.RetentionInterval},
		{"frame-timeout", &cfg.KafkaLimits.FrameTimeout}, {"sasl-max-reauth", &cfg.SASLMaxReauth},
		{"refused-close-delay", &cfg.KafkaLimits.RefusedCloseDelay},
	}
	for _, d := range durs {
		v, err := parseSeconds(d.flag, c.String(d.flag))
		if err != nil {
			return cfg, err
		}
		*d.dst = v
	}
	if cfg.KafkaLimits.RefusedCloseDelay == 0 {
		cfg.KafkaLimits.RefusedCloseDelay = -1 // 0 on the command line: off (the library's 0 is its default)
	}
	return cfg, securityFromFlags(c, &cfg)
}

func runServer(c *cli.Context) error {
	cfg, err := configFromFlags(c)
	if err != nil {
		return err
	}
	b, err := broker.New(cfg)
	if err != nil {
		return err
	}
	// Signals are caught before Start so that none is missed.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stop := reloadOnHUP(b)
	defer stop()
	// Start can wait for peers (a fresh data directory asks them whether
	// the cluster exists): a signal meanwhile stops it.
	started := make(chan error, 1)
	go func() { started <- b.Start() }()
	var sig os.Signal
	select {
	case err := <-started:
		if err != nil {
			return err
		}
		sig = <-sigs
	case sig = <-sigs:
		cfg.Logger.Info("received signal before the node started, stopping", "signal", sig.String())
		b.Close()
		<-started
		return nil
	}
	cfg.Logger.Info("received signal, stopping", "signal", sig.String())
	// A second signal, or the stages' timeouts plus a margin, force the exit.
	deadline := cfg.DrainTimeout + cfg.TransferTimeout + cfg.ForwardWait + cfg.WALSyncTimeout + 5*time.Second
	go func() {
		select {
		case s := <-sigs:
			cfg.Logger.Error("second signal: forcing exit", "signal", s.String())
		case <-time.After(deadline):
			cfg.Logger.Error("graceful shutdown deadline passed: forcing exit", "deadline", deadline)
		}
		os.Exit(1)
	}()
	b.Shutdown()
	return nil
}
