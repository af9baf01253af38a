package compat

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

// TestKafkaGoClientProduceFetch drives kafka-go's Client as the issue
// reports: create a topic, produce compressed batches to it, then fetch them
// back with the same Client (it routes both by its metadata cache).
func TestKafkaGoClientProduceFetch(t *testing.T) {
	c := startCluster(t, 1)
	const topic = "kg-client"
	cl := &kafka.Client{Addr: kafka.TCP(c.bootstrap()...), Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cres, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		t.Fatalf("kafka-go CreateTopics: %v", err)
	}
	if err := cres.Errors[topic]; err != nil {
		t.Fatalf("kafka-go CreateTopics: %v", err)
	}
	const batches = 100
	for i := 0; i < batches; i++ {
		recs := kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes(testValue("kgc", i))})
		res, err := cl.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: 0, RequiredAcks: kafka.RequireAll,
			Compression: compress.Snappy, Records: recs})
		if err != nil {
			t.Fatalf("kafka-go Produce %d: %v", i, err)
		}
		if res.Error != nil {
			t.Fatalf("kafka-go Produce %d: %v", i, res.Error)
		}
	}
	var got int
	for off := int64(0); off < batches; {
		res, err := cl.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: 0, Offset: off, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: time.Second})
		if err != nil {
			t.Fatalf("kafka-go Fetch at %d: %v", off, err)
		}
		if res.Error != nil {
			t.Fatalf("kafka-go Fetch at %d: %v", off, res.Error)
		}
		n := 0
		for {
			r, err := res.Records.ReadRecord()
			if err != nil {
				break
			}
			if r.Offset != off {
				t.Fatalf("fetched offset %d, want %d", r.Offset, off)
			}
			off++
			n++
		}
		if n == 0 {
			t.Fatalf("kafka-go Fetch at %d returned no records (high watermark %d)", off, res.HighWatermark)
		}
		got += n
	}
	if got != batches {
		t.Fatalf("fetched %d of %d", got, batches)
	}
}

// TestKafkaGoCreateTopicsMetadata: right after CreateTopics answers (kafka-go's
// Conn sends it with an empty replica assignment), every partition must be
// listed by Metadata on every node, as Kafka does.
func TestKafkaGoCreateTopicsMetadata(t *testing.T) {
	c := startCluster(t, 3)
	for i, addr := range c.bootstrap() {
		conn, err := kafka.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		topic := "kg-created-" + strconv.Itoa(i)
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if err := conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 3, ReplicationFactor: 3}); err != nil {
			t.Fatalf("kafka-go CreateTopics via %s: %v", addr, err)
		}
		for _, other := range c.bootstrap() {
			oc, err := kafka.Dial("tcp", other)
			if err != nil {
				t.Fatal(err)
			}
			oc.SetDeadline(time.Now().Add(10 * time.Second))
			parts, err := oc.ReadPartitions(topic)
			oc.Close()
			if err != nil {
				t.Fatalf("kafka-go ReadPartitions(%s) via %s: %v", topic, other, err)
			}
			if len(parts) != 3 {
				t.Fatalf("Metadata via %s right after CreateTopics via %s lists %d partitions of %s, want 3", other, addr, len(parts), topic)
			}
		}
	}
}

// TestKafkaGoDeleteTopicsMetadata is kafka-go's own testDeleteTopics: after
// DeleteTopics, Metadata v1 for the deleted names lists no partitions.
func TestKafkaGoDeleteTopicsMetadata(t *testing.T) {
	c := startCluster(t, 3)
	conn, err := kafka.Dial("tcp", c.bootstrap()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if err := conn.CreateTopics(kafka.TopicConfig{Topic: "kg-del-1", NumPartitions: 1, ReplicationFactor: 1},
		kafka.TopicConfig{Topic: "kg-del-2", NumPartitions: 1, ReplicationFactor: 1}); err != nil {
		t.Fatalf("kafka-go CreateTopics: %v", err)
	}
	if err := conn.DeleteTopics("kg-del-1", "kg-del-2"); err != nil {
		t.Fatalf("kafka-go DeleteTopics: %v", err)
	}
	parts, err := conn.ReadPartitions("kg-del-1", "kg-del-2")
	if err != nil {
		t.Fatalf("kafka-go ReadPartitions: %v", err)
	}
	if len(parts) != 0 {
		t.Fatalf("Metadata v1 right after DeleteTopics lists %d partitions, want none", len(parts))
	}
}

// TestKafkaGoTwoReaders: a group of two kafka-go Readers on 3 partitions;
// once the second has joined, both receive records.
func TestKafkaGoTwoReaders(t *testing.T) {
	c := startCluster(t, 1)
	const topic, group = "kg-two", "kg-two-g"
	createTopic(t, c, topic, 3, 1, nil)
	var counts [2]atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func(i int) chan struct{} {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: c.bootstrap(), GroupID: group, Topic: topic,
			MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 200 * time.Millisecond, CommitInterval: 100 * time.Millisecond,
			HeartbeatInterval: 300 * time.Millisecond, SessionTimeout: 10 * time.Second, RebalanceTimeout: 5 * time.Second,
			JoinGroupBackoff: 200 * time.Millisecond, StartOffset: kafka.FirstOffset})
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer r.Close()
			for {
				if _, err := r.ReadMessage(ctx); err != nil {
					return
				}
				counts[i].Add(1)
			}
		}()
		return done
	}
	produce := func(prefix string) {
		var msgs []kafka.Message
		for i := 0; i < 300; i++ {
			msgs = append(msgs, kafka.Message{Key: []byte(strconv.Itoa(i)), Value: testValue(prefix, i)})
		}
		kafkagoWrite(t, c, topic, &kafka.Hash{}, msgs)
	}
	d0 := start(0)
	produce("a")
	waitFor(t, 30*time.Second, "the first reader to consume", func() bool { return counts[0].Load() > 0 })
	d1 := start(1)
	// Keep producing (every 500ms) until the second reader gets records:
	// records produced before it owns a partition go to the first one.
	last := time.Now()
	waitFor(t, 30*time.Second, "the second reader to join and consume", func() bool {
		if counts[1].Load() > 0 {
			return true
		}
		if time.Since(last) > 500*time.Millisecond {
			produce("b")
			last = time.Now()
		}
		return false
	})
	cancel()
	<-d0
	<-d1
}

// TestKafkaGoClientConfigs: kafka-go's Client AlterConfigs,
// IncrementalAlterConfigs and DescribeConfigs (which got their connection
// closed while the keys were not served) change and read a topic's configs.
func TestKafkaGoClientConfigs(t *testing.T) {
	c := startCluster(t, 3)
	const topic = "kg-configs"
	createTopic(t, c, topic, 1, 3, nil)
	cl := &kafka.Client{Addr: kafka.TCP(c.bootstrap()...), Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ar, err := cl.AlterConfigs(ctx, &kafka.AlterConfigsRequest{Resources: []kafka.AlterConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafka.AlterConfigRequestConfig{{Name: "max.message.bytes", Value: "200000"}}}}})
	if err != nil || ar.Errors[kafka.AlterConfigsResponseResource{Type: int8(kafka.ResourceTypeTopic), Name: topic}] != nil {
		t.Fatalf("kafka-go AlterConfigs: %v %+v", err, ar)
	}
	ir, err := cl.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: "retention.ms", Value: "86400000", ConfigOperation: kafka.ConfigOperationSet}}}}})
	if err != nil || len(ir.Resources) != 1 || ir.Resources[0].Error != nil {
		t.Fatalf("kafka-go IncrementalAlterConfigs: %v %+v", err, ir)
	}
	dr, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"max.message.bytes", "retention.ms"}}},
		IncludeSynonyms: true, IncludeDocumentation: true})
	if err != nil || len(dr.Resources) != 1 || dr.Resources[0].Error != nil {
		t.Fatalf("kafka-go DescribeConfigs: %v %+v", err, dr)
	}
	got := map[string]string{}
	for _, e := range dr.Resources[0].ConfigEntries {
		got[e.ConfigName] = e.ConfigValue
	}
	if got["max.message.bytes"] != "200000" || got["retention.ms"] != "86400000" || len(got) != 2 {
		t.Fatalf("kafka-go DescribeConfigs: %v", got)
	}
}
