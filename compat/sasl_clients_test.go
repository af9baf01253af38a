package compat

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/xdg-go/scram"
)

// saramaSCRAM is sarama's SCRAM client, made with xdg-go/scram as
// sarama's own examples do.
type saramaSCRAM struct {
	h    scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (s *saramaSCRAM) Begin(user, pass, authz string) error {
	cl, err := s.h.NewClient(user, pass, authz)
	if err != nil {
		return err
	}
	s.conv = cl.NewConversation()
	return nil
}
func (s *saramaSCRAM) Step(challenge string) (string, error) { return s.conv.Step(challenge) }
func (s *saramaSCRAM) Done() bool                            { return s.conv.Done() }

// saramaSecure is a sarama config for the SASL_SSL listener.
func (sc *secureCluster) saramaSecure(mech sarama.SASLMechanism, pass string, handshake int16) *sarama.Config {
	cfg := saramaConfig()
	cfg.Net.TLS.Enable = true
	cfg.Net.TLS.Config = sc.tlsConfig()
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Mechanism = mech
	cfg.Net.SASL.Version = handshake
	cfg.Net.SASL.User, cfg.Net.SASL.Password = saslUser, pass
	cfg.Net.DialTimeout = 5 * time.Second
	if handshake == sarama.SASLHandshakeV0 {
		cfg.ApiVersionsRequest = false // sarama's rule for the v0 handshake
	}
	switch mech {
	case sarama.SASLTypeSCRAMSHA512:
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &saramaSCRAM{h: scram.SHA512} }
	case sarama.SASLTypeSCRAMSHA256:
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &saramaSCRAM{h: scram.SHA256} }
	}
	return cfg
}

type saramaCounter struct {
	mu   sync.Mutex
	seen map[string]bool
	want int
	done chan struct{}
}

func (h *saramaCounter) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *saramaCounter) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *saramaCounter) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		h.mu.Lock()
		h.seen[string(m.Value)] = true
		if len(h.seen) == h.want {
			close(h.done)
		}
		h.mu.Unlock()
		sess.MarkMessage(m, "")
	}
	return nil
}

// TestSASLSarama: sarama over SASL_SSL with SCRAM-SHA-512 creates a topic,
// produces, consumes in a group; the v0 handshake (raw tokens) works
// for PLAIN and SCRAM too; a wrong password and a client that does not
// trust the CA fail.
func TestSASLSarama(t *testing.T) {
	sc := startSecureCluster(t, 3)
	cfg := sc.saramaSecure(sarama.SASLTypeSCRAMSHA512, saslPass, sarama.SASLHandshakeV1)
	adm, err := sarama.NewClusterAdmin(sc.secure, cfg)
	if err != nil {
		t.Fatalf("admin: %v", err)
	}
	defer adm.Close()
	if err := adm.CreateTopic("sasl-sarama", &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 3}, false); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	prod, err := sarama.NewSyncProducer(sc.secure, cfg)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	const n = 300
	var msgs []*sarama.ProducerMessage
	for i := 0; i < n; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: "sasl-sarama", Value: sarama.ByteEncoder(testValue("ss", i))})
	}
	if err := prod.SendMessages(msgs); err != nil {
		t.Fatalf("produce: %v", err)
	}
	prod.Close()
	grp, err := sarama.NewConsumerGroup(sc.secure, "sasl-sarama-g", cfg)
	if err != nil {
		t.Fatalf("group: %v", err)
	}
	defer grp.Close()
	h := &saramaCounter{seen: map[string]bool{}, want: n, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if err := grp.Consume(ctx, []string{"sasl-sarama"}, h); err != nil && ctx.Err() == nil {
				t.Logf("consume: %v", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	select {
	case <-h.done:
	case <-ctx.Done():
		t.Fatalf("group consumed %d of %d", len(h.seen), n)
	}
	cancel()

	for _, v := range []struct {
		mech      sarama.SASLMechanism
		handshake int16
	}{{sarama.SASLTypePlaintext, sarama.SASLHandshakeV0}, {sarama.SASLTypeSCRAMSHA256, sarama.SASLHandshakeV0},
		{sarama.SASLTypeSCRAMSHA512, sarama.SASLHandshakeV0}, {sarama.SASLTypePlaintext, sarama.SASLHandshakeV1}} {
		cl, err := sarama.NewClient(sc.secure, sc.saramaSecure(v.mech, saslPass, v.handshake))
		if err != nil {
			t.Errorf("%s handshake v%d: %v", v.mech, v.handshake, err)
			continue
		}
		if _, err := cl.Topics(); err != nil {
			t.Errorf("%s handshake v%d: topics: %v", v.mech, v.handshake, err)
		}
		cl.Close()
	}

	bad := sc.saramaSecure(sarama.SASLTypeSCRAMSHA512, "nope", sarama.SASLHandshakeV1)
	bad.Metadata.Retry.Max = 0
	if _, err := sarama.NewClient(sc.secure[:1], bad); !errors.Is(err, sarama.ErrSASLAuthenticationFailed) {
		t.Errorf("wrong password: %v", err)
	}
	untrusted := sc.saramaSecure(sarama.SASLTypeSCRAMSHA512, saslPass, sarama.SASLHandshakeV1)
	untrusted.Net.TLS.Config = &tls.Config{ServerName: "127.0.0.1"}
	untrusted.Metadata.Retry.Max = 0
	if _, err := sarama.NewClient(sc.secure[:1], untrusted); !strings.Contains(fmt.Sprint(err), "unknown authority") {
		t.Errorf("untrusted CA: %v", err)
	}
}
