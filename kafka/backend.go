package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Backend is what the protocol layer needs from the broker. The broker
// package implements it; this package imports no sibling.
type Backend interface {
	// NodeID is this broker's id.
	NodeID() int32
	// ClusterID is the cluster's id string.
	ClusterID() string
	// Brokers lists every broker with its advertised address.
	Brokers() []BrokerInfo
	// ControllerID is the node leading the cluster metadata, or -1.
	ControllerID() int32

	// Topics describes the named topics, or every topic when names is nil.
	// A name that does not exist comes back with Err set.
	Topics(names []string, includeInternal bool) []TopicInfo
	// LeadersChanged returns a channel closed at the next change of a
	// leader this node knows of; take it before reading Topics so that a
	// change in between is not missed.
	LeadersChanged() <-chan struct{}
	// TopicName resolves a topic id.
	TopicName(id [16]byte) (string, bool)
	CreateTopics(ctx context.Context, reqs []CreateTopic, validateOnly bool) []CreateTopicResult
	DeleteTopic(ctx context.Context, name string) int16
	CreatePartitions(ctx context.Context, topic string, count int32, validateOnly bool) (int16, string)
	// TopicConfigs returns a topic's configs (nil map and an error code
	// when it does not exist).
	TopicConfigs(topic string) ([]ConfigEntry, int16)
	BrokerConfigs() []ConfigEntry
	// DefaultBrokerConfigs lists the cluster-wide dynamic broker configs
	// (DescribeConfigs of the broker resource named "").
	DefaultBrokerConfigs() []ConfigEntry
	// AlterConfigs applies (or with validateOnly, checks) one resource's
	// changes, replicated through the cluster metadata.
	AlterConfigs(ctx context.Context, res AlterConfigsResource, validateOnly bool) (int16, string)
	// DeleteRecords moves a partition's log start offset to offset (-1:
	// the high watermark) on its leader and returns the new low watermark.
	DeleteRecords(ctx context.Context, topic string, partition int32, offset int64) (int64, int16)
	// LogDirs describes this node's data directory and the partition
	// replicas in it: all of them when topics is nil.
	LogDirs(topics map[string][]int32) LogDir
	// ClientQuotas lists every quota entity that has a value set.
	ClientQuotas() []QuotaEntry
	// AlterClientQuotas applies (or with validateOnly, checks) one
	// entity's quota changes, replicated through the cluster metadata.
	AlterClientQuotas(ctx context.Context, entity []QuotaEntityPart, ops []QuotaOp, validateOnly bool) (int16, string)
	// Throttle records bytes of a client's produce or fetch traffic (user
	// is its principal's name) and returns how long its quota says it
	// must wait (0: not throttled).
	Throttle(kind QuotaKind, user, clientID string, bytes int) time.Duration
	// Unrecord takes back what Throttle recorded for a response that was
	// not sent (a throttled Fetch answered empty).
	Unrecord(kind QuotaKind, user, clientID string, bytes int)
	// QuotaWindow is what the client's quota allows in one measurement
	// window (MaxInt when it has none).
	QuotaWindow(kind QuotaKind, user, clientID string) int
	// AutoCreateTopics is auto.create.topics.enable: whether Metadata may
	// create the topics it is asked about.
	AutoCreateTopics() bool
	// DefaultPartitions is num.partitions: the partitions of a topic
	// created without a count (auto-created, or asked with -1).
	DefaultPartitions() int32

	// Produce submits one partition's records and returns a function that
	// waits for the outcome. Submissions from one connection are made in
	// request order, which idempotent producers rely on.
	Produce(topic string, partition int32, records []byte, acks int16, timeout time.Duration) ProduceWait
	// Fetch reads one partition. The returned channel, when not nil, is
	// closed once the partition has more to offer (new records, or a
	// leadership change) so a long poll can retry.
	Fetch(req FetchPartition) (FetchResult, <-chan struct{})
	ListOffset(topic string, partition int32, timestamp int64, currentEpoch int32, committedOnly bool) ListOffsetResult
	EpochEndOffset(topic string, partition int32, currentEpoch, epoch int32) EpochEndResult

	InitProducerID(ctx context.Context, transactionalID *string, producerID int64, epoch int16) (int64, int16, int16)

	// Coordinator returns the node coordinating a consumer group.
	Coordinator(group string) (node int32, err int16)
	// GroupRequest serves a consumer-group API (keys 8, 9, 11-16, 42, 47).
	GroupRequest(ctx context.Context, req kmsg.Request) kmsg.Response
	GroupAPIs() []APIRange

	// ShuttingDown is true once a graceful shutdown has begun; long polls
	// end early then.
	ShuttingDown() <-chan struct{}

	Reassignments // reassign.go
	Electer
}

// APIRange is one API key and the versions served.
type APIRange struct{ Key, Min, Max int16 }

// BrokerInfo is a broker's advertised address.
type BrokerInfo struct {
	NodeID int32
	Host   string
	Port   int32
	Rack   *string
	// Listeners maps listener names to this broker's advertised
	// "host:port" on each; when empty, Host and Port serve every listener.
	Listeners map[string]string
}

// TopicInfo describes a topic for Metadata.
type TopicInfo struct {
	Name       string
	ID         [16]byte
	Internal   bool
	Err        int16
	Partitions []PartitionInfo
}

// PartitionInfo describes one partition for Metadata.
type PartitionInfo struct {
	Partition   int32
	Leader      int32 // -1 when none
	LeaderEpoch int32
	Replicas    []int32
	ISR         []int32
	Offline     []int32
	Err         int16
	// Fallback, when Leader is -1, is the last leader known, still up; a
	// Metadata answer names it once the wait for a new one ran out
	// (metadata_wait.go). nil: none.
	Fallback *LeaderHint
}

// LeaderHint is KIP-951's CurrentLeader: where a client should go instead.
type LeaderHint struct {
	Leader int32 // -1 unknown
	Epoch  int32
}

// CreateTopic is one topic of a CreateTopics request.
type CreateTopic struct {
	Name              string
	Partitions        int32 // -1: broker default
	ReplicationFactor int16 // -1: broker default
	Assignment        map[int32][]int32
	Configs           map[string]*string
}

// CreateTopicResult is one topic's outcome.
type CreateTopicResult struct {
	Name              string
	ID                [16]byte
	Err               int16
	Message           string
	Partitions        int32
	ReplicationFactor int16
	Configs           []ConfigEntry
}

// ConfigEntry is one config value.
type ConfigEntry struct {
	Name      string
	Value     *string
	ReadOnly  bool
	IsDefault bool
	Sensitive bool
	Source    int8 // kmsg.ConfigSource
	Type      int8 // kmsg.ConfigType
	Synonyms  []ConfigSynonym
	Doc       string
}

// LogDir is a node's data directory (DescribeLogDirs).
type LogDir struct {
	Dir         string
	TotalBytes  int64 // of the file system holding Dir, -1 unknown
	UsableBytes int64
	Partitions  []LogDirPartition
}

// LogDirPartition is one replica in a LogDir.
type LogDirPartition struct {
	Topic     string
	Partition int32
	Size      int64 // bytes of its segments
	Lag       int64 // high watermark minus log end offset, at least 0 (Kafka's OffsetLag)
}

// ConfigSynonym is a value a config takes from one source, in Kafka's order
// of precedence (the first is the value in force).
type ConfigSynonym struct {
	Name   string
	Value  string
	Source int8
}

// Config alteration operations (IncrementalAlterConfigs' values).
const (
	ConfigSet      int8 = 0
	ConfigDelete   int8 = 1
	ConfigAppend   int8 = 2
	ConfigSubtract int8 = 3
)

// AlterConfigsResource is one resource of AlterConfigs (Incremental false:
// the configs named replace all dynamic ones, each with ConfigSet) or
// IncrementalAlterConfigs.
type AlterConfigsResource struct {
	Type        int8 // kmsg.ConfigResourceType: topic or broker
	Name        string
	Incremental bool
	Ops         []ConfigOp
}

// ConfigOp is one config change.
type ConfigOp struct {
	Name  string
	Op    int8
	Value *string
}

// ProduceResult is one partition's Produce outcome.
type ProduceResult struct {
	Err            int16
	Message        string
	BaseOffset     int64
	LogAppendTime  int64 // -1 for CreateTime topics
	LogStartOffset int64
	Hint           LeaderHint
}

// ProduceWait waits for a submitted produce.
type ProduceWait func(ctx context.Context) ProduceResult

// FetchPartition is one partition of a Fetch request.
type FetchPartition struct {
	Topic         string
	Partition     int32
	Offset        int64
	MaxBytes      int32
	CurrentEpoch  int32 // -1: not checked
	CommittedOnly bool  // read_committed isolation
	MinOne        bool  // the first batch may exceed MaxBytes
}

// FetchResult is one partition's Fetch outcome.
type FetchResult struct {
	Err            int16
	HighWatermark  int64
	LastStable     int64
	LogStartOffset int64
	Records        []byte
	Hint           LeaderHint
}

// ListOffsetResult answers ListOffsets for one partition.
type ListOffsetResult struct {
	Err         int16
	Offset      int64
	Timestamp   int64
	LeaderEpoch int32
	Hint        LeaderHint
}

// EpochEndResult answers OffsetForLeaderEpoch for one partition.
type EpochEndResult struct {
	Err         int16
	LeaderEpoch int32
	EndOffset   int64
}

// ElectPartition names one partition of an ElectLeaders request.
type ElectPartition struct {
	Topic     string
	Partition int32
}

// ElectResult is one partition's outcome of ElectLeaders.
type ElectResult struct {
	Topic     string
	Partition int32
	Err       int16
	Message   string
}

// Electer is the part of the Backend that serves ElectLeaders (KIP-183,
// KIP-460).
type Electer interface {
	// ElectLeaders moves each partition's leadership to its preferred
	// replica (unclean false), or answers an unclean election (which
	// Chronik refuses), within ctx. parts nil means every partition.
	ElectLeaders(ctx context.Context, unclean bool, parts []ElectPartition) []ElectResult
}
