package broker

import (
	"context"
	"testing"
	"time"

	"github.com/chronik-dev/chronik/kafka"
)

// threeNodes starts a three-node cluster in this process, on loopback.
func threeNodes(t *testing.T) []*Broker {
	t.Helper()
	ports := loopbackPorts(t, 9)
	cf := &ClusterFile{ClusterID: "test", OffsetsPartitions: 1}
	for i := 0; i < 3; i++ {
		cf.Nodes = append(cf.Nodes, NodeSpec{ID: int32(i + 1), Kafka: ports[3*i], Raft: ports[3*i+1], Admin: ports[3*i+2]})
	}
	if err := cf.check(); err != nil {
		t.Fatal(err)
	}
	var bs []*Broker
	for i := 0; i < 3; i++ {
		// Nodes of a cluster whose join decision is made: a fresh
		// directory's Start would wait for its peers to say (join.go).
		dir := t.TempDir()
		if err := writeIdentity(dir, &identity{Version: identityVersion, ClusterID: "test", NodeID: int32(i + 1),
			Incarnation: fmtIncarnation(newIncarnation()), Mode: modeBootstrap, MetaVoters: []int32{1, 2, 3}}); err != nil {
			t.Fatal(err)
		}
		b, err := New(Config{NodeID: int32(i + 1), Cluster: cf, DataDir: dir, RaftTick: 10 * time.Millisecond,
			DrainTimeout: 5 * time.Second, TransferTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		bs = append(bs, b)
	}
	for _, b := range bs {
		waitReady(t, b)
	}
	return bs
}

// replicas creates a topic of one partition on all three nodes and returns
// each node's replica of it.
func replicas(t *testing.T, bs []*Broker, name string) []*partition {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := bs[0].CreateTopics(ctx, []kafka.CreateTopic{{Name: name, Partitions: 1, ReplicationFactor: 3}}, false)
	if res[0].Err != 0 {
		t.Fatalf("create %s: error %d %s", name, res[0].Err, res[0].Message)
	}
	ps := make([]*partition, 3)
	deadline := time.Now().Add(20 * time.Second)
	for i, b := range bs {
		for ps[i] = b.partitionByName(name, 0); ps[i] == nil; ps[i] = b.partitionByName(name, 0) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d has no replica of %s", i+1, name)
			}
			time.Sleep(10 * time.Millisecond) // the replica opens as metadata reaches the node
		}
	}
	return ps
}

// readyLeader waits (bounded) for one replica to lead and be ready.
func readyLeader(t *testing.T, ps []*partition) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for i, p := range ps {
			if st := p.rep.Status(); st.IsLeader() && st.LeaderReady {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no ready leader within 20s")
		}
		ch := ps[0].rep.Changed()
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond): // a change on another node
		}
	}
}

// TestSequenceAcrossHandOvers: an idempotent producer with five batches in
// flight through repeated leadership transfers, as a client would behave:
// each batch either lands or gets a retriable error, the client retries
// from the first that failed, on the new leader; a retry of a batch the
// old leader committed is a duplicate with its first offset, also after
// leadership moved away and came back. Never OUT_OF_ORDER_SEQUENCE_NUMBER,
// and every replica's log holds each sequence once, in order.
func TestSequenceAcrossHandOvers(t *testing.T) {
	bs := threeNodes(t)
	ps := replicas(t, bs, "seqmove")
	const pid = 21
	ctx := context.Background()
	offsets := map[int32]int64{}
	// send produces seq on whichever replica leads now, retrying
	// retriable errors as a client does (after a short backoff).
	send := func(seq int32) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			l := readyLeader(t, ps)
			res := ps[l].produce(idemBatch(t, pid, 0, seq), -1, 5*time.Second)(ctx)
			if res.Err == 0 {
				if off, ok := offsets[seq]; ok && off != res.BaseOffset {
					t.Fatalf("retry of %d answered offset %d, first written at %d", seq, res.BaseOffset, off)
				}
				offsets[seq] = res.BaseOffset
				return
			}
			if !retriable(res.Err) {
				t.Fatalf("batch %d on node %d: error %d (%s)", seq, l+1, res.Err, res.Message)
			}
			if time.Now().After(deadline) {
				t.Fatalf("batch %d still failing after 30s: error %d", seq, res.Err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	transfer := func(from, to int) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := ps[from].rep.TransferLeadership(tctx, uint64(to+1)); err != nil {
			t.Logf("transfer %d -> %d: %v", from+1, to+1, err) // a loaded machine may abort it
		}
	}
	for seq := int32(0); seq < 3; seq++ {
		send(seq)
	}
	// Leadership moves away and comes back: retries of committed batches
	// are duplicates with their first offsets, on either leader.
	l := readyLeader(t, ps)
	m := (l + 1) % 3
	transfer(l, m)
	send(1)
	send(2)
	send(3)
	transfer(readyLeader(t, ps), l)
	send(3)
	send(1)
	// Five in flight, leadership moves while they are.
	next := int32(4)
	retried, leaders := 0, map[int]bool{}
	for round := 0; round < 8; round++ {
		l := readyLeader(t, ps)
		var waits []kafka.ProduceWait
		for i := int32(0); i < 5; i++ {
			waits = append(waits, ps[l].produce(idemBatch(t, pid, 0, next+i), -1, 5*time.Second))
		}
		moved := make(chan struct{})
		go func() {
			defer close(moved)
			transfer(l, (l+1+round%2)%3)
		}()
		firstFailed := next + 5
		for i, w := range waits {
			res := w(ctx)
			seq := next + int32(i)
			switch {
			case res.Err == 0 && seq < firstFailed:
				offsets[seq] = res.BaseOffset
			case res.Err == 0:
				t.Fatalf("batch %d landed after %d failed (a gap)", seq, firstFailed)
			case retriable(res.Err):
				firstFailed = min(firstFailed, seq)
			default:
				t.Fatalf("batch %d in flight: error %d (%s)", seq, res.Err, res.Message)
			}
		}
		// The client retries from the first failed batch, in order.
		leaders[l] = true
		retried += int(next + 5 - firstFailed)
		for seq := firstFailed; seq < next+5; seq++ {
			send(seq)
		}
		<-moved
		next += 5
	}
	t.Logf("%d batches, %d retried after a failure in flight; leaders %v", next, retried, leaders)
	if len(leaders) < 2 {
		t.Fatalf("leadership never moved: %v", leaders)
	}
	for seq := int32(0); seq < next; seq++ {
		if offsets[seq] != int64(seq) {
			t.Fatalf("batch %d at offset %d", seq, offsets[seq])
		}
	}
	for i, p := range ps {
		deadline := time.Now().Add(10 * time.Second)
		for p.hw.Load() < int64(next) && time.Now().Before(deadline) {
			select {
			case <-p.waitCh():
			case <-time.After(time.Second):
			}
		}
		t.Logf("node %d", i+1)
		wantSeqs(t, p, next)
	}
}
