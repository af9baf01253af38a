package broker

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/kafka"
)

// topicConfig is a topic's configs parsed for the hot path.
type topicConfig struct {
	retentionBytes  int64
	retentionAge    time.Duration
	segmentBytes    int64
	segmentAge      time.Duration
	maxMessageBytes int64
	minInsync       int
	logAppendTime   bool
	tsBefore        int64 // message.timestamp.before.max.ms
	tsAfter         int64 // message.timestamp.after.max.ms
}

// configDef describes one supported topic config: its default (as Kafka's),
// the dynamic broker config that supplies the default when set, and how to
// check a value.
type configDef struct {
	name   string
	broker string // Kafka's broker-level synonym, settable as a dynamic broker config
	def    func(b *Broker) string
	static bool // def comes from a server flag (STATIC_BROKER_CONFIG)
	typ    kmsg.ConfigType
	check  func(v string) error
	doc    string
}

func intCheck(min int64) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		if n < min {
			return fmt.Errorf("below %d", min)
		}
		return nil
	}
}

func oneOf(vals ...string) func(string) error {
	return func(v string) error {
		for _, x := range vals {
			if v == x {
				return nil
			}
		}
		return fmt.Errorf("must be one of %v", vals)
	}
}

func constant(v string) func(*Broker) string { return func(*Broker) string { return v } }

var maxLong = strconv.FormatInt(math.MaxInt64, 10)

var topicConfigDefs = []configDef{
	{"cleanup.policy", "log.cleanup.policy", constant("delete"), false, kmsg.ConfigTypeList, oneOf("delete"),
		"What happens to old segments: only \"delete\" (by retention.ms and retention.bytes) is supported."},
	{"max.message.bytes", "message.max.bytes", constant("1048588"), false, kmsg.ConfigTypeInt, intCheck(0),
		"The largest record batch the topic accepts, in bytes."},
	{"message.timestamp.after.max.ms", "log.message.timestamp.after.max.ms", constant("3600000"), false, kmsg.ConfigTypeLong, intCheck(0),
		"How far in the future (ms) a CreateTime batch's timestamp may be; later ones are rejected with INVALID_TIMESTAMP."},
	{"message.timestamp.before.max.ms", "log.message.timestamp.before.max.ms", constant(maxLong), false, kmsg.ConfigTypeLong, intCheck(0),
		"How far in the past (ms) a CreateTime batch's timestamp may be; older ones are rejected with INVALID_TIMESTAMP."},
	{"message.timestamp.type", "log.message.timestamp.type", constant("CreateTime"), false, kmsg.ConfigTypeString, oneOf("CreateTime", "LogAppendTime"),
		"CreateTime keeps the producer's timestamps; LogAppendTime replaces them with the leader's clock."},
	{"min.insync.replicas", "min.insync.replicas", constant("1"), false, kmsg.ConfigTypeInt, intCheck(1),
		"With acks=all, the fewest in-sync replicas a write needs, else NOT_ENOUGH_REPLICAS."},
	{"retention.bytes", "log.retention.bytes", constant("-1"), false, kmsg.ConfigTypeLong, intCheck(-1),
		"Whole segments are deleted while a partition is larger than this many bytes; -1 for no limit."},
	{"retention.ms", "log.retention.ms", constant("604800000"), false, kmsg.ConfigTypeLong, intCheck(-1),
		"Whole segments whose newest record is older than this (ms) are deleted; -1 for no limit."},
	{"segment.bytes", "log.segment.bytes", func(b *Broker) string { return strconv.FormatInt(b.cfg.SegmentBytes, 10) }, true, kmsg.ConfigTypeInt, intCheck(14),
		"The active segment rolls before it grows past this many bytes."},
	{"segment.ms", "log.roll.ms", constant("604800000"), false, kmsg.ConfigTypeLong, intCheck(1),
		"The active segment rolls once its first record is this old (ms)."},
}

func findConfigDef(name string) *configDef {
	for i := range topicConfigDefs {
		if topicConfigDefs[i].name == name {
			return &topicConfigDefs[i]
		}
	}
	return nil
}

func findBrokerConfigDef(name string) *configDef {
	for i := range topicConfigDefs {
		if topicConfigDefs[i].broker == name {
			return &topicConfigDefs[i]
		}
	}
	for i := range brokerConfigDefs {
		if brokerConfigDefs[i].broker == name {
			return &brokerConfigDefs[i]
		}
	}
	return nil
}

// validateConfigs checks requested topic configs.
func validateConfigs(cfgs map[string]*string) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range cfgs {
		d := findConfigDef(k)
		if d == nil {
			return nil, fmt.Errorf("unknown or unsupported topic config %q", k)
		}
		if v == nil {
			continue
		}
		if err := d.check(*v); err != nil {
			return nil, fmt.Errorf("config %s=%q: %v", k, *v, err)
		}
		out[k] = *v
	}
	return out, nil
}

// resolved is one config's effective value, where it came from, and the
// values it overrides (Kafka's synonyms, most specific first).
type resolved struct {
	value    string
	source   kmsg.ConfigSource
	synonyms []kafka.ConfigSynonym
}

// resolve finds a topic config's value: the topic's own, then this node's
// dynamic broker config, the cluster-wide dynamic default, and last the
// server flag or Kafka's default.
func (b *Broker) resolve(d *configDef, topic map[string]string, node, cluster map[string]string) resolved {
	var r resolved
	add := func(name, v string, src kmsg.ConfigSource) {
		if r.synonyms == nil {
			r.value, r.source = v, src
		}
		r.synonyms = append(r.synonyms, kafka.ConfigSynonym{Name: name, Value: v, Source: int8(src)})
	}
	if v, ok := topic[d.name]; ok {
		add(d.name, v, kmsg.ConfigSourceDynamicTopicConfig)
	}
	if v, ok := node[d.broker]; ok {
		add(d.broker, v, kmsg.ConfigSourceDynamicBrokerConfig)
	}
	if v, ok := cluster[d.broker]; ok {
		add(d.broker, v, kmsg.ConfigSourceDynamicDefaultBrokerConfig)
	}
	src := kmsg.ConfigSourceDefaultConfig
	if d.static {
		src = kmsg.ConfigSourceStaticBrokerConfig
	}
	add(d.broker, d.def(b), src)
	return r
}

// topicConfig returns the parsed configs of a topic (defaults when it does
// not exist), cached until the metadata changes.
func (b *Broker) topicConfig(topic string) *topicConfig {
	b.mu.RLock()
	c := b.cfgs[topic]
	b.mu.RUnlock()
	if c != nil {
		return c
	}
	t, _ := b.metaSM.topic(topic)
	node, cluster := b.metaSM.brokerConfigs(strconv.Itoa(int(b.cfg.NodeID))), b.metaSM.brokerConfigs("")
	get := func(name string) string { return b.resolve(findConfigDef(name), t.Configs, node, cluster).value }
	num := func(name string) int64 {
		n, _ := strconv.ParseInt(get(name), 10, 64)
		return n
	}
	c = &topicConfig{
		retentionBytes:  num("retention.bytes"),
		segmentBytes:    num("segment.bytes"),
		maxMessageBytes: num("max.message.bytes"),
		minInsync:       int(num("min.insync.replicas")),
		logAppendTime:   get("message.timestamp.type") == "LogAppendTime",
		tsBefore:        num("message.timestamp.before.max.ms"),
		tsAfter:         num("message.timestamp.after.max.ms"),
	}
	if ms := num("retention.ms"); ms >= 0 {
		c.retentionAge = time.Duration(ms) * time.Millisecond
	}
	c.segmentAge = time.Duration(num("segment.ms")) * time.Millisecond
	b.mu.Lock()
	b.cfgs[topic] = c
	b.mu.Unlock()
	return c
}

// timestampOK applies message.timestamp.before/after.max.ms to a CreateTime
// batch, so a producer cannot pin retention with far-off timestamps.
func (c *topicConfig) timestampOK(first, max int64, now time.Time) bool {
	if c.logAppendTime {
		return true
	}
	ms := now.UnixMilli()
	if first >= 0 && c.tsBefore < ms && first < ms-c.tsBefore {
		return false
	}
	return max < 0 || max-ms <= c.tsAfter
}

// describeTopicConfigs lists every supported config of a topic.
func (b *Broker) describeTopicConfigs(t topicMeta) []kafka.ConfigEntry {
	node, cluster := b.metaSM.brokerConfigs(strconv.Itoa(int(b.cfg.NodeID))), b.metaSM.brokerConfigs("")
	var out []kafka.ConfigEntry
	for i := range topicConfigDefs {
		d := &topicConfigDefs[i]
		r := b.resolve(d, t.Configs, node, cluster)
		v := r.value
		out = append(out, kafka.ConfigEntry{Name: d.name, Value: &v, Type: int8(d.typ), Source: int8(r.source),
			IsDefault: r.source == kmsg.ConfigSourceDefaultConfig, Synonyms: r.synonyms, Doc: d.doc})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// listValue splits a list config ("a,b").
func listValue(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
