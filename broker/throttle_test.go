package broker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/kafka"
)

// TestReplicationThrottleConfig: the flag sets the learner rate, the
// dynamic broker config overrides it live (this node's value over the
// cluster-wide one), and DescribeConfigs shows where it comes from.
func TestReplicationThrottleConfig(t *testing.T) {
	cfg := oneNodeConfig(t)
	cfg.ReplicationThrottle = 1 << 20
	b := startNode(t, cfg)
	if got := b.throttle.Load(); got != 1<<20 {
		t.Fatalf("rate from the flag: %d", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	set := func(entity, v string) {
		t.Helper()
		res := kafka.AlterConfigsResource{Type: int8(kmsg.ConfigResourceTypeBroker), Name: entity, Incremental: true,
			Ops: []kafka.ConfigOp{{Name: throttleConfig, Op: kafka.ConfigSet, Value: &v}}}
		if code, msg := b.AlterConfigs(ctx, res, false); code != 0 {
			t.Fatalf("set %s=%s on %q: %d %s", throttleConfig, v, entity, code, msg)
		}
	}
	waitRate := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for b.throttle.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("learner rate %d, want %d", b.throttle.Load(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	set("", "2000000")
	waitRate(2000000)
	set("1", "0")
	waitRate(0)
	var src int8
	for _, e := range b.BrokerConfigs() {
		if e.Name == throttleConfig {
			src = e.Source
			if *e.Value != "0" {
				t.Fatalf("DescribeConfigs shows %s", *e.Value)
			}
		}
	}
	if src != int8(kmsg.ConfigSourceDynamicBrokerConfig) {
		t.Fatalf("source %d", src)
	}
	bad := "-5"
	if code, _ := b.AlterConfigs(ctx, kafka.AlterConfigsResource{Type: int8(kmsg.ConfigResourceTypeBroker), Incremental: true,
		Ops: []kafka.ConfigOp{{Name: throttleConfig, Op: kafka.ConfigSet, Value: &bad}}}, false); code == 0 {
		t.Fatal("a negative rate was accepted")
	}
}

// cluster.toml's replication_throttle is the default of every node; the
// flag overrides it.
func TestReplicationThrottleFromClusterFile(t *testing.T) {
	cfg := oneNodeConfig(t)
	cfg.Cluster.ReplicationThrottle = 3000
	if err := cfg.defaults(); err != nil || cfg.ReplicationThrottle != 3000 {
		t.Fatalf("from cluster.toml: %d %v", cfg.ReplicationThrottle, err)
	}
	cfg = oneNodeConfig(t)
	cfg.Cluster.ReplicationThrottle, cfg.ReplicationThrottle = 3000, 5000
	if err := cfg.defaults(); err != nil || cfg.ReplicationThrottle != 5000 {
		t.Fatalf("flag over cluster.toml: %d %v", cfg.ReplicationThrottle, err)
	}
	// Neither: the default; negative either way: unlimited, and it stays
	// so when defaults run again.
	cfg = oneNodeConfig(t)
	if err := cfg.defaults(); err != nil || cfg.ReplicationThrottle != DefaultReplicationThrottle {
		t.Fatalf("unset: %d %v", cfg.ReplicationThrottle, err)
	}
	for _, c := range []struct{ file, flag int64 }{{-1, 0}, {3000, -1}} {
		cfg = oneNodeConfig(t)
		cfg.Cluster.ReplicationThrottle, cfg.ReplicationThrottle = c.file, c.flag
		for range 2 {
			if err := cfg.defaults(); err != nil || cfg.ReplicationThrottle >= 0 {
				t.Fatalf("file %d flag %d: %d %v, want unlimited (negative)", c.file, c.flag, cfg.ReplicationThrottle, err)
			}
		}
	}
}
