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
// else cluster.toml's replication_throttle; 0 (and Kafka's default, the
// largest long) means unlimited.

const throttleConfig = "leader.replication.throttled.rate"

// brokerConfigDefs are the dynamic broker configs that are no topic
// config's default.
var brokerConfigDefs = []configDef{
	{throttleConfig, throttleConfig, func(b *Broker) string { return strconv.FormatInt(b.cfg.ReplicationThrottle, 10) }, true,
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
