package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func batchBytes(producerID int64) []byte {
	b := kmsg.RecordBatch{Magic: 2, ProducerID: producerID, ProducerEpoch: -1, FirstSequence: -1, NumRecords: 1}
	return b.AppendTo(nil)
}

// While draining, a non-idempotent batch of a moved partition is answered
// NOT_LEADER once per partition and client, then forwarded, on any of the
// client's connections; an idempotent one is forwarded when not draining,
// and while draining answered NOT_LEADER to a librdkafka client (forwarded
// to others), and so is every later batch of that partition on that
// connection; nothing is held back when not draining or not asked to.
func TestTellMovedOnce(t *testing.T) {
	s := &Server{cfg: Config{TellMovedOnce: true}}
	cc := connCtx{remote: "127.0.0.1:4000", clientID: "w"}
	plain := producePart{topic: "t", part: 3, records: batchBytes(-1)}
	idem := producePart{topic: "t", part: 4, records: batchBytes(7)}
	if !idempotentBatch(idem.records) || idempotentBatch(plain.records) || idempotentBatch([]byte{1, 2}) {
		t.Fatal("idempotentBatch misreads the producer id")
	}
	if tellMoved(s, &cc, plain) {
		t.Fatal("told NOT_LEADER while not draining")
	}
	if cc.fwdAt.Load() == 0 {
		t.Fatal("a forwarded non-idempotent batch is not noted")
	}
	s.draining.Store(true)
	if !tellMoved(s, &cc, plain) {
		t.Fatal("first batch of a moved partition while draining: not told NOT_LEADER")
	}
	if tellMoved(s, &cc, plain) {
		t.Fatal("told NOT_LEADER twice for one partition")
	}
	other := connCtx{remote: "127.0.0.1:4001", clientID: "w"}
	if tellMoved(s, &other, plain) {
		t.Fatal("told NOT_LEADER again on another connection of the same client")
	}
	if !tellMoved(s, &connCtx{remote: "127.0.0.2:4001", clientID: "w"}, plain) {
		t.Fatal("a client on another host was not told")
	}
	if !tellMoved(s, &cc, producePart{topic: "t", part: 5, records: batchBytes(-1)}) {
		t.Fatal("another partition was not told")
	}
	idemConn := &conn{}
	idemCC := &idemConn.cc
	s.draining.Store(false)
	if tellMoved(s, idemCC, idem) || idemCC.fwdAt.Load() != 0 || idemCC.toldAt.Load() != 0 {
		t.Fatal("an idempotent batch was held back or noted while not draining")
	}
	s.draining.Store(true)
	if tellMoved(s, idemCC, idem) || idemCC.toldAt.Load() != 0 {
		t.Fatal("an idempotent batch of a client that is not librdkafka was told NOT_LEADER, want forwarded")
	}
	idemCC.librdkafka.Store(true)
	for i := range 3 {
		if !tellMoved(s, idemCC, idem) {
			t.Fatalf("idempotent batch %d of a moved partition while draining: forwarded, want NOT_LEADER", i)
		}
	}
	if idemCC.fwdAt.Load() != 0 || idemCC.toldAt.Load() == 0 {
		t.Fatal("an idempotent batch told NOT_LEADER: fwdAt set or toldAt not set")
	}
	if _, waits := idemConn.awaitsMetadata(time.Now().UnixNano()); !waits {
		t.Fatal("a connection told NOT_LEADER does not await its metadata request")
	}
	if _, waits := idemConn.awaitsMetadata(time.Now().Add(movedQuiet).UnixNano()); waits {
		t.Fatal("a told connection quiet for movedQuiet still awaits its metadata request")
	}
	idemConn.metaAt.Store(time.Now().UnixNano())
	if _, waits := idemConn.awaitsMetadata(time.Now().UnixNano()); waits {
		t.Fatal("a connection that asked for metadata since still awaits it")
	}
	off := connCtx{remote: "127.0.0.3:1"}
	s.cfg.TellMovedOnce = false
	if tellMoved(s, &off, plain) {
		t.Fatal("told NOT_LEADER without TellMovedOnce")
	}
}

func forwardingServer(n int) (*Server, []*conn) {
	s := &Server{conns: map[*conn]struct{}{}}
	var cs []*conn
	for range n {
		c := &conn{s: s, done: make(chan struct{})}
		s.conns[c] = struct{}{}
		cs = append(cs, c)
	}
	return s, cs
}

// The wait ends once every connection that wrote here lately went quiet
// for the quiet period, at once when the one left closes, and with the
// count of those still writing when ctx ends.
func TestAwaitForwardedClients(t *testing.T) {
	t.Run("quiet", func(t *testing.T) {
		s, cs := forwardingServer(2)
		cs[0].cc.fwdAt.Store(time.Now().UnixNano())
		start := time.Now()
		waited, still := s.AwaitForwardedClients(context.Background(), 200*time.Millisecond)
		took := time.Since(start)
		if waited != 1 || still != 0 {
			t.Fatalf("waited %d, still %d; want 1, 0", waited, still)
		}
		if took < 150*time.Millisecond || took > 3*time.Second {
			t.Fatalf("ended after %v; want about the 200 ms quiet period", took)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s, cs := forwardingServer(1)
		cs[0].cc.fwdAt.Store(time.Now().UnixNano())
		go func() {
			time.Sleep(50 * time.Millisecond)
			close(cs[0].done)
			s.gone.fire()
		}()
		start := time.Now()
		waited, still := s.AwaitForwardedClients(context.Background(), time.Minute)
		if waited != 1 || still != 0 || time.Since(start) > 10*time.Second {
			t.Fatalf("waited %d, still %d after %v; want 1, 0 soon after the close", waited, still, time.Since(start))
		}
	})
	t.Run("deadline", func(t *testing.T) {
		s, cs := forwardingServer(1)
		cs[0].cc.fwdAt.Store(time.Now().UnixNano())
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if waited, still := s.AwaitForwardedClients(ctx, time.Minute); waited != 1 || still != 1 {
			t.Fatalf("waited %d, still %d; want 1, 1", waited, still)
		}
	})
	t.Run("none", func(t *testing.T) {
		s, _ := forwardingServer(2)
		if waited, still := s.AwaitForwardedClients(context.Background(), time.Minute); waited != 0 || still != 0 {
			t.Fatalf("waited %d, still %d with no forwarding; want 0, 0", waited, still)
		}
	})
}

// After the wait for a new leader runs out, a partition is answered with
// its previous leader if one is still up, not with leader -1.
func TestWithFallbacks(t *testing.T) {
	infos := []TopicInfo{{Name: "t", Partitions: []PartitionInfo{
		{Partition: 0, Leader: -1, LeaderEpoch: -1, Err: 5, ISR: []int32{}, Fallback: &LeaderHint{Leader: 2, Epoch: 7}},
		{Partition: 1, Leader: -1, LeaderEpoch: -1, Err: 5},
		{Partition: 2, Leader: 3, LeaderEpoch: 4, ISR: []int32{3, 1}},
	}}}
	ps := withFallbacks(infos)[0].Partitions
	if p := ps[0]; p.Leader != 2 || p.LeaderEpoch != 7 || p.Err != 0 || len(p.ISR) != 1 {
		t.Errorf("partition 0 = %+v; want leader 2, epoch 7, no error", p)
	}
	if p := ps[1]; p.Leader != -1 || p.Err != 5 {
		t.Errorf("partition 1 = %+v; want no leader still", p)
	}
	if p := ps[2]; p.Leader != 3 || len(p.ISR) != 2 {
		t.Errorf("partition 2 = %+v; want it unchanged", p)
	}
}

// The wait for told clients' metadata requests ends once each has asked
// or closed, or with the count of those left when ctx ends.
func TestAwaitMetadataRequests(t *testing.T) {
	s, cs := forwardingServer(3)
	told := time.Now().UnixNano()
	cs[0].cc.toldAt.Store(told)
	cs[1].cc.toldAt.Store(told)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	if n := s.AwaitMetadataRequests(ctx); n != 2 {
		t.Fatalf("%d connections still awaited at the deadline, want 2", n)
	}
	cancel()
	done := make(chan int, 1)
	go func() { done <- s.AwaitMetadataRequests(context.Background()) }()
	time.Sleep(10 * time.Millisecond)
	cs[0].metaAt.Store(time.Now().UnixNano())
	s.noteNews()
	close(cs[1].done)
	s.noteNews()
	select {
	case n := <-done:
		if n != 0 {
			t.Fatalf("returned %d, want 0", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end once every told connection asked or closed")
	}

	// A told connection that writes nothing more here has moved: the
	// wait ends movedQuiet after its last write, with no news.
	cs[2].cc.toldAt.Store(time.Now().UnixNano())
	start := time.Now()
	if n := s.AwaitMetadataRequests(context.Background()); n != 0 {
		t.Fatalf("returned %d, want 0", n)
	}
	if d := time.Since(start); d < movedQuiet-10*time.Millisecond || d > 5*time.Second {
		t.Fatalf("a quiet told connection was waited for %v, want about %v", d, movedQuiet)
	}
}

// librdkafka names itself in ApiVersions v3+, as do bindings over it.
func TestIsLibrdkafka(t *testing.T) {
	for _, c := range []struct {
		name, version string
		want          bool
	}{
		{"librdkafka", "2.0.2", true},
		{"confluent-kafka-python", "1.9.2-rdkafka-2.0.2", true},
		{"kcat", "1.7.1-rdkafka-2.0.2", true},
		{"sarama", "1.43.0", false},
		{"kgo", "v1.18.0", false},
		{"", "", false},
	} {
		if got := isLibrdkafka(c.name, c.version); got != c.want {
			t.Errorf("isLibrdkafka(%q, %q) = %v, want %v", c.name, c.version, got, c.want)
		}
	}
}
