package compat

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Helpers of the reassignment tests (reassign_test.go, reassign_faults_test.go).

// envInt reads a size knob of the tests (full runs by hand set bigger ones).
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// rotate is reps starting at its i-th member, so preferred leaders spread.
func rotate(reps []int32, i int) []int32 {
	out := make([]int32, len(reps))
	for j := range reps {
		out[j] = reps[(i+j)%len(reps)]
	}
	return out
}

// reassign asks for targets with kadm and fails t on any refused partition.
func reassign(t *testing.T, adm *kadm.Client, topic string, targets map[int32][]int32) {
	t.Helper()
	var req kadm.AlterPartitionAssignmentsReq
	for p, reps := range targets {
		req.Assign(topic, p, reps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		t.Fatalf("AlterPartitionAssignments: %v", err)
	}
	resp.Each(func(r kadm.AlterPartitionAssignmentsResponse) {
		if r.Err != nil {
			t.Fatalf("AlterPartitionAssignments %s-%d: %v %s", r.Topic, r.Partition, r.Err, r.ErrMessage)
		}
	})
}

// listMoves is ListPartitionReassignments of topic, by partition.
func listMoves(adm *kadm.Client, topic string) (map[int32]kadm.ListPartitionReassignmentsResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := kadm.TopicsSet{}
	s.Add(topic, partitionsUpTo(64)...)
	resp, err := adm.ListPartitionReassignments(ctx, s)
	if err != nil {
		return nil, err
	}
	return resp[topic], nil
}

func partitionsUpTo(n int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i)
	}
	return out
}

// topicReplicas is the replicas Metadata lists for each partition. It
// sends the request itself: kadm's ListTopics answers from the client's
// metadata cache for up to 5 s.
func topicReplicas(t *testing.T, cl *kgo.Client, topic string) map[int32][]int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr(topic)}}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Topics) != 1 {
		t.Fatalf("metadata: %v", err)
	}
	out := map[int32][]int32{}
	for _, p := range resp.Topics[0].Partitions {
		out[p.Partition] = p.Replicas
	}
	return out
}

// moveWatch polls ListPartitionReassignments while a move runs, as an
// operator would, and checks every answer: the listed replicas are the
// target (the metadata's replicas less those being removed, in order)
// followed by the removing ones, and adding is part of them.
type moveWatch struct {
	t      *testing.T
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	adding map[int32]bool // every replica ever listed as adding
	remove map[int32]bool // every replica ever listed as removing
	polls  int
	bad    []string
}

func watchMoves(t *testing.T, c *cluster, topic string) *moveWatch {
	w := &moveWatch{t: t, stop: make(chan struct{}), done: make(chan struct{}), adding: map[int32]bool{}, remove: map[int32]bool{}}
	// A client of its own: a node the test kills must not stall it.
	adm := kadm.NewClient(newFranz(t, c, kgo.RetryTimeout(2*time.Second)))
	go func() {
		defer close(w.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if moves, err := listMoves(adm, topic); err == nil {
				w.note(moves)
			}
			select {
			case <-tick.C:
			case <-w.stop:
				return
			}
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *moveWatch) note(moves map[int32]kadm.ListPartitionReassignmentsResponse) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	for p, m := range moves {
		for _, r := range m.AddingReplicas {
			w.adding[r] = true
			if !slices.Contains(m.Replicas, r) {
				w.bad = append(w.bad, fmt.Sprintf("partition %d: adding %d not among replicas %v", p, r, m.Replicas))
			}
		}
		for _, r := range m.RemovingReplicas {
			w.remove[r] = true
		}
		n := len(m.Replicas) - len(m.RemovingReplicas)
		if n < 1 || !slices.Equal(m.Replicas[n:], m.RemovingReplicas) {
			w.bad = append(w.bad, fmt.Sprintf("partition %d: replicas %v do not end with removing %v", p, m.Replicas, m.RemovingReplicas))
		}
	}
}

func (w *moveWatch) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// check fails t on an inconsistent listing, and unless every replica in
// adding and removing was seen listed so.
func (w *moveWatch) check(adding, removing []int32) {
	w.t.Helper()
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.bad {
		w.t.Error(b)
	}
	for _, r := range adding {
		if !w.adding[r] {
			w.t.Errorf("node %d never listed as adding (%d polls)", r, w.polls)
		}
	}
	for _, r := range removing {
		if !w.remove[r] {
			w.t.Errorf("node %d never listed as removing (%d polls)", r, w.polls)
		}
	}
}

// waitMovesDone waits until ListPartitionReassignments lists nothing for
// topic and returns how long that took.
func waitMovesDone(t *testing.T, adm *kadm.Client, topic string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, d, "reassignments of "+topic+" to complete", func() bool {
		moves, err := listMoves(adm, topic)
		return err == nil && len(moves) == 0
	})
	return time.Since(start)
}

// replicaDirs lists node id's replica directories of topic.
func (c *cluster) replicaDirs(id int, topic string) []string {
	m, _ := filepath.Glob(filepath.Join(c.node(id).dataDir, topic+"-*"))
	return m
}

// hasReplicaDir reports whether node id has a directory for topic-p.
func (c *cluster) hasReplicaDir(id int, topic string, p int32) bool {
	_, err := os.Stat(filepath.Join(c.node(id).dataDir, topic+"-"+strconv.Itoa(int(p))))
	return err == nil
}

// checkReplicas fails t unless Metadata lists want for every partition
// within a few seconds (the node answering may apply the metadata a
// moment after the one that listed the move as done).
func checkReplicas(t *testing.T, c *cluster, topic string, want map[int32][]int32) {
	t.Helper()
	cl := newFranz(t, c)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := topicReplicas(t, cl, topic)
		var wrong []string
		for p, reps := range want {
			if !slices.Equal(got[p], reps) {
				wrong = append(wrong, fmt.Sprintf("partition %d: Metadata lists replicas %v, want %v", p, got[p], reps))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, w := range wrong {
				t.Error(w)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// preload writes n records of size bytes to topic (acks=all) and returns
// the bytes written.
func preload(t *testing.T, c *cluster, topic string, n, size int) int64 {
	t.Helper()
	cl := newFranz(t, c, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchMaxBytes(1<<20),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < n; i++ {
		// Unique (verify counts duplicates) and uncompressed: the move
		// copies about n*size bytes.
		v := []byte("pre-" + strconv.Itoa(i) + "-")
		for len(v) < size {
			v = append(v, byte('a'+rand.IntN(26)))
		}
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Value: v}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("preload: %v", firstErr)
	}
	return int64(n) * int64(size)
}

// gapsBetween is every gap between two acks on a partition that ended in
// [from, to], sorted (at least one zero, so summaries never see none).
func (l *loader) gapsBetween(from, to time.Time) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []time.Duration{0}
	for _, g := range l.allGaps {
		if !g.end.Before(from) && !g.end.After(to) {
			out = append(out, g.gap)
		}
	}
	slices.Sort(out)
	return out
}

// waitPreferredLeaders waits until each partition is led by the first
// replica of its target, and stays so for a second (longer than the
// rebalance delay the tests use, so a rebalance elsewhere would show).
func waitPreferredLeaders(t *testing.T, c *cluster, from int, topic string, targets map[int32][]int32, d time.Duration) {
	t.Helper()
	var since time.Time
	waitFor(t, d, "the targets' first replicas to lead "+topic, func() bool {
		for p, reps := range targets {
			if c.leaderOf(from, topic, p) != reps[0] {
				since = time.Time{}
				return false
			}
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) > time.Second
	})
}
