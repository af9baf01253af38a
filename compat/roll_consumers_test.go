package compat

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// startFranzMembers starts n franz-go group members at defaults
// (autocommit every 5 s and on revoke, cooperative-sticky) reading topic
// from the start. Each commit the client reports answered without error is
// noted in log. stop closes the members (leaving the group) and waits.
func startFranzMembers(t *testing.T, c *cluster, topic, group string, n int, log *consumeLog) (stop func()) {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for m := 0; m < n; m++ {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.bootstrap()...), kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.AutoCommitCallback(func(_ *kgo.Client, req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				if err != nil {
					log.fail(fmt.Errorf("commit: %w", err))
					return
				}
				noteCommits(log, req, resp)
			}))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(m int) {
			defer wg.Done()
			defer cl.Close()
			for {
				fs := cl.PollFetches(ctx)
				if ctx.Err() != nil {
					return
				}
				fs.EachError(func(_ string, _ int32, err error) { log.fail(err) })
				fs.EachRecord(func(r *kgo.Record) { log.consumed(m, r.Partition, r.Offset, string(r.Value)) })
			}
		}(m)
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// noteCommits notes the offsets of a commit request whose partitions were
// answered without error.
func noteCommits(log *consumeLog, req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse) {
	ok := map[int32]bool{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode == 0 {
				ok[rp.Partition] = true
			}
		}
	}
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			if ok[p.Partition] {
				log.committed(p.Partition, p.Offset)
			}
		}
	}
}

// saramaRollMember counts and marks every message it is given; the default
// offset manager commits the marks every second and when a session ends.
type saramaRollMember struct {
	id  int
	log *consumeLog
}

func (saramaRollMember) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (saramaRollMember) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (m saramaRollMember) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			m.log.consumed(m.id, msg.Partition, msg.Offset, string(msg.Value))
			sess.MarkMessage(msg, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

// startSaramaMembers starts n sarama ConsumerGroup members at defaults
// (range assignor, autocommit every second) reading topic from the start.
func startSaramaMembers(t *testing.T, c *cluster, topic, group string, n int, log *consumeLog) (stop func()) {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_0_0_0
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Return.Errors = true
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for m := 0; m < n; m++ {
		g, err := sarama.NewConsumerGroup(c.bootstrap(), group, cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for err := range g.Errors() {
				log.fail(err)
			}
		}()
		go func(m int) {
			defer wg.Done()
			defer g.Close()
			for ctx.Err() == nil {
				if err := g.Consume(ctx, []string{topic}, saramaRollMember{id: m, log: log}); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
					log.fail(fmt.Errorf("consume: %w", err))
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		}(m)
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// groupUnderRoll is one consumer group's side of the roll: its topic's
// producer, what the members consumed, and how the commits were watched.
type groupUnderRoll struct {
	client      string
	topic       string
	load        *loader
	log         *consumeLog
	stopMembers func()
	stopWatch   func()
	target      time.Duration
}

// TestRollingRestartConsumers rolls the cluster at the fast pace (see
// rollFast) while a franz-go group of 3 members and a sarama group of 2
// read their own topics, each written by a franz-go producer. Per
// partition, the longest gap in consumption while records were there to
// read must stay under 3x the client's target (franz-go 1 s; sarama 3 s,
// as its consumer re-routes a partition after a 2 s back-off); every
// acknowledged record is consumed, and a record is consumed again only at
// or after the offset its group had committed by then.
func TestRollingRestartConsumers(t *testing.T) {
	c := startCluster(t, 3)
	groups := []*groupUnderRoll{
		{client: "franz-go", topic: "roll-cons-franz", target: time.Second},
		{client: "sarama", topic: "roll-cons-sarama", target: 3 * time.Second},
	}
	for _, g := range groups {
		createTopic(t, c, g.topic, 12, 3, nil)
	}
	c.waitAllHealthy(30 * time.Second)
	for _, g := range groups {
		group := g.topic + "-g"
		g.log = newConsumeLog()
		g.stopWatch = watchCommits(t, c, group, g.log)
		g.load = startLoader(t, c, g.topic, 600)
		if g.client == "franz-go" {
			g.stopMembers = startFranzMembers(t, c, g.topic, group, 3, g.log)
		} else {
			g.stopMembers = startSaramaMembers(t, c, g.topic, group, 2, g.log)
		}
	}
	for _, g := range groups {
		g.load.waitAcks(1200, 30*time.Second)
		waitFor(t, 30*time.Second, g.client+" group to read every partition", func() bool {
			g.log.mu.Lock()
			defer g.log.mu.Unlock()
			ps := map[int32]bool{}
			for _, e := range g.log.events {
				ps[e.partition] = true
			}
			return len(ps) == 12
		})
	}

	tl := rollClientsFast(t, c, "")
	end := time.Now()
	time.Sleep(time.Second)
	for _, g := range groups {
		g.load.halt()
	}
	for _, g := range groups {
		acked := g.load.ackedValues()
		waitFor(t, 60*time.Second, g.client+" group to read every acknowledged record", func() bool { return g.log.consumedAll(acked) })
		g.stopMembers()
		g.stopWatch()
		v := g.log.judge(acked, tl.start, end)
		t.Logf("%s producer: %s", g.client, g.load.report())
		t.Logf("%s group: consumed %d records, %d redelivered; longest gap in consumption per partition %s; the longest %v on partition %d from %s (%s); consumer errors: %s",
			g.client, v.consumed, v.redelivered, stallSummary(v.perPart), v.worst.Round(time.Millisecond), v.worstP, tl.rel(v.worstFrom), tl.around(v.worstFrom), g.log.errors())
		if v.missing > 0 {
			t.Errorf("%s group: %d acknowledged records never consumed", g.client, v.missing)
		}
		for _, b := range v.badRedeliv {
			t.Errorf("%s group: redelivered below the committed offset: %s", g.client, b)
		}
		if limit := 3 * g.target * raceSlack; v.worst > limit {
			t.Errorf("%s group: a partition went %v without a record consumed; want under %v", g.client, v.worst.Round(time.Millisecond), limit)
		}
		g.load.checkDelivered(t, c, "the roll")
	}
}
