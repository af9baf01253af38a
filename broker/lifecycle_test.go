package broker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/admin"
	"github.com/chronik-dev/chronik/kafka"
	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

// loopbackPorts reserves n loopback addresses (closed again before use).
func loopbackPorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ln.Addr().String())
		defer ln.Close()
	}
	return out
}

// oneNodeConfig is a single-node cluster on loopback with a short raft
// tick, so elections take milliseconds.
func oneNodeConfig(t *testing.T) Config {
	ports := loopbackPorts(t, 3)
	cf := &ClusterFile{ClusterID: "test", OffsetsPartitions: 1,
		Nodes: []NodeSpec{{ID: 1, Kafka: ports[0], Raft: ports[1], Admin: ports[2]}}}
	if err := cf.check(); err != nil {
		t.Fatal(err)
	}
	return Config{NodeID: 1, Cluster: cf, DataDir: t.TempDir(), RaftTick: 10 * time.Millisecond,
		DrainTimeout: time.Second, TransferTimeout: time.Second}
}

// startNode starts a broker from cfg and waits until it is ready; the test
// closes it.
func startNode(t *testing.T, cfg Config) *Broker {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	waitReady(t, b)
	return b
}

// waitReady waits until the node reports ready (bounded).
func waitReady(t *testing.T, b *Broker) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !b.ready.Load() {
		if time.Now().After(deadline) {
			t.Fatal("node not ready within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newTopic creates a one-partition topic and returns its local partition
// once it leads.
func newTopic(t *testing.T, b *Broker, name string) *partition {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := b.CreateTopics(ctx, []kafka.CreateTopic{{Name: name, Partitions: 1, ReplicationFactor: 1}}, false)
	if res[0].Err != 0 {
		t.Fatalf("create %s: error %d %s", name, res[0].Err, res[0].Message)
	}
	p := b.partitionByName(name, 0)
	if p == nil {
		t.Fatalf("%s-0 not open after create", name)
	}
	if st := p.waitLeaderReady(5 * time.Second); !st.IsLeader() || !st.LeaderReady {
		t.Fatalf("%s-0 did not become a ready leader: %+v", name, st)
	}
	// Readiness covers the new partition too (it may have dipped while
	// the partition opened).
	waitReady(t, b)
	return p
}

// produceN appends n one-record batches, each acknowledged once committed (acks=all).
func produceN(t *testing.T, p *partition, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		res := p.produce(testBatch(t), -1, 5*time.Second)(context.Background())
		if res.Err != 0 {
			t.Fatalf("produce %d: error %d %s", i, res.Err, res.Message)
		}
	}
}

// testBatch is a valid v2 record batch of one record, without producer id,
// framed and checksummed as a client sends it.
func testBatch(t *testing.T) []byte {
	t.Helper()
	r := kmsg.Record{Value: []byte("hi")}
	r.Length = int32(len(r.AppendTo(nil)) - 1)
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, FirstTimestamp: time.Now().UnixMilli(),
		MaxTimestamp: time.Now().UnixMilli(), ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: 1, Records: r.AppendTo(nil)}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	if !clog.BatchCRCValid(raw) {
		t.Fatal("test batch CRC")
	}
	return raw
}

// TestAttachRacesRestore: raft may run a replica (a snapshot install calls
// Restore) before openReplica has handed the partition its replica. Under
// -race this failed while Restore read the plain p.rep field.
func TestAttachRacesRestore(t *testing.T) {
	b := startNode(t, oneNodeConfig(t))
	p := newTopic(t, b, "attach")
	produceN(t, p, 3)
	rep, want := p.rep, p.hw.Load()
	if want != 3 {
		t.Fatalf("high watermark %d after 3 acknowledged records", want)
	}
	// The ack follows the apply; the published status can trail it by a
	// Ready cycle. Wait (on status changes) until it covers all three.
	deadline := time.After(5 * time.Second)
	var applied uint64
	for {
		changed := rep.Changed() // taken before the status it guards
		if applied = rep.Status().Applied; endOffsetAt(rep, applied) == want {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("published applied index %d never reached the acknowledged end %d", applied, want)
		}
	}
	for i := 0; i < 50; i++ {
		q := newPartition(b, p.topic, p.index, p.group)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := q.Restore(applied, nil); err != nil {
				t.Error(err)
			}
		}()
		q.attach(rep)
		wg.Wait()
		if got := q.hw.Load(); got != want {
			t.Fatalf("round %d: high watermark %d after restore and attach, want %d", i, got, want)
		}
	}
}

// TestAttachKeepsNewerHighWatermark: entries applied on a worker between
// AddReplica and attach must not be undone by attach's initial high
// watermark (it used to overwrite it with the older applied end).
func TestAttachKeepsNewerHighWatermark(t *testing.T) {
	b := startNode(t, oneNodeConfig(t))
	p := newTopic(t, b, "hw")
	produceN(t, p, 2)
	q := newPartition(b, p.topic, p.index, p.group)
	batch := []raft.Committed{{Index: 1 << 40, Kind: clog.KindBatch, Payload: testBatch(t), BaseOffset: 100, Count: 1}}
	if err := q.Apply(batch); err != nil {
		t.Fatal(err)
	}
	q.attach(p.rep)
	if got := q.hw.Load(); got != 101 {
		t.Fatalf("attach moved the high watermark from 101 to %d", got)
	}
}

// TestStartFailureStopsEverything: a Start that fails because the Kafka
// port is taken must stop the loops and Raft it already started (they
// used to run on), and free the Raft port for the next attempt.
func TestStartFailureStopsEverything(t *testing.T) {
	cfg := oneNodeConfig(t)
	taken, err := net.Listen("tcp", cfg.Cluster.Nodes[0].Kafka)
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err == nil {
		b.Close()
		t.Fatal("Start succeeded with the Kafka port taken")
	}
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		b.Close()
		t.Fatal("background loops still running 5s after Start failed")
	}
	select {
	case <-b.Done():
	default:
		t.Fatal("Done not closed after a failed Start")
	}
	ln, err := net.Listen("tcp", cfg.Cluster.Nodes[0].Raft)
	if err != nil {
		t.Fatalf("raft port still bound after a failed Start: %v", err)
	}
	ln.Close()
	// The same node starts once the port is free.
	taken.Close()
	cfg.Registry = nil
	startNode(t, cfg)
}

// TestShutdownWaitsForSlowWALSync: when stage 3 overruns its timeout the
// node goes on to stage 4, but Shutdown (and so the process) must not end
// while the fsyncs still run.
func TestShutdownWaitsForSlowWALSync(t *testing.T) {
	cfg := oneNodeConfig(t)
	cfg.WALSyncTimeout = 50 * time.Millisecond
	b := startNode(t, cfg)
	produceN(t, newTopic(t, b, "slow"), 2)
	release := make(chan struct{})
	var syncEnded time.Time
	stop := b.stopReplicas
	b.stopReplicas = func() error {
		<-release
		err := stop()
		syncEnded = time.Now()
		return err
	}
	var rep ShutdownReport
	returned := make(chan time.Time, 1)
	go func() { rep = b.Shutdown(); returned <- time.Now() }()
	select {
	case <-returned:
		close(release)
		t.Fatal("Shutdown returned while the WAL sync was still running")
	case <-time.After(500 * time.Millisecond):
	}
	close(release)
	var at time.Time
	select {
	case at = <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the WAL sync ended")
	}
	if !rep.WALSyncTimedOut {
		t.Error("report does not say stage 3 timed out")
	}
	if at.Before(syncEnded) {
		t.Errorf("Shutdown returned %v before the sync ended", syncEnded.Sub(at))
	}
}

// adminGet fetches an admin endpoint of b over HTTP.
func adminGet(t *testing.T, b *Broker, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.AdminAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestFailedReplicaVisible: a replica stopped by a storage error (here an
// append the log refuses) shows in /health, /partitions and the metrics,
// with the error, while the node's other partitions stay healthy.
func TestFailedReplicaVisible(t *testing.T) {
	b := startNode(t, oneNodeConfig(t))
	p := newTopic(t, b, "doomed")
	newTopic(t, b, "fine")
	produceN(t, p, 1)
	if code, body := adminGet(t, b, "/health"); code != http.StatusOK {
		t.Fatalf("/health before the failure: %d %s", code, body)
	}
	p.rep.Submit(clog.KindBatch, []byte("not a record batch"))
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		ch := p.rep.Changed()
		if p.rep.Status().Failed {
			break
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatal("replica did not fail after a bad append")
		}
	}

	code, body := adminGet(t, b, "/health")
	var health struct {
		Status     string                           `json:"status"`
		Partitions map[string]admin.PartitionHealth `json:"partitions"`
		Reasons    []string                         `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(body), &health); err != nil {
		t.Fatal(err)
	}
	if code != http.StatusServiceUnavailable || health.Status != admin.StatusUnhealthy {
		t.Errorf("/health with a failed replica: %d %s", code, health.Status)
	}
	if ph := health.Partitions["doomed-0"]; ph.Status != admin.StatusFailed || ph.Failed == "" {
		t.Errorf("/health doomed-0: %+v", ph)
	}
	if ph := health.Partitions["fine-0"]; ph.Status != admin.StatusHealthy {
		t.Errorf("/health fine-0: %+v", ph)
	}
	if !strings.Contains(strings.Join(health.Reasons, "\n"), "doomed-0: replica on node 1 failed: ") {
		t.Errorf("/health reasons: %v", health.Reasons)
	}

	_, body = adminGet(t, b, "/partitions")
	var parts []admin.PartitionStatus
	if err := json.Unmarshal([]byte(body), &parts); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ps := range parts {
		switch ps.Topic {
		case "doomed":
			found = true
			if ps.Status != admin.StatusFailed || ps.Failed == "" || ps.HighWatermark != 1 {
				t.Errorf("/partitions doomed-0: %+v", ps)
			}
		case "fine":
			if ps.Failed != "" || ps.Status != admin.StatusHealthy {
				t.Errorf("/partitions fine-0: %+v", ps)
			}
		}
	}
	if !found {
		t.Errorf("/partitions lists no doomed-0: %s", body)
	}

	_, body = adminGet(t, b, "/metrics")
	for _, want := range []string{`chronik_partition_failed{partition="doomed-0"} 1`, `chronik_partition_failed{partition="fine-0"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestLeaderOf: local Raft answers for hosted groups (this node included
// for Metadata, never in a hint), the view for the others, and a hint
// older than the caller's term is none.
func TestLeaderOf(t *testing.T) {
	b := startNode(t, oneNodeConfig(t))
	p := newTopic(t, b, "lead")
	st := p.rep.Status()
	if l := b.leaderOf(p.group, false); l.leader != 1 || l.epoch != int32(st.Term) || len(l.isr) != 1 {
		t.Errorf("local group: %+v", l)
	}
	if h := b.leaderHint(p.group, 0); h != noHint {
		t.Errorf("hint names this node: %+v", h)
	}
	const remote = 1 << 40
	b.view.update(leaderInfo{Group: remote, Leader: 2, Epoch: 5, ISR: []int32{2, 3}})
	if l := b.leaderOf(remote, false); l.leader != 2 || l.epoch != 5 || len(l.isr) != 2 {
		t.Errorf("remote group: %+v", l)
	}
	if h := b.leaderHint(remote, 5); h.Leader != 2 || h.Epoch != 5 {
		t.Errorf("remote hint: %+v", h)
	}
	if h := b.leaderHint(remote, 6); h != noHint {
		t.Errorf("hint older than the caller's term: %+v", h)
	}
	// A leader announcing itself for this node's own group never becomes
	// a hint naming this node.
	b.view.update(leaderInfo{Group: p.group, Leader: 1, Epoch: int32(st.Term) + 1})
	if h := b.leaderHint(p.group, 0); h != noHint {
		t.Errorf("hint from the view names this node: %+v", h)
	}
}

// TestServesAloneAfterSettleGrace: a node whose peers are all down never
// gets a metadata leader, and still starts answering clients once
// settleGrace has passed (the bootstrap loop wakes for that deadline; no
// event comes).
func TestServesAloneAfterSettleGrace(t *testing.T) {
	ports := loopbackPorts(t, 7)
	cf := &ClusterFile{ClusterID: "test", Nodes: []NodeSpec{
		{ID: 1, Kafka: ports[0], Raft: ports[1], Admin: ports[2]},
		{ID: 2, Kafka: ports[3], Raft: ports[4]},
		{ID: 3, Kafka: ports[5], Raft: ports[6]},
	}}
	if err := cf.check(); err != nil {
		t.Fatal(err)
	}
	// A node of an existing cluster restarting (its join decision made):
	// a fresh directory would wait for its peers to say whether the
	// cluster exists before anything else (join.go).
	dir := t.TempDir()
	if err := writeIdentity(dir, &identity{Version: identityVersion, ClusterID: "test", NodeID: 1,
		Incarnation: fmtIncarnation(newIncarnation()), Mode: modeBootstrap, MetaVoters: []int32{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{NodeID: 1, Cluster: cf, DataDir: dir, RaftTick: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	conn, err := net.Dial("tcp", b.KafkaAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 0
	body := binary.BigEndian.AppendUint16(nil, uint16(req.Key()))
	body = binary.BigEndian.AppendUint16(body, 0)
	body = binary.BigEndian.AppendUint32(body, 7) // correlation id
	body = binary.BigEndian.AppendUint16(body, 0) // empty client id
	body = req.AppendTo(body)
	start := time.Now()
	if _, err := conn.Write(binary.BigEndian.AppendUint32(nil, uint32(len(body)))); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(settleGrace + 10*time.Second))
	var hdr [8]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		t.Fatalf("no answer %v after connecting: %v", time.Since(start), err)
	}
	if corr := binary.BigEndian.Uint32(hdr[4:]); corr != 7 {
		t.Fatalf("answer for correlation id %d", corr)
	}
	if b.meta.Status().Leader != 0 {
		t.Fatal("a metadata leader without a quorum")
	}
	t.Logf("answered %v after connecting, with no metadata leader", time.Since(start).Round(time.Millisecond))
}

// TestRecreateTopicKeepsNewReplica deletes and at once recreates a topic of
// the same name, many times. Both metadata changes can reach reconcile in one
// pass; it used to open the new incarnation's replica in the directory first
// and then remove the old incarnation, deleting the new replica's files under
// it ("epochs.tmp: no such file or directory", a failed replica).
func TestRecreateTopicKeepsNewReplica(t *testing.T) {
	b := startNode(t, oneNodeConfig(t))
	newTopic(t, b, "again")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 15; i++ {
		if code := b.DeleteTopic(ctx, "again"); code != 0 {
			t.Fatalf("round %d: delete: error %d", i, code)
		}
		res := b.CreateTopics(ctx, []kafka.CreateTopic{{Name: "again", Partitions: 1, ReplicationFactor: 1}}, false)
		if res[0].Err != 0 {
			t.Fatalf("round %d: create: error %d %s", i, res[0].Err, res[0].Message)
		}
	}
	// Let every pending reconcile run, then the live incarnation must be
	// healthy and own its directory.
	deadline := time.Now().Add(10 * time.Second)
	var p *partition
	for {
		b.reconcile()
		p = b.partitionByName("again", 0)
		if p != nil {
			if st := p.waitLeaderReady(time.Second); st.IsLeader() && st.LeaderReady && !st.Failed {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("recreated topic has no healthy leader: %+v", p)
		}
	}
	produceN(t, p, 5)
	marker, err := os.ReadFile(filepath.Join(b.replicaDir("again", 0), "group"))
	if err != nil {
		t.Fatalf("recreated topic's directory: %v", err)
	}
	if got := strings.TrimSpace(string(marker)); got != strconv.FormatUint(p.group, 10) {
		t.Fatalf("directory marker names group %s, the live replica is group %d", got, p.group)
	}
	if st := p.rep.Status(); st.Failed {
		t.Fatalf("recreated replica failed: %+v", st)
	}
}
