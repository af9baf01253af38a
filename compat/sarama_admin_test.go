package compat

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func TestSaramaAdminTopics(t *testing.T) {
	c := startCluster(t, 3)
	cl := newSaramaClient(t, c, nil)
	adm, err := sarama.NewClusterAdminFromClient(cl)
	if err != nil {
		t.Fatal(err)
	}
	const topic = "sarama-admin"
	retention := "3600000"
	create := func() {
		t.Helper()
		var err error
		deadline := time.Now().Add(20 * time.Second)
		for {
			err = adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 3,
				ConfigEntries: map[string]*string{"retention.ms": &retention}}, false)
			if err == nil || time.Now().After(deadline) {
				break
			}
			// A deleted topic may take a moment to go away everywhere.
			t.Logf("CreateTopic: %v (retrying)", err)
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("CreateTopic: %v", err)
		}
	}
	create()
	if err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 3}, false); !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		t.Fatalf("second CreateTopic: got %v, want TOPIC_ALREADY_EXISTS", err)
	}

	waitFor(t, 20*time.Second, "the topic in ListTopics with 3 led partitions", func() bool {
		topics, err := adm.ListTopics()
		if err != nil {
			return false
		}
		d, ok := topics[topic]
		if !ok || d.NumPartitions != 3 || d.ReplicationFactor != 3 {
			return false
		}
		if err := cl.RefreshMetadata(topic); err != nil {
			return false
		}
		for p := int32(0); p < 3; p++ {
			if _, err := cl.Leader(topic, p); err != nil {
				return false
			}
		}
		return true
	})
	md, err := adm.DescribeTopics([]string{topic})
	if err != nil || len(md) != 1 || !errors.Is(md[0].Err, sarama.ErrNoError) || len(md[0].Partitions) != 3 {
		t.Fatalf("DescribeTopics: %v %+v", err, md)
	}
	for _, p := range md[0].Partitions {
		if len(p.Replicas) != 3 || p.Leader <= 0 {
			t.Fatalf("partition %d: leader %d replicas %v", p.ID, p.Leader, p.Replicas)
		}
	}

	entries, err := adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	if err != nil {
		t.Fatalf("DescribeConfig: %v", err)
	}
	found := false
	for _, e := range entries {
		if e.Name == "retention.ms" {
			found = true
			if e.Value != retention || e.Default {
				t.Fatalf("retention.ms: %+v", e)
			}
		}
	}
	if !found {
		t.Fatalf("DescribeConfig has no retention.ms: %+v", entries)
	}
	entries, err = adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"cleanup.policy"}})
	if err != nil || len(entries) != 1 || entries[0].Name != "cleanup.policy" || entries[0].Value != "delete" {
		t.Fatalf("DescribeConfig(cleanup.policy): %v %+v", err, entries)
	}

	msgs := make([]*sarama.ProducerMessage, 100)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(strconv.Itoa(i)), Value: sarama.ByteEncoder(testValue("sad", i))}
	}
	saramaProduceAsync(t, cl, msgs)

	if err := adm.DeleteTopic(topic); err != nil {
		t.Fatalf("DeleteTopic: %v", err)
	}
	waitFor(t, 20*time.Second, "the topic to disappear from ListTopics", func() bool {
		topics, err := adm.ListTopics()
		_, ok := topics[topic]
		return err == nil && !ok
	})
	if err := adm.DeleteTopic(topic); !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		t.Fatalf("second DeleteTopic: got %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}

	create()
	waitFor(t, 20*time.Second, "the recreated topic to be led", func() bool {
		if err := cl.RefreshMetadata(topic); err != nil {
			return false
		}
		for p := int32(0); p < 3; p++ {
			if _, err := cl.Leader(topic, p); err != nil {
				return false
			}
		}
		return true
	})
	for p := int32(0); p < 3; p++ {
		var oldest, newest int64
		waitFor(t, 10*time.Second, "ListOffsets on the recreated topic", func() bool {
			var err1, err2 error
			oldest, err1 = cl.GetOffset(topic, p, sarama.OffsetOldest)
			newest, err2 = cl.GetOffset(topic, p, sarama.OffsetNewest)
			return err1 == nil && err2 == nil
		})
		if oldest != 0 || newest != 0 {
			t.Fatalf("recreated %s/%d: offsets %d..%d, want empty", topic, p, oldest, newest)
		}
	}
	if recs := saramaReadAll(t, cl, topic); len(recs) != 0 {
		t.Fatalf("recreated topic has %d records", len(recs))
	}
}

func TestSaramaListOffsetsByTimestamp(t *testing.T) {
	c := startCluster(t, 3)
	const topic, n = "sarama-ts", 100
	createTopic(t, c, topic, 1, 3, nil)
	cl := newSaramaClient(t, c, nil)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	msgs := make([]*sarama.ProducerMessage, n)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(testValue("st", i)),
			Timestamp: base.Add(time.Duration(i) * time.Second)}
	}
	// Several records per batch, so lookups must look inside batches.
	acked := saramaProduceAsync(t, cl, msgs)
	for i := 0; i < n; i++ {
		if pos := acked[string(testValue("st", i))]; pos != [2]int64{0, int64(i)} {
			t.Fatalf("record %d acked at %v", i, pos)
		}
	}
	ms := func(d time.Duration) int64 { return base.Add(d).UnixMilli() }
	cases := []struct {
		name string
		ts   int64
		want int64
	}{
		{"earliest", sarama.OffsetOldest, 0},
		{"latest", sarama.OffsetNewest, n},
		{"first timestamp", ms(0), 0},
		{"before all", ms(-time.Hour), 0},
		{"exact middle", ms(50 * time.Second), 50},
		{"between 41 and 42", ms(41*time.Second + 500*time.Millisecond), 42},
		{"last", ms((n - 1) * time.Second), n - 1},
		{"after all", ms(n * time.Second), -1},
	}
	for _, tc := range cases {
		got, err := cl.GetOffset(topic, 0, tc.ts)
		if err != nil {
			t.Fatalf("%s: GetOffset(%d): %v", tc.name, tc.ts, err)
		}
		if got != tc.want {
			t.Errorf("%s: GetOffset(%d) = %d, want %d", tc.name, tc.ts, got, tc.want)
		}
	}
	// The records read back carry the timestamps they were produced with.
	for _, m := range saramaReadAll(t, cl, topic) {
		if want := base.Add(time.Duration(m.Offset) * time.Second); !m.Timestamp.Equal(want) {
			t.Fatalf("offset %d: timestamp %v, want %v", m.Offset, m.Timestamp, want)
		}
	}
}
