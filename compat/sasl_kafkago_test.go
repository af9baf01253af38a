package compat

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	kafka "github.com/segmentio/kafka-go"
	kscram "github.com/segmentio/kafka-go/sasl/scram"
)

// TestSASLKafkaGo: kafka-go over SASL_SSL with SCRAM-SHA-512 creates a
// topic, writes, reads in a group; a wrong password fails with
// SASL_AUTHENTICATION_FAILED.
func TestSASLKafkaGo(t *testing.T) {
	sc := startSecureCluster(t, 3)
	mech, err := kscram.Mechanism(kscram.SHA512, saslUser, saslPass)
	if err != nil {
		t.Fatal(err)
	}
	tr := &kafka.Transport{TLS: sc.tlsConfig(), SASL: mech}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := &kafka.Client{Addr: kafka.TCP(sc.secure...), Transport: tr}
	cr, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: "sasl-kgo", NumPartitions: 3, ReplicationFactor: 3}}})
	if err != nil || cr.Errors["sasl-kgo"] != nil {
		t.Fatalf("create topic: %v %v", err, cr)
	}
	w := &kafka.Writer{Addr: kafka.TCP(sc.secure...), Topic: "sasl-kgo", Transport: tr, RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond, MaxAttempts: 20}
	const n = 300
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, kafka.Message{Value: testValue("kg", i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write: %v", err)
	}
	w.Close()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: sc.secure, GroupID: "sasl-kgo-g", Topic: "sasl-kgo",
		Dialer:      &kafka.Dialer{TLS: sc.tlsConfig(), SASLMechanism: mech, Timeout: 10 * time.Second},
		StartOffset: kafka.FirstOffset, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	seen := map[string]bool{}
	for len(seen) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read after %d of %d: %v", len(seen), n, err)
		}
		seen[string(m.Value)] = true
	}

	bad, err := kscram.Mechanism(kscram.SHA512, saslUser, "nope")
	if err != nil {
		t.Fatal(err)
	}
	d := &kafka.Dialer{TLS: sc.tlsConfig(), SASLMechanism: bad, Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", sc.secure[0])
	if err == nil {
		conn.Close()
	}
	if !errors.Is(err, kafka.SASLAuthenticationFailed) {
		t.Fatalf("wrong password: %v", fmt.Sprint(err))
	}
}
