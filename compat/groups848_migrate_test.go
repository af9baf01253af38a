package compat

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// consumeN polls cl until it has n records.
func consumeN(t *testing.T, cl *kgo.Client, n int, d time.Duration) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records in %v", len(out), n, d)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s-%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

// TestKIP848ClassicGroupMigration: with group.consumer.migration.policy
// set to disabled, Chronik does what Kafka does. While a classic group has
// members (franz-go with its classic balancer), a KIP-848 heartbeat for
// it is refused with GROUP_ID_NOT_FOUND and says why, and the classic
// members carry on; once they have left, a franz-go consumer with the new
// protocol takes the group over and resumes from the offsets the classic
// members committed. (The default policy upgrades the group online:
// groups848_upgrade_test.go.)
func TestKIP848ClassicGroupMigration(t *testing.T) {
	c := startCluster(t, 3, withTOML(`group_consumer_migration_policy = "disabled"`))
	const topic, group = "migrate", "migrate-group"
	createTopic(t, c, topic, 4, 3, nil)
	prod := newFranz(t, c, kgo.DefaultProduceTopic(topic))
	produceAll(t, prod, topic, 200, "first")

	classic := newFranz(t, c, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group), kgo.ClientID("migrate-classic"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	consumeN(t, classic, 200, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := classic.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("classic commit: %v", err)
	}

	probe := newFranz(t, c)
	bc, err := kadm.NewClient(probe).DescribeBrokerConfigs(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	policy := "unset"
	for _, rc := range bc {
		for _, e := range rc.Configs {
			if e.Key == "group.consumer.migration.policy" {
				policy = e.MaybeValue()
			}
		}
	}
	if policy != "disabled" {
		t.Fatalf("DescribeConfigs: group.consumer.migration.policy %q, want disabled", policy)
	}
	hb := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	hb.Group, hb.MemberID, hb.MemberEpoch, hb.RebalanceTimeoutMillis = group, "probe-member-0000000000", 0, 30000
	hb.SubscribedTopicNames, hb.Topics = []string{topic}, []kmsg.ConsumerGroupHeartbeatRequestTopic{}
	resp, err := hb.RequestWith(ctx, probe)
	if err != nil {
		t.Fatalf("ConsumerGroupHeartbeat: %v", err)
	}
	msg := ""
	if resp.ErrorMessage != nil {
		msg = *resp.ErrorMessage
	}
	t.Logf("KIP-848 join of a classic group with a member: %v %q", kerr.ErrorForCode(resp.ErrorCode), msg)
	if resp.ErrorCode != kerr.GroupIDNotFound.Code || !strings.Contains(msg, "classic") {
		t.Fatalf("KIP-848 join of a classic group with members: error %d %q, want GROUP_ID_NOT_FOUND and the reason", resp.ErrorCode, msg)
	}
	adm := kadm.NewClient(probe)
	dg, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if g := dg[group]; g.State != "Stable" || len(g.Members) != 1 {
		t.Fatalf("classic group after the refused join: %s with %d members, want Stable with 1", g.State, len(g.Members))
	}

	produceAll(t, prod, topic, 100, "second")
	classic.Close() // leaves the group
	waitFor(t, 20*time.Second, "the classic group to be empty", func() bool {
		dg, err := adm.DescribeGroups(ctx, group)
		return err == nil && dg[group].State == "Empty"
	})

	start := time.Now()
	next := newFranz(t, c, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group), kgo.ClientID("migrate-848"),
		kgo.ServerSideBalancer(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consumeN(t, next, 100, 60*time.Second)
	for _, r := range got {
		if !strings.HasPrefix(string(r.Value), "second-") {
			t.Fatalf("the KIP-848 consumer read %q: it did not resume from the classic group's offsets", r.Value)
		}
	}
	t.Logf("the KIP-848 consumer took the emptied group over and read the 100 new records in %v", time.Since(start).Round(time.Millisecond))
	cg, err := adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if g := cg[group]; g.Err != nil || len(g.Members) != 1 {
		t.Errorf("ConsumerGroupDescribe after the switch: %v with %d members", g.Err, len(g.Members))
	}
}
