package compat

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// metadataFor sends one Metadata request (the newest version both sides
// know) for topic, with or without allow_auto_topic_creation, and returns
// the topic's error code and partition count.
func metadataFor(t testing.TB, cl *kgo.Client, topic string, allowCreate bool) (int16, int) {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = allowCreate
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("Metadata %s: %v", topic, err)
	}
	if len(resp.Topics) != 1 {
		t.Fatalf("Metadata %s: %d topics answered", topic, len(resp.Topics))
	}
	return resp.Topics[0].ErrorCode, len(resp.Topics[0].Partitions)
}

// topicExists asks whether topic exists (with a Metadata request that
// cannot create it).
func topicExists(t testing.TB, c *cluster, topic string) bool {
	t.Helper()
	code, _ := metadataFor(t, newFranz(t, c), topic, false)
	return code == 0 || code == kerr.LeaderNotAvailable.Code
}

// TestAdminAutoCreateOff: with auto_create_topics = false, Metadata for an
// unknown topic answers UNKNOWN_TOPIC_OR_PARTITION whatever the request asks
// (franz-go with allow_auto_topic_creation, sarama, kcat -L -t) and creates
// nothing.
func TestAdminAutoCreateOff(t *testing.T) {
	c := startCluster(t, 3, withTOML("auto_create_topics = false"))
	cl := newFranz(t, c)
	if code, _ := metadataFor(t, cl, "nope-franz", true); code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("Metadata (allow create) for an unknown topic: error %d, want UNKNOWN_TOPIC_OR_PARTITION", code)
	}

	cfg := saramaConfig()
	cfg.Metadata.Retry.Max = 1
	scl := newSaramaClient(t, c, cfg)
	if _, err := scl.Partitions("nope-sarama"); !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		t.Fatalf("sarama Partitions of an unknown topic: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}

	needKcat(t)
	out, stderr, _, timedOut := kcatRun(c, 20*time.Second, nil, "-L", "-t", "nope-kcat")
	if timedOut {
		t.Fatalf("kcat -L timed out: %s", stderr)
	}
	if !strings.Contains(out+stderr, "Broker: Unknown topic or partition") {
		t.Fatalf("kcat -L -t nope-kcat does not report the topic unknown:\n%s\n%s", out, stderr)
	}

	for _, name := range []string{"nope-franz", "nope-sarama", "nope-kcat"} {
		if topicExists(t, c, name) {
			t.Fatalf("topic %s was created with auto_create_topics = false", name)
		}
	}
}

// TestAdminAutoCreatePerRequest: with auto-create on (the default),
// Metadata v4+ creates a topic only when the request allows it, and an old
// (v2) request always may, as in Kafka.
func TestAdminAutoCreatePerRequest(t *testing.T) {
	c := startCluster(t, 3)
	cl := newFranz(t, c)
	if code, _ := metadataFor(t, cl, "auto-no", false); code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("Metadata without allow_auto_topic_creation: error %d, want UNKNOWN_TOPIC_OR_PARTITION", code)
	}
	if topicExists(t, c, "auto-no") {
		t.Fatal("topic created although the request did not allow it")
	}
	if code, _ := metadataFor(t, cl, "auto-yes", true); code != kerr.LeaderNotAvailable.Code {
		t.Fatalf("Metadata with allow_auto_topic_creation: error %d, want LEADER_NOT_AVAILABLE (being created)", code)
	}
	waitFor(t, 10*time.Second, "the auto-created topic to have its partition", func() bool {
		code, n := metadataFor(t, cl, "auto-yes", false)
		return code == 0 && n == 1
	})

	// kgo picks the highest version both sides know; cap it at Metadata v2.
	old := newFranz(t, c, kgo.MaxVersions(kversion.V0_10_2()))
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr("auto-v2")
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := req.RequestWith(ctx, old); err != nil {
		t.Fatalf("Metadata v2: %v", err)
	}
	if !topicExists(t, c, "auto-v2") {
		t.Fatal("Metadata v2 did not create the topic")
	}
}
