package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/chronik-dev/chronik/coordinator"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronik-dev/chronik/auth"
	"github.com/chronik-dev/chronik/kafka"
)

// NodeSpec is one [[nodes]] entry of cluster.toml.
type NodeSpec struct {
	ID int32 `toml:"id"`
	// Kafka is the address advertised to clients; KafkaListen, when set, is
	// the address bound (containers and NAT need them to differ, as Kafka's
	// listeners and advertised.listeners do). The same holds for Raft and
	// Admin.
	Kafka       string `toml:"kafka"`
	KafkaListen string `toml:"kafka_listen"`
	Raft        string `toml:"raft"`
	RaftListen  string `toml:"raft_listen"`
	Admin       string `toml:"admin"`
	AdminListen string `toml:"admin_listen"`
	Rack        string `toml:"rack"`
	// Listeners are more Kafka listeners (listeners.go); Kafka, when set,
	// is the PLAINTEXT one and may then be left out.
	Listeners []ListenerSpec `toml:"listeners"`
}

// ClusterFile is the shape of cluster.toml.
type ClusterFile struct {
	// ClusterID names the cluster in Metadata responses.
	ClusterID string     `toml:"cluster_id"`
	Nodes     []NodeSpec `toml:"nodes"`
	// Topic defaults, as Kafka's num.partitions and
	// default.replication.factor; replication 0 means min(3, nodes).
	DefaultPartitions        int32 `toml:"default_partitions"`
	DefaultReplicationFactor int16 `toml:"default_replication_factor"`
	// OffsetsPartitions is the partition count of the internal offsets
	// topic (Kafka's offsets.topic.num.partitions).
	OffsetsPartitions int32 `toml:"offsets_partitions"`
	// AutoCreateTopics lets Metadata create missing topics
	// (auto.create.topics.enable). Default true.
	AutoCreateTopics *bool `toml:"auto_create_topics"`
	// ACLsEnabled enforces the ACLs (CreateAcls) on every request; off,
	// everyone may do everything and the ACL APIs are SECURITY_DISABLED.
	ACLsEnabled bool `toml:"acls_enabled"`
	// SuperUsers ("User:admin") bypass the ACLs.
	SuperUsers []string `toml:"super_users"`
	// AllowEveryoneIfNoACLFound is Kafka's allow.everyone.if.no.acl.found:
	// a resource no ACL applies to is open to all. Off by default.
	AllowEveryoneIfNoACLFound bool `toml:"allow_everyone_if_no_acl_found"`
	// ReplicationThrottle is every node's default learner rate in bytes
	// per second (0 or unset: DefaultReplicationThrottle; negative:
	// unlimited); --replication-throttle overrides it per node
	// (throttle.go).
	ReplicationThrottle int64 `toml:"replication_throttle"`
	// MaxConcurrentMoves is how many reassignments the cluster runs at
	// once; the rest wait in a queue in the metadata (move_queue.go).
	// 0 or unset: 8; negative: unlimited.
	MaxConcurrentMoves int `toml:"max_concurrent_moves"`
	// ConsumerMigrationPolicy is Kafka's group.consumer.migration.policy:
	// whether a classic group with members may be upgraded online to a
	// KIP-848 consumer group (upgrade), the reverse (downgrade), both
	// (bidirectional, the default) or neither (disabled).
	ConsumerMigrationPolicy string `toml:"group_consumer_migration_policy"`
}

// LoadClusterFile reads and checks a cluster.toml.
func LoadClusterFile(path string) (*ClusterFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cf ClusterFile
	md, err := toml.Decode(string(b), &cf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("%s: unknown keys %v", path, und)
	}
	if err := cf.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &cf, nil
}

func (cf *ClusterFile) check() error {
	if len(cf.Nodes) == 0 {
		return errors.New("no [[nodes]]")
	}
	seen := map[int32]bool{}
	for _, n := range cf.Nodes {
		if n.ID <= 0 || n.ID >= 1<<16 {
			return fmt.Errorf("node id %d out of range [1, 65535]", n.ID)
		}
		if seen[n.ID] {
			return fmt.Errorf("node id %d listed twice", n.ID)
		}
		seen[n.ID] = true
		addrs := map[string]string{"raft": n.Raft}
		if n.Kafka != "" || len(n.Listeners) == 0 {
			addrs["kafka"] = n.Kafka
		}
		for what, addr := range addrs {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return fmt.Errorf("node %d: %s address %q: %v", n.ID, what, addr, err)
			}
		}
		if err := checkListeners(n); err != nil {
			return fmt.Errorf("node %d: %w", n.ID, err)
		}
	}
	for _, u := range cf.SuperUsers {
		if typ, name, ok := strings.Cut(u, ":"); !ok || typ == "" || name == "" {
			return fmt.Errorf("super_users: %q is not TYPE:NAME (User:admin)", u)
		}
	}
	sort.Slice(cf.Nodes, func(i, j int) bool { return cf.Nodes[i].ID < cf.Nodes[j].ID })
	if cf.ClusterID == "" {
		cf.ClusterID = "chronik"
	}
	if cf.DefaultPartitions <= 0 {
		cf.DefaultPartitions = 1
	}
	if cf.DefaultReplicationFactor <= 0 {
		cf.DefaultReplicationFactor = int16(min(3, len(cf.Nodes)))
	}
	if cf.OffsetsPartitions <= 0 {
		cf.OffsetsPartitions = 6
	}
	if cf.ConsumerMigrationPolicy == "" {
		cf.ConsumerMigrationPolicy = string(coordinator.MigrationBidirectional)
	}
	if _, ok := coordinator.ParseMigrationPolicy(cf.ConsumerMigrationPolicy); !ok {
		return fmt.Errorf("group_consumer_migration_policy %q: want disabled, upgrade, downgrade or bidirectional", cf.ConsumerMigrationPolicy)
	}
	return nil
}

// Node returns the spec of node id.
func (cf *ClusterFile) Node(id int32) (NodeSpec, bool) {
	for _, n := range cf.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return NodeSpec{}, false
}

// FsyncMode is the --fsync policy.
type FsyncMode string

const (
	FsyncAlways   FsyncMode = "always"
	FsyncInterval FsyncMode = "interval"
)

// Config configures a Broker; cmd/chronik-server fills it from flags.
type Config struct {
	NodeID  int32
	Cluster *ClusterFile
	DataDir string

	Fsync         FsyncMode
	FsyncInterval time.Duration

	// Graceful shutdown stage timeouts.
	DrainTimeout    time.Duration
	TransferTimeout time.Duration
	WALSyncTimeout  time.Duration
	// ForwardWait bounds how long a stopping node stays up, after its
	// transfers, while clients that cannot follow leader hints or errors
	// still write here and get forwarded (kafka/forwarded.go); 0: not at all.
	ForwardWait time.Duration

	// Raft timing: tick, and election/heartbeat in ticks.
	RaftTick       time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	// ISRLagTime is Kafka's replica.lag.time.max.ms.
	ISRLagTime time.Duration
	// AutoLeaderRebalance moves leadership back to preferred replicas once
	// they are in sync for RebalanceDelay (Kafka waits 5 minutes).
	AutoLeaderRebalance bool
	RebalanceDelay      time.Duration
	// ReplicationThrottle bounds the bytes per second sent to replicas a
	// reassignment adds or a node back on an empty disk refills (0: the
	// cluster file's, else DefaultReplicationThrottle; negative:
	// unlimited); the dynamic broker config
	// leader.replication.throttled.rate overrides it (throttle.go).
	ReplicationThrottle int64

	SegmentBytes      int64
	RetentionInterval time.Duration
	MaxRequestSize    int32
	// KafkaLimits bound what Kafka clients can make this node spend
	// (connections, frames, request memory, partitions); zero fields take
	// the kafka package's defaults.
	KafkaLimits kafka.Limits
	// TLS serves the SSL and SASL_SSL listeners.
	TLS *kafka.TLSFiles
	// SASLMechanisms enabled on SASL listeners (all when empty).
	SASLMechanisms []string
	// SASLMaxReauth is connections.max.reauth.ms (KIP-368): how long a
	// SASL login lasts on its connection; 0: forever.
	SASLMaxReauth time.Duration
	// BootstrapUsers are SCRAM credentials (from the users file) this
	// node knows from its start; see scram.go.
	BootstrapUsers map[string][]auth.Credential

	Logger   *slog.Logger
	Registry *prometheus.Registry

	// Peer and admin security (security.go, README "Securing Chronik").
	Security SecurityConfig
}

func (c *Config) defaults() error {
	if c.Cluster == nil {
		return errors.New("broker: no cluster config")
	}
	if _, ok := c.Cluster.Node(c.NodeID); !ok {
		return fmt.Errorf("broker: node %d is not in the cluster config", c.NodeID)
	}
	if c.DataDir == "" {
		c.DataDir = "data/node-" + strconv.Itoa(int(c.NodeID))
	}
	if c.Fsync == "" {
		c.Fsync = FsyncInterval
	}
	if c.Fsync != FsyncAlways && c.Fsync != FsyncInterval {
		return fmt.Errorf("broker: fsync policy %q: want always or interval", c.Fsync)
	}
	if c.FsyncInterval <= 0 {
		c.FsyncInterval = 100 * time.Millisecond
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.TransferTimeout <= 0 {
		c.TransferTimeout = 30 * time.Second
	}
	if c.WALSyncTimeout <= 0 {
		c.WALSyncTimeout = 5 * time.Second
	}
	if c.RaftTick <= 0 {
		c.RaftTick = 100 * time.Millisecond
	}
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks <= 0 {
		c.HeartbeatTicks = 2
	}
	if c.ISRLagTime <= 0 {
		c.ISRLagTime = 10 * time.Second
	}
	if c.ReplicationThrottle == 0 {
		c.ReplicationThrottle = c.Cluster.ReplicationThrottle
	}
	if c.ReplicationThrottle == 0 {
		c.ReplicationThrottle = DefaultReplicationThrottle
	}
	if c.RebalanceDelay <= 0 {
		c.RebalanceDelay = 2 * time.Second
	}
	if c.SegmentBytes <= 0 {
		c.SegmentBytes = 128 << 20
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = 30 * time.Second
	}
	if c.MaxRequestSize <= 0 {
		c.MaxRequestSize = 100 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return nil
}
