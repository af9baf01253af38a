package broker

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// counterValue is the value of a counter (or gauge) of b's registry with
// the given label (empty: none); 0 when absent.
func counterValue(t *testing.T, b *Broker, name, label, value string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if match {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// TestSASLReauthFranz (KIP-368): with logins lasting 2 s, a franz-go
// producer and consumer keep working across four lifetimes: franz-go logs
// in again on its connections by itself, and no connection is cut for an
// expired session.
func TestSASLReauthFranz(t *testing.T) {
	const lifetime = 2 * time.Second
	b, addr := saslNode(t, func(c *Config) { c.SASLMaxReauth = lifetime }, "alice")
	newTopic(t, b, "reauth")
	prod := saslClient(t, addr, "alice", kgo.DefaultProduceTopic("reauth"), kgo.RecordRetries(0))
	cons := saslClient(t, addr, "alice", kgo.ConsumeTopics("reauth"), kgo.FetchMaxWait(200*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var consumed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			fs.EachError(func(topic string, p int32, err error) {
				if ctx.Err() == nil {
					t.Errorf("fetch %s-%d: %v", topic, p, err)
				}
			})
			consumed.Add(int64(fs.NumRecords()))
		}
	}()

	end := time.Now().Add(4 * lifetime)
	produced := 0
	for time.Now().Before(end) {
		if err := prod.ProduceSync(ctx, kgo.StringRecord(strconv.Itoa(produced))).FirstErr(); err != nil {
			t.Fatalf("produce %d, %v into the run: %v", produced, 4*lifetime-time.Until(end), err)
		}
		produced++
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for consumed.Load() < int64(produced) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	n := int(consumed.Load())
	reauths := counterValue(t, b, "chronik_sasl_reauthentications_total", "", "")
	expired := counterValue(t, b, "chronik_bad_requests_total", "reason", "session_expired")
	t.Logf("produced %d, consumed %d, re-authentications %v, connections cut for an expired session %v", produced, n, reauths, expired)
	if n != produced {
		t.Errorf("consumed %d of %d records", n, produced)
	}
	if reauths < 4 {
		t.Errorf("%v re-authentications over 4 lifetimes on two clients, want at least 4", reauths)
	}
	if expired != 0 {
		t.Errorf("%v connections cut for an expired session", expired)
	}
}
