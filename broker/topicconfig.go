package broker

import (
	"fmt"
	"sort"
	"strconv"
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
}

// configDef describes one supported topic config: its default (as Kafka's)
// and how to check a value.
type configDef struct {
	name  string
	def   func(b *Broker) string
	typ   kmsg.ConfigType
	check func(v string) error
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

var topicConfigDefs = []configDef{
	{"cleanup.policy", constant("delete"), kmsg.ConfigTypeList, oneOf("delete")},
	{"max.message.bytes", constant("1048588"), kmsg.ConfigTypeInt, intCheck(0)},
	{"message.timestamp.type", constant("CreateTime"), kmsg.ConfigTypeString, oneOf("CreateTime", "LogAppendTime")},
	{"min.insync.replicas", constant("1"), kmsg.ConfigTypeInt, intCheck(1)},
	{"retention.bytes", constant("-1"), kmsg.ConfigTypeLong, intCheck(-1)},
	{"retention.ms", constant("604800000"), kmsg.ConfigTypeLong, intCheck(-1)},
	{"segment.bytes", func(b *Broker) string { return strconv.FormatInt(b.cfg.SegmentBytes, 10) }, kmsg.ConfigTypeInt, intCheck(14)},
	{"segment.ms", constant("604800000"), kmsg.ConfigTypeLong, intCheck(1)},
}

func findConfigDef(name string) *configDef {
	for i := range topicConfigDefs {
		if topicConfigDefs[i].name == name {
			return &topicConfigDefs[i]
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
	get := func(name string) string {
		if v, ok := t.Configs[name]; ok {
			return v
		}
		return findConfigDef(name).def(b)
	}
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

// describeTopicConfigs lists every supported config of a topic.
func (b *Broker) describeTopicConfigs(t topicMeta) []kafka.ConfigEntry {
	var out []kafka.ConfigEntry
	for _, d := range topicConfigDefs {
		v, set := t.Configs[d.name]
		e := kafka.ConfigEntry{Name: d.name, Type: int8(d.typ)}
		if set {
			e.Source = int8(kmsg.ConfigSourceDynamicTopicConfig)
		} else {
			v = d.def(b)
			e.IsDefault = true
			e.Source = int8(kmsg.ConfigSourceDefaultConfig)
		}
		val := v
		e.Value = &val
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
