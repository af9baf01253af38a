package compat

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// electPreferred hands every partition back to its preferred replica,
// asking again for those whose preferred replica is not serving yet.
func electPreferred(t *testing.T, adm *kadm.Client) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, nil)
		cancel()
		again := err != nil
		for _, ps := range res {
			for _, r := range ps {
				again = again || r.Err == kerr.PreferredLeaderNotAvailable
			}
		}
		if !again {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("preferred election still refused after 20s: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // the restarted node is not serving yet
	}
}

// TestIdempotentLeaderMoves: librdkafka (confluent-kafka-python) and
// franz-go idempotent producers, acks=all (librdkafka with five produce
// requests in flight per connection), while the leadership of every partition moves again
// and again: each node in turn is stopped with SIGTERM (it hands its
// leaderships away) and restarted, then a preferred election hands them
// back. A batch whose proposal fails in a hand-over must neither leave a
// gap nor make the next batches fail: no delivery error (librdkafka fails
// for good on OUT_OF_ORDER_SEQUENCE_NUMBER), no data loss franz-go detects,
// nothing acknowledged lost, nothing written twice.
func TestIdempotentLeaderMoves(t *testing.T) {
	needPython(t)
	c := startCluster(t, 3, withArgs("--auto-leader-rebalance=false"))
	const rdkTopic, franzTopic, parts = "idem-rdk", "idem-franz", 6
	createTopic(t, c, rdkTopic, parts, 3, nil)
	createTopic(t, c, franzTopic, parts, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	// Small batches, so that many are in flight at each hand-over.
	t.Setenv("CHRONIK_TEST_RDKAFKA_CONF", "linger.ms=1 max.in.flight.requests.per.connection=5")
	pr := startPyRollProducer(t, c, rdkTopic, parts, 1500)
	var dataLoss atomic.Int64
	// franz-go refuses more than one request in flight per broker when
	// idempotent; its batches of several partitions still share each one.
	ld := startLoader(t, c, franzTopic, 1500, kgo.ProducerOnDataLossDetected(func(string, int32) { dataLoss.Add(1) }))
	pr.waitAcked(t, 1500, 30*time.Second)
	ld.waitAcks(1500, 30*time.Second)
	adm := kadm.NewClient(newFranz(t, c))
	moves := 0
	for round := 0; round < 2; round++ {
		for id := 1; id <= 3; id++ {
			moved := moveLeadershipOff(t, c, id, rdkTopic)
			electPreferred(t, adm)
			moves += 2
			t.Logf("round %d node %d: %d partitions of %s moved off and back", round, id, len(moved), rdkTopic)
		}
	}
	time.Sleep(time.Second)
	load := pr.finish(t)
	ld.halt()
	t.Logf("librdkafka: %s; %d leadership waves", load.summary(), moves)
	t.Logf("franz-go: %s", ld.report())
	stderr := pr.stderr.String()
	if strings.Contains(stderr, "OUT_OF_ORDER") || strings.Contains(stderr, "Fatal") {
		t.Errorf("librdkafka stderr:\n%s", stderr)
	}
	if len(load.errs) > 0 {
		t.Errorf("librdkafka delivery errors: %v", load.errs)
	}
	ld.mu.Lock()
	for e, n := range ld.errs {
		if strings.Contains(e, "OUT_OF_ORDER") || strings.Contains(e, "DUPLICATE_SEQUENCE") {
			t.Errorf("franz-go: %d x %s", n, e)
		}
	}
	nonRetry := ld.nonRetry
	ld.mu.Unlock()
	if len(nonRetry) > 0 {
		t.Errorf("franz-go: non-retriable errors %v", nonRetry)
	}
	if n := dataLoss.Load(); n > 0 {
		t.Errorf("franz-go detected data loss %d times (a sequence the broker skipped)", n)
	}
	if lost, dup := checkAcked(t, c, rdkTopic, load.acked); lost != 0 || dup != 0 {
		t.Errorf("librdkafka: %d acknowledged records lost, %d duplicates", lost, dup)
	}
	if lost, dup := ld.verify(c); lost != 0 || dup != 0 {
		t.Errorf("franz-go: %d acknowledged records lost, %d duplicates", lost, dup)
	}
}
