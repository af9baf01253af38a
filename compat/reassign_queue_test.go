package compat

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// queueRow is the part of a GET /partitions row a queue check reads.
type queueRow struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Replicas  []int32 `json:"replicas"`
	Target    []int32 `json:"target"`
	Queued    bool    `json:"queued"`
}

// queueSample is what one node's /partitions said about a topic's moves.
type queueSample struct {
	at               time.Time
	node             int
	running, waiting int
}

func (s queueSample) String() string {
	return fmt.Sprintf("%s node %d: %d running, %d queued", s.at.Format("15:04:05.000"), s.node, s.running, s.waiting)
}

// queueWatch reads /partitions of every node in turn while moves run and
// keeps each answer: the metadata every node applies goes through the same
// states, so every answer must show at most limit moves running.
type queueWatch struct {
	stop, done chan struct{}
	mu         sync.Mutex
	samples    []queueSample
}

func watchQueue(t *testing.T, c *cluster, topic string, nodes int) *queueWatch {
	w := &queueWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			id := 1 + i%nodes
			if code, body, err := c.get(id, "/partitions"); err == nil && code == 200 {
				var rows []queueRow
				if json.Unmarshal([]byte(body), &rows) == nil {
					s := queueSample{at: time.Now(), node: id}
					for _, r := range rows {
						switch {
						case r.Topic != topic || r.Target == nil:
						case r.Queued:
							s.waiting++
						default:
							s.running++
						}
					}
					w.mu.Lock()
					w.samples = append(w.samples, s)
					w.mu.Unlock()
				}
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

func (w *queueWatch) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// waitQueued waits until some node lists a queued move of the topic.
func (w *queueWatch) waitQueued(t *testing.T, d time.Duration) {
	t.Helper()
	waitFor(t, d, "a node to list a queued move", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, s := range w.samples {
			if s.waiting > 0 {
				return true
			}
		}
		return false
	})
}

// check fails t when any answer shows more than limit moves running, or
// none showed a queued move or limit running; the timeline of changes
// goes into the log on failure.
func (w *queueWatch) check(t *testing.T, limit int) {
	t.Helper()
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	maxRunning, maxQueued := 0, 0
	var timeline []string
	last := map[int]queueSample{}
	for _, s := range w.samples {
		maxRunning, maxQueued = max(maxRunning, s.running), max(maxQueued, s.waiting)
		if s.running > limit {
			t.Errorf("%v: more than %d running", s, limit)
		}
		if p, ok := last[s.node]; !ok || p.running != s.running || p.waiting != s.waiting {
			timeline = append(timeline, s.String())
		}
		last[s.node] = s
	}
	if maxQueued == 0 || maxRunning != limit {
		t.Errorf("never saw a queued move and %d running: at most %d running, %d queued", limit, maxRunning, maxQueued)
	}
	if t.Failed() {
		t.Logf("/partitions timeline (%d samples, changes only):\n%s", len(w.samples), strings.Join(timeline, "\n"))
	}
	t.Logf("%d /partitions samples: at most %d running, %d queued", len(w.samples), maxRunning, maxQueued)
}

// dumpMoves logs every node's view of the topic's moves (diagnostics).
func dumpMoves(t *testing.T, c *cluster, adm *kadm.Client, topic string, nodes int) {
	t.Helper()
	moves, err := listMoves(adm, topic)
	t.Logf("ListPartitionReassignments: %v (err %v)", moves, err)
	for id := 1; id <= nodes; id++ {
		_, body, err := c.get(id, "/partitions")
		var rows []queueRow
		json.Unmarshal([]byte(body), &rows)
		var mine []string
		for _, r := range rows {
			if r.Topic == topic {
				mine = append(mine, fmt.Sprintf("%d: replicas %v target %v queued %v", r.Partition, r.Replicas, r.Target, r.Queued))
			}
		}
		m, _ := c.metric(id, "chronik_reassignments_queued")
		t.Logf("node %d /partitions (err %v), chronik_reassignments_queued %v:\n%s", id, err, m, strings.Join(mine, "\n"))
	}
}

// TestReassignQueueLimit: with max_concurrent_moves = 2, more moves than
// that are submitted at once under acks=all load (throttled, so each
// lasts a while). ListPartitionReassignments lists them all, queued ones
// too; no node ever shows more than 2 running; a cancelled queued move
// leaves its replicas alone; the metadata leader is restarted while moves
// wait, and the rest still run in turn and finish; nothing is lost.
// CHRONIK_TEST_QUEUE_PARTITIONS sets the partition count.
func TestReassignQueueLimit(t *testing.T) {
	const topic, limit, nodes = "queued", 2, 4
	parts := envInt("CHRONIK_TEST_QUEUE_PARTITIONS", 6)
	c := startCluster(t, nodes, withTOML("max_concurrent_moves = "+strconv.Itoa(limit)),
		withArgs("--rebalance-delay", "500ms", "--isr-lag-time", "1s", "--replication-throttle", strconv.Itoa(512<<10)))
	adm := kadm.NewClient(newFranz(t, c))
	assign, targets := map[int32][]int32{}, map[int32][]int32{}
	for p := 0; p < parts; p++ {
		assign[int32(p)] = rotate([]int32{1, 2, 3}, p)
		targets[int32(p)] = rotate([]int32{2, 3, 4}, p)
	}
	ctxErr := createWithAssignment(t.Context(), newFranz(t, c), topic, assign)
	if ctxErr != nil {
		t.Fatal(ctxErr)
	}
	preload(t, c, topic, envInt("CHRONIK_TEST_QUEUE_BYTES", 12<<20)/1000, 1000)
	l := startLoader(t, c, topic, 200)
	l.waitAcks(200, 30*time.Second)

	w := watchQueue(t, c, topic, nodes)
	start := time.Now()
	reassign(t, adm, topic, targets)
	// Every move is in progress for the API at once, queued or not; the
	// throttle makes each take seconds, so the first answer lists more
	// than the limit.
	// (Waited for: the node answering may apply the submission a moment
	// after the one that took it.)
	listed := 0
	deadline := time.Now().Add(5 * time.Second)
	for listed <= limit && time.Now().Before(deadline) {
		if moves, err := listMoves(adm, topic); err == nil {
			listed = len(moves)
		}
		if listed <= limit {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if listed <= limit {
		dumpMoves(t, c, adm, topic, nodes)
		t.Fatalf("after submitting %d moves, ListPartitionReassignments lists %d; want the queued ones too", parts, listed)
	}
	// Cancel the last one: it waits behind the others.
	last := int32(parts - 1)
	var req kadm.AlterPartitionAssignmentsReq
	req.CancelAssign(topic, last)
	resp, err := adm.AlterPartitionAssignments(t.Context(), req)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("cancelling the queued move of partition %d: %v", last, err)
	}
	delete(targets, last)

	// A restart of the metadata leader while moves wait: the queue is in
	// the replicated metadata, so the next leader admits the rest and the
	// restarted node replays it.
	w.waitQueued(t, 20*time.Second)
	ctl := int(c.leaderOf(2, "__cluster_metadata", 0))
	if ctl <= 0 {
		ctl = 1
	}
	left, _ := listMoves(adm, topic)
	t.Logf("restarting node %d (the metadata leader) with %d moves left, %v after the submission", ctl, len(left), time.Since(start).Round(time.Millisecond))
	c.stop(ctl, 30*time.Second)
	c.start(ctl)

	var took time.Duration
	func() {
		defer func() {
			if t.Failed() {
				dumpMoves(t, c, adm, topic, nodes)
			}
		}()
		took = waitMovesDone(t, adm, topic, 3*time.Minute)
	}()
	end := time.Now()
	w.check(t, limit)
	checkReplicas(t, c, topic, targets)
	checkReplicas(t, c, topic, map[int32][]int32{last: assign[last]})
	waitFor(t, 20*time.Second, "node 4 to hold no replica of the cancelled partition", func() bool { return !c.hasReplicaDir(4, topic, last) })
	for id := 1; id <= nodes; id++ {
		// Every node applies the last admission a moment apart.
		waitFor(t, 10*time.Second, fmt.Sprintf("node %d's chronik_reassignments_queued to be 0", id), func() bool {
			v, ok := c.metric(id, "chronik_reassignments_queued")
			return ok && v == 0
		})
	}
	l.waitAcks(l.ackedCount()+200, 30*time.Second)
	l.halt()
	stalls := l.stallsBetween(start, end)
	l.checkDelivered(t, c, "the queued moves")
	t.Logf("%d moves (limit %d, node %d restarted mid-queue) done in %v; per-partition longest ack gap %s; %s",
		parts-1, limit, ctl, took.Round(time.Millisecond), stallSummary(stalls), l.report())
}
