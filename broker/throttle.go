package broker

import (
	"math"
	"strconv"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Replication throttle: the bytes per second a node sends to learners,
// the replicas a move is adding, over all its groups together (raft
// Host.SetLearnerRate); voters' traffic is never held back. The value is
// the dynamic broker config leader.replication.throttled.rate (this
// node's own, else the cluster-wide default), else --replication-throttle,
// else cluster.toml's replication_throttle, else DefaultReplicationThrottle;
// a negative flag or file value, and 0 or Kafka's default (the largest
// long) as the dynamic config, mean unlimited.

const throttleConfig = "leader.replication.throttled.rate"

// DefaultReplicationThrottle is the learner rate of a node when neither
// --replication-throttle nor cluster.toml sets one: 32 MiB/s. Unbounded,
// a node back on an empty disk took every core of a loaded 2-core machine
// for its catch-up (30 x 30 MiB at load 25: producer p99 10.6 s and 20
// CheckQuorum step-downs); at 32 MiB/s per sending node it took as long
// (31 s against 25 s) with p99 1.2 s and none (README, "Replacing a
// node").
const DefaultReplicationThrottle = 32 << 20

// throttleValue is the dynamic config's value for rate (negative, or 0
// once resolved: unlimited, which Kafka writes as the largest long).
func throttleValue(rate int64) string {
	if rate <= 0 {
		return strconv.FormatInt(math.MaxInt64, 10)
	}
	return strconv.FormatInt(rate, 10)
}

// brokerConfigDefs are the dynamic broker configs that are no topic
// config's default.
var brokerConfigDefs = []configDef{
	{throttleConfig, throttleConfig, func(b *Broker) string { return throttleValue(b.cfg.ReplicationThrottle) }, true,
		kmsg.ConfigTypeLong, intCheck(0),
		"Bytes per second this node sends to the replicas a reassignment is adding, all partitions together; 0 for no limit."},
}

// learnerRate is the throttle in force on this node (0: none).
func (b *Broker) learnerRate() int64 {
	node, cluster := b.metaSM.brokerConfigs(strconv.Itoa(int(b.cfg.NodeID))), b.metaSM.brokerConfigs("")
	v := b.resolve(&brokerConfigDefs[0], nil, node, cluster).value
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n == math.MaxInt64 {
		return 0
	}
	return n
}

// applyThrottle hands the throttle in force to Raft; it runs after every
// metadata change, so a config change applies at once.
func (b *Broker) applyThrottle() {
	if r := b.learnerRate(); r != b.throttle.Swap(r) {
		b.host.SetLearnerRate(r)
		b.logger.Info("replication throttle set", "bytes_per_sec", r)
	}
}

func pointers(defs []configDef) []*configDef {
	out := make([]*configDef, len(defs))
	for i := range defs {
		out[i] = &defs[i]
	}
	return out
}
