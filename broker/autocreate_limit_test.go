package broker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAutoCreateCountsTowardMaxPartitions: topics that Metadata creates
// count toward the partition limits like CreateTopics' (with the default
// partition count, as does a CreateTopics asking for -1); past a limit the
// topics are answered POLICY_VIOLATION and not created.
func TestAutoCreateCountsTowardMaxPartitions(t *testing.T) {
	cfg := oneNodeConfig(t)
	cfg.Cluster.DefaultPartitions = 3
	// __consumer_offsets has 1: room for two auto-created topics.
	cfg.KafkaLimits.MaxPartitions, cfg.KafkaLimits.MaxPartitionsPerRequest = 8, 5
	b := startNode(t, cfg)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Cluster.Nodes[0].Kafka), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	metadata := func(topics ...string) map[string]int16 {
		t.Helper()
		req := kmsg.NewPtrMetadataRequest()
		req.AllowAutoTopicCreation = true
		for _, name := range topics {
			req.Topics = append(req.Topics, kmsg.MetadataRequestTopic{Topic: kmsg.StringPtr(name)})
		}
		resp, err := cl.Broker(1).Request(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int16{}
		for _, rt := range resp.(*kmsg.MetadataResponse).Topics {
			out[*rt.Topic] = rt.ErrorCode
		}
		return out
	}
	exists := func(name string) bool { return b.Topics([]string{name}, true)[0].Err == 0 }

	// Two at once are 6 partitions, past the 5 allowed per request.
	if got := metadata("auto-a", "auto-b"); got["auto-a"] != kerr.PolicyViolation.Code || got["auto-b"] != kerr.PolicyViolation.Code {
		t.Fatalf("auto-creating 6 partitions in one request: %v, want POLICY_VIOLATION for both", got)
	}
	if exists("auto-a") || exists("auto-b") {
		t.Fatal("a refused auto-creation created a topic")
	}
	for _, name := range []string{"auto-a", "auto-b"} {
		if got := metadata(name)[name]; got != kerr.LeaderNotAvailable.Code && got != 0 {
			t.Fatalf("auto-creating %s: error %d", name, got)
		}
		if !exists(name) {
			t.Fatalf("%s was not auto-created", name)
		}
	}
	// 7 of 8 used: a third is refused, and so is a CreateTopics asking for
	// the default count, which is 3, not 1.
	if got := metadata("auto-c")["auto-c"]; got != kerr.PolicyViolation.Code {
		t.Fatalf("auto-creating past --max-partitions: error %d, want POLICY_VIOLATION", got)
	}
	if exists("auto-c") {
		t.Fatal("auto-c was created past the limit")
	}
	creq := kmsg.NewPtrCreateTopicsRequest()
	creq.TimeoutMillis = 5000
	ct := kmsg.NewCreateTopicsRequestTopic()
	ct.Topic, ct.NumPartitions, ct.ReplicationFactor = "default-count", -1, -1
	creq.Topics = []kmsg.CreateTopicsRequestTopic{ct}
	cresp, err := cl.Broker(1).Request(ctx, creq)
	if err != nil {
		t.Fatal(err)
	}
	if got := cresp.(*kmsg.CreateTopicsResponse).Topics[0].ErrorCode; got != kerr.PolicyViolation.Code {
		t.Fatalf("CreateTopics of the default count with 1 partition left: error %d, want POLICY_VIOLATION", got)
	}
}
