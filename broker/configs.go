package broker

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/coordinator"
	"github.com/chronik-dev/chronik/kafka"
)

// AutoCreateTopics implements kafka.Backend: cluster.toml's
// auto_create_topics, true unless set to false.
func (b *Broker) AutoCreateTopics() bool {
	return b.cfg.Cluster.AutoCreateTopics == nil || *b.cfg.Cluster.AutoCreateTopics
}

// DefaultPartitions implements kafka.Backend: cluster.toml's default_partitions.
func (b *Broker) DefaultPartitions() int32 { return b.cfg.Cluster.DefaultPartitions }

// migrationPolicy is cluster.toml's group_consumer_migration_policy, Kafka's
// default when unset.
func (b *Broker) migrationPolicy() string {
	if p, ok := coordinator.ParseMigrationPolicy(b.cfg.Cluster.ConsumerMigrationPolicy); ok {
		return string(p)
	}
	return string(coordinator.MigrationBidirectional)
}

// BrokerConfigs implements kafka.Backend: this node's configs. The static
// ones come from cluster.toml and flags; the log and message ones are
// dynamic (cluster-wide or per node) and are the defaults of the topic
// configs of the same meaning.
func (b *Broker) BrokerConfigs() []kafka.ConfigEntry {
	ro := func(name, v string, typ kmsg.ConfigType, doc string) kafka.ConfigEntry {
		src := int8(kmsg.ConfigSourceStaticBrokerConfig)
		return kafka.ConfigEntry{Name: name, Value: &v, ReadOnly: true, Source: src, Type: int8(typ), Doc: doc,
			Synonyms: []kafka.ConfigSynonym{{Name: name, Value: v, Source: src}}}
	}
	out := []kafka.ConfigEntry{
		ro("auto.create.topics.enable", strconv.FormatBool(b.AutoCreateTopics()), kmsg.ConfigTypeBoolean,
			"Whether Metadata creates the topics it is asked about (cluster.toml auto_create_topics)."),
		ro("broker.id", strconv.Itoa(int(b.cfg.NodeID)), kmsg.ConfigTypeInt, "This node's id (--node-id)."),
		ro("default.replication.factor", strconv.Itoa(int(b.cfg.Cluster.DefaultReplicationFactor)), kmsg.ConfigTypeInt,
			"Replicas of a topic created without a replication factor (cluster.toml default_replication_factor)."),
		ro("group.consumer.migration.policy", b.migrationPolicy(), kmsg.ConfigTypeString,
			"Whether classic groups are upgraded online to KIP-848 consumer groups and back: disabled, upgrade, downgrade or bidirectional (cluster.toml group_consumer_migration_policy)."),
		ro("log.dirs", b.cfg.DataDir, kmsg.ConfigTypeString, "The data directory (--data-dir)."),
		ro("num.partitions", strconv.Itoa(int(b.cfg.Cluster.DefaultPartitions)), kmsg.ConfigTypeInt,
			"Partitions of a topic created without a count (cluster.toml default_partitions)."),
		ro("offsets.topic.num.partitions", strconv.Itoa(int(b.cfg.Cluster.OffsetsPartitions)), kmsg.ConfigTypeInt,
			"Partitions of __consumer_offsets (cluster.toml offsets_partitions)."),
		ro("replica.lag.time.max.ms", strconv.FormatInt(b.cfg.ISRLagTime.Milliseconds(), 10), kmsg.ConfigTypeLong,
			"How long a follower may lag before it leaves the in-sync replicas (--isr-lag-time)."),
		ro("socket.request.max.bytes", strconv.Itoa(int(b.cfg.MaxRequestSize)), kmsg.ConfigTypeInt,
			"The largest request frame accepted (--max-request-size)."),
	}
	node, cluster := b.metaSM.brokerConfigs(strconv.Itoa(int(b.cfg.NodeID))), b.metaSM.brokerConfigs("")
	for _, d := range append(pointers(topicConfigDefs), pointers(brokerConfigDefs)...) {
		r := b.resolve(d, nil, node, cluster)
		v := r.value
		out = append(out, kafka.ConfigEntry{Name: d.broker, Value: &v, Type: int8(d.typ), Source: int8(r.source),
			IsDefault: r.source == kmsg.ConfigSourceDefaultConfig, Synonyms: r.synonyms, Doc: d.doc})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DefaultBrokerConfigs implements kafka.Backend: the cluster-wide dynamic
// configs that are set.
func (b *Broker) DefaultBrokerConfigs() []kafka.ConfigEntry {
	var out []kafka.ConfigEntry
	for k, v := range b.metaSM.brokerConfigs("") {
		d := findBrokerConfigDef(k)
		if d == nil {
			continue
		}
		val := v
		src := int8(kmsg.ConfigSourceDynamicDefaultBrokerConfig)
		out = append(out, kafka.ConfigEntry{Name: k, Value: &val, Type: int8(d.typ), Source: src, Doc: d.doc,
			Synonyms: []kafka.ConfigSynonym{{Name: k, Value: v, Source: src}}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// AlterConfigs implements kafka.Backend. The new set is computed here from
// the current one and replicated as a whole map, so every node applies the
// same result; the command carries the map it was computed from and
// applies only if that is still current.
func (b *Broker) AlterConfigs(ctx context.Context, res kafka.AlterConfigsResource, validateOnly bool) (int16, string) {
	// An attempt is refused when another alteration of the same resource
	// applied in between; by then this node has applied it too, so the
	// next attempt starts from it. Every round lets one writer through,
	// so a bounded number of rounds serves many concurrent writers.
	for attempt := 0; attempt < 64 && ctx.Err() == nil; attempt++ {
		code, msg := b.alterConfigsOnce(ctx, res, validateOnly)
		if code != errConfigsChanged {
			return code, msg
		}
	}
	return kerr.RequestTimedOut.Code, "the configs kept changing; retry"
}

func (b *Broker) alterConfigsOnce(ctx context.Context, res kafka.AlterConfigsResource, validateOnly bool) (int16, string) {
	var cur map[string]string
	var find func(string) *configDef
	cmd := metaCmd{Name: res.Name, Replace: true}
	switch kmsg.ConfigResourceType(res.Type) {
	case kmsg.ConfigResourceTypeTopic:
		t, ok := b.metaSM.topic(res.Name)
		if !ok {
			return kerr.UnknownTopicOrPartition.Code, "topic " + res.Name + " does not exist"
		}
		if t.Internal {
			return kerr.InvalidRequest.Code, "internal topics' configs are fixed"
		}
		cur, find, cmd.Op = t.Configs, findConfigDef, "alter_configs"
	case kmsg.ConfigResourceTypeBroker:
		if res.Name != "" {
			id, err := strconv.Atoi(res.Name)
			if err != nil || !slices.Contains(b.nodeIDs(), int32(id)) {
				return kerr.InvalidRequest.Code, "no broker " + strconv.Quote(res.Name)
			}
		}
		cur, find, cmd.Op = b.metaSM.brokerConfigs(res.Name), findBrokerConfigDef, "alter_broker_configs"
	default:
		return kerr.InvalidRequest.Code, "only topic and broker configs can be altered"
	}
	next, code, msg := b.alterConfigSet(cur, res, find)
	if code != 0 {
		return code, msg
	}
	if kmsg.ConfigResourceType(res.Type) == kmsg.ConfigResourceTypeTopic {
		if code, msg := b.configPolicy(res.Name, next); code != 0 {
			return code, msg
		}
	}
	if validateOnly {
		return 0, ""
	}
	cmd.Set, cmd.Expect, cmd.Check = next, cur, true
	mr, err := b.metaPropose(ctx, cmd)
	if err != nil {
		return kerr.RequestTimedOut.Code, "metadata change did not complete: " + err.Error()
	}
	return mr.Err, mr.Msg
}

// alterConfigSet applies res's operations to a copy of cur and checks
// every value: unknown names and bad values are INVALID_CONFIG, as in
// Kafka; APPEND and SUBTRACT only work on list configs.
func (b *Broker) alterConfigSet(cur map[string]string, res kafka.AlterConfigsResource, find func(string) *configDef) (map[string]string, int16, string) {
	next := map[string]string{}
	if res.Incremental {
		for k, v := range cur {
			next[k] = v
		}
	}
	seen := map[string]bool{}
	for _, op := range res.Ops {
		d := find(op.Name)
		if d == nil {
			return nil, kerr.InvalidConfig.Code, fmt.Sprintf("unknown or unsupported config %q", op.Name)
		}
		if seen[op.Name] {
			return nil, kerr.InvalidRequest.Code, fmt.Sprintf("config %q named twice", op.Name)
		}
		seen[op.Name] = true
		v := ""
		if op.Value != nil {
			v = *op.Value
		}
		switch op.Op {
		case kafka.ConfigSet:
			if op.Value == nil {
				delete(next, op.Name) // AlterConfigs with a null value
				continue
			}
			next[op.Name] = v
		case kafka.ConfigDelete:
			delete(next, op.Name)
			continue
		case kafka.ConfigAppend, kafka.ConfigSubtract:
			if d.typ != kmsg.ConfigTypeList {
				return nil, kerr.InvalidConfig.Code, fmt.Sprintf("config %q is not a list: APPEND and SUBTRACT do not apply", op.Name)
			}
			have, ok := next[op.Name]
			if !ok {
				have = d.def(b)
			}
			items := listValue(have)
			for _, x := range listValue(v) {
				i := slices.Index(items, x)
				if op.Op == kafka.ConfigAppend && i < 0 {
					items = append(items, x)
				} else if op.Op == kafka.ConfigSubtract && i >= 0 {
					items = slices.Delete(items, i, i+1)
				}
			}
			next[op.Name] = joinList(items)
		default:
			return nil, kerr.InvalidRequest.Code, fmt.Sprintf("unknown config operation %d", op.Op)
		}
		if err := d.check(next[op.Name]); err != nil {
			return nil, kerr.InvalidConfig.Code, fmt.Sprintf("config %s=%q: %v", op.Name, next[op.Name], err)
		}
	}
	return next, 0, ""
}

func joinList(items []string) string {
	out := ""
	for i, s := range items {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

// configPolicy refuses topic configs that could never be met:
// min.insync.replicas above the replication factor would fail every
// acks=all write (POLICY_VIOLATION, Kafka's code for a refused policy).
func (b *Broker) configPolicy(topic string, cfgs map[string]string) (int16, string) {
	t, ok := b.metaSM.topic(topic)
	if !ok || len(t.Partitions) == 0 {
		return 0, ""
	}
	if v, ok := cfgs["min.insync.replicas"]; ok {
		n, _ := strconv.Atoi(v)
		if rf := t.Partitions[0].replicationFactor(); n > rf {
			return kerr.PolicyViolation.Code, fmt.Sprintf("min.insync.replicas %d is above the replication factor %d", n, rf)
		}
	}
	return 0, ""
}

// applySegmentLimits hands each local partition log its topic's current
// segment.bytes and segment.ms, so a config change applies without a
// restart (retention and the produce checks read topicConfig each time).
func (b *Broker) applySegmentLimits() {
	b.mu.RLock()
	parts := make([]*partition, 0, len(b.parts))
	for _, p := range b.parts {
		parts = append(parts, p)
	}
	b.mu.RUnlock()
	for _, p := range parts {
		c := b.topicConfig(p.topic)
		p.rep.Log().SetSegmentLimits(c.segmentBytes, c.segmentAge)
	}
}
