package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// alterTopic runs one IncrementalAlterConfigs with kadm and returns the
// resource's error.
func alterTopic(t testing.TB, adm *kadm.Client, topic string, cfgs ...kadm.AlterConfig) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := adm.AlterTopicConfigs(ctx, cfgs, topic)
	if err != nil {
		t.Fatalf("kadm AlterTopicConfigs: %v", err)
	}
	r, err := resp.On(topic, nil)
	if err != nil {
		t.Fatalf("kadm AlterTopicConfigs: no answer for %s: %v", topic, err)
	}
	return r.Err
}

func set(name, v string) kadm.AlterConfig {
	return kadm.AlterConfig{Op: kadm.SetConfig, Name: name, Value: kadm.StringPtr(v)}
}

// describedConfig returns one config of a resource as kadm describes it.
func describedConfig(t testing.TB, rc kadm.ResourceConfigs, key string) kadm.Config {
	t.Helper()
	for _, r := range rc {
		if r.Err != nil {
			t.Fatalf("describe %s: %v", r.Name, r.Err)
		}
		for _, c := range r.Configs {
			if c.Key == key {
				return c
			}
		}
	}
	t.Fatalf("config %s not described", key)
	return kadm.Config{}
}

func startOffset(t testing.TB, adm *kadm.Client, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("ListStartOffsets: %v", err)
	}
	o, ok := offs.Lookup(topic, 0)
	if !ok || o.Err != nil {
		t.Fatalf("ListStartOffsets %s/0: %v", topic, o.Err)
	}
	return o.Offset
}

// TestAdminTopicConfigsLive changes a topic's configs with kadm's
// IncrementalAlterConfigs on a 3-node cluster and checks each takes effect
// at once: segment.bytes and retention.bytes delete segments, max.message.bytes
// refuses a batch; bad values get Kafka's codes; DELETE restores the default.
func TestAdminTopicConfigsLive(t *testing.T) {
	c := startCluster(t, 3, withArgs("--retention-check-interval", "200ms"))
	cl := newFranz(t, c, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordRetries(3))
	adm := kadm.NewClient(cl)
	const topic = "cfg-live"
	createTopic(t, c, topic, 1, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produce := func(n int, size int) error {
		for i := 0; i < n; i++ {
			r := &kgo.Record{Topic: topic, Value: bytes.Repeat([]byte{'v'}, size)}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				return err
			}
		}
		return nil
	}
	if err := produce(50, 100); err != nil {
		t.Fatal(err)
	}

	for _, bad := range []struct {
		cfg  kadm.AlterConfig
		want error
	}{
		{set("retention.ms", "soon"), kerr.InvalidConfig},
		{set("no.such.config", "1"), kerr.InvalidConfig},
		{kadm.AlterConfig{Op: kadm.AppendConfig, Name: "retention.ms", Value: kadm.StringPtr("1")}, kerr.InvalidConfig},
		{set("min.insync.replicas", "4"), kerr.PolicyViolation},
	} {
		if err := alterTopic(t, adm, topic, bad.cfg); !errors.Is(err, bad.want) {
			t.Fatalf("alter %s=%v: %v, want %v", bad.cfg.Name, *bad.cfg.Value, err, bad.want)
		}
	}

	// The 50 records sit in the active segment; once it rolls at 1 KiB the
	// older segments exceed retention.bytes and go.
	if err := alterTopic(t, adm, topic, set("segment.bytes", "1024"), set("retention.bytes", "2048")); err != nil {
		t.Fatalf("alter segment.bytes, retention.bytes: %v", err)
	}
	if err := produce(100, 100); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "retention to delete the old segments", func() bool { return startOffset(t, adm, topic) > 50 })

	if err := alterTopic(t, adm, topic, set("max.message.bytes", "500")); err != nil {
		t.Fatalf("alter max.message.bytes: %v", err)
	}
	if err := produce(1, 1000); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("1000-byte record with max.message.bytes=500: %v, want MESSAGE_TOO_LARGE", err)
	}

	rc, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	seg := describedConfig(t, rc, "segment.bytes")
	if seg.MaybeValue() != "1024" || seg.Source != kmsg.ConfigSourceDynamicTopicConfig || len(seg.Synonyms) != 2 ||
		seg.Synonyms[1].Key != "log.segment.bytes" || seg.Synonyms[1].Source != kmsg.ConfigSourceStaticBrokerConfig {
		t.Fatalf("segment.bytes described as %+v", seg)
	}

	del := kadm.AlterConfig{Op: kadm.DeleteConfig, Name: "max.message.bytes"}
	if err := alterTopic(t, adm, topic, del); err != nil {
		t.Fatalf("delete max.message.bytes: %v", err)
	}
	if err := produce(1, 1000); err != nil {
		t.Fatalf("1000-byte record after max.message.bytes was deleted: %v", err)
	}
	rc, _ = adm.DescribeTopicConfigs(ctx, topic)
	if m := describedConfig(t, rc, "max.message.bytes"); m.MaybeValue() != "1048588" || m.Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("max.message.bytes after DELETE: %+v", m)
	}
}

// TestAdminConfigsSarama: sarama's AlterConfig replaces a topic's dynamic
// configs; DescribeConfig carries documentation; a produce with a timestamp
// beyond message.timestamp.after.max.ms gets INVALID_TIMESTAMP.
func TestAdminConfigsSarama(t *testing.T) {
	c := startCluster(t, 3)
	const topic = "cfg-sarama"
	createTopic(t, c, topic, 1, 3, map[string]*string{"retention.ms": kadm.StringPtr("3600000")})
	adm, err := sarama.NewClusterAdmin(c.bootstrap(), saramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	after := "60000"
	if err := adm.AlterConfig(sarama.TopicResource, topic, map[string]*string{"message.timestamp.after.max.ms": &after}, false); err != nil {
		t.Fatalf("sarama AlterConfig: %v", err)
	}
	res, err := adm.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: topic}},
		sarama.DescribeConfigsOptions{IncludeSynonyms: true, IncludeDocumentation: true})
	if err != nil || len(res) != 1 {
		t.Fatalf("sarama DescribeConfigs: %v (%d resources)", err, len(res))
	}
	got := map[string]sarama.ConfigEntry{}
	for _, e := range res[0].Configs {
		got[e.Name] = e
	}
	if e := got["retention.ms"]; e.Value != "604800000" || !e.Default {
		t.Fatalf("AlterConfig should replace every dynamic config; retention.ms is %+v", e)
	}
	if e := got["message.timestamp.after.max.ms"]; e.Value != after || e.Source != sarama.SourceTopic {
		t.Fatalf("message.timestamp.after.max.ms is %+v", e)
	}
	if e := got["retention.ms"]; e.Documentation == nil || *e.Documentation == "" {
		t.Fatalf("retention.ms has no documentation: %+v", e)
	}

	bres, err := adm.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.BrokerResource, Name: "1"}},
		sarama.DescribeConfigsOptions{IncludeSynonyms: true, IncludeDocumentation: true})
	if err != nil || len(bres) != 1 || len(bres[0].Configs) == 0 {
		t.Fatalf("sarama DescribeConfigs broker 1: %v %+v", err, bres)
	}
	for _, e := range bres[0].Configs {
		if e.Documentation == nil || *e.Documentation == "" || len(e.Synonyms) == 0 {
			t.Fatalf("broker config %s has no documentation or synonyms: %+v", e.Name, e)
		}
	}

	cl := newFranz(t, c, kgo.RecordRetries(2))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	future := &kgo.Record{Topic: topic, Value: []byte("future"), Timestamp: time.Now().Add(10 * time.Minute)}
	if err := cl.ProduceSync(ctx, future).FirstErr(); !errors.Is(err, kerr.InvalidTimestamp) {
		t.Fatalf("record 10 minutes ahead with after.max.ms=60000: %v, want INVALID_TIMESTAMP", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("now")}).FirstErr(); err != nil {
		t.Fatalf("record timestamped now: %v", err)
	}
}

// TestAdminBrokerConfigs: a cluster-wide dynamic broker config is the
// default of every topic on every node; a per-node one overrides it there.
func TestAdminBrokerConfigs(t *testing.T) {
	c := startCluster(t, 3)
	cl := newFranz(t, c, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordRetries(2))
	adm := kadm.NewClient(cl)
	const topic = "cfg-broker"
	createTopic(t, c, topic, 1, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{set("message.max.bytes", "500")})
	if err != nil || resp[0].Err != nil {
		t.Fatalf("cluster-wide AlterBrokerConfigs: %v %+v", err, resp)
	}
	resp, err = adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{set("log.retention.ms", "7200000")}, 2)
	if err != nil || resp[0].Err != nil {
		t.Fatalf("AlterBrokerConfigs for node 2: %v %+v", err, resp)
	}
	if resp, _ := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{set("broker.id", "7")}, 2); resp[0].Err == nil {
		t.Fatal("a static broker config was altered")
	}
	big := &kgo.Record{Topic: topic, Value: bytes.Repeat([]byte{'x'}, 1000)}
	if err := cl.ProduceSync(ctx, big).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("1000-byte record with message.max.bytes=500 cluster-wide: %v, want MESSAGE_TOO_LARGE", err)
	}
	rc, err := adm.DescribeBrokerConfigs(ctx) // the cluster-wide defaults
	if err != nil {
		t.Fatal(err)
	}
	if m := describedConfig(t, rc, "message.max.bytes"); m.MaybeValue() != "500" || m.Source != kmsg.ConfigSourceDynamicDefaultBrokerConfig {
		t.Fatalf("cluster-wide message.max.bytes: %+v", m)
	}
	rc, err = adm.DescribeBrokerConfigs(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r := describedConfig(t, rc, "log.retention.ms"); r.MaybeValue() != "7200000" || r.Source != kmsg.ConfigSourceDynamicBrokerConfig {
		t.Fatalf("node 2 log.retention.ms: %+v", r)
	}
	if m := describedConfig(t, rc, "message.max.bytes"); m.MaybeValue() != "500" || m.Source != kmsg.ConfigSourceDynamicDefaultBrokerConfig {
		t.Fatalf("node 2 message.max.bytes: %+v", m)
	}
	rc, err = adm.DescribeBrokerConfigs(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r := describedConfig(t, rc, "log.retention.ms"); r.MaybeValue() != "604800000" {
		t.Fatalf("node 1 log.retention.ms (node 2's override must not apply): %+v", r)
	}
}

// TestAdminMinInsyncLive: min.insync.replicas changed with kadm applies to
// the next acks=all produce, without a restart.
func TestAdminMinInsyncLive(t *testing.T) {
	c := startCluster(t, 3, withArgs("--isr-lag-time", "1s"))
	// franz-go refreshes metadata before it retries a NOT_ENOUGH_REPLICAS
	// batch, at most every MetadataMinAge (5 s by default): with the
	// default, the retry raced the 5 s produce timeout below and the
	// broker's answer was never seen (CI timed out so).
	cl := newFranz(t, c, kgo.RecordRetries(1), kgo.RequestRetries(1), kgo.MetadataMinAge(200*time.Millisecond))
	adm := kadm.NewClient(cl)
	const topic = "cfg-isr"
	createTopic(t, c, topic, 1, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	meta, err := adm.Metadata(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	leader := meta.Topics[topic].Partitions[0].Leader
	victim := 1
	for victim == int(leader) {
		victim++
	}
	c.kill(victim)
	if err := alterTopic(t, adm, topic, set("min.insync.replicas", "3")); err != nil {
		t.Fatalf("alter min.insync.replicas: %v", err)
	}
	// Each distinct answer on the way is logged: a timeout says why.
	seen := map[string]bool{}
	waitFor(t, 20*time.Second, "acks=all to be refused with 2 of 3 in sync", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		err := cl.ProduceSync(pctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr()
		if msg := fmt.Sprint(err); !seen[msg] {
			seen[msg] = true
			t.Logf("%s produce with node %d down and min.insync.replicas=3: %v", time.Now().Format("15:04:05.000"), victim, err)
		}
		return errors.Is(err, kerr.NotEnoughReplicas)
	})
	if err := alterTopic(t, adm, topic, set("min.insync.replicas", "2")); err != nil {
		t.Fatalf("alter min.insync.replicas: %v", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("y")}).FirstErr(); err != nil {
		t.Fatalf("acks=all with min.insync.replicas=2 and 2 in sync: %v", err)
	}
}

// TestAdminConcurrentAlterConfigs: IncrementalAlterConfigs of different
// configs of one topic, sent at once through different nodes, all apply.
func TestAdminConcurrentAlterConfigs(t *testing.T) {
	c := startCluster(t, 3)
	const topic = "cfg-concurrent"
	createTopic(t, c, topic, 1, 3, nil)
	names := []string{"retention.ms", "retention.bytes", "segment.ms", "segment.bytes", "max.message.bytes",
		"message.timestamp.after.max.ms", "message.timestamp.before.max.ms", "min.insync.replicas"}
	values := []string{"100000", "100000", "100000", "100000", "100000", "100000", "100000", "2"}
	errs := make(chan error, len(names))
	for i := range names {
		go func() {
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.bootstrap()[i%3]))
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := kadm.NewClient(cl).AlterTopicConfigs(ctx, []kadm.AlterConfig{set(names[i], values[i])}, topic)
			if err == nil {
				_, err = resp.On(topic, nil)
				if err == nil {
					err = resp[0].Err
				}
			}
			errs <- err
		}()
	}
	for range names {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent AlterTopicConfigs: %v", err)
		}
	}
	adm := kadm.NewClient(newFranz(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		if got := describedConfig(t, rc, n); got.MaybeValue() != values[i] || got.Source != kmsg.ConfigSourceDynamicTopicConfig {
			t.Errorf("%s: %+v, want %s set on the topic", n, got, values[i])
		}
	}
}
