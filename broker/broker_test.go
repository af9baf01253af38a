package broker

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

func TestProducerStateApplyAndReplay(t *testing.T) {
	ps := producerState{}
	for i := int32(0); i < 8; i++ {
		ps.apply(7, 0, i*10, i*10+9, int64(i)*10)
	}
	e := ps[7]
	if len(e.batches) != keepBatches || e.batches[0].first != 30 || e.batches[4].last != 79 {
		t.Fatalf("kept batches %+v", e.batches)
	}
	// Replaying an entry already applied (after a snapshot restore) is a no-op.
	before := ps.clone()
	ps.apply(7, 0, 50, 59, 50)
	ps.apply(7, 0, 20, 29, 20)
	if !reflect.DeepEqual(before, ps) {
		t.Fatal("replay changed the state")
	}
	// A new epoch starts over; an old one is ignored.
	ps.apply(7, 1, 0, 4, 100)
	ps.apply(7, 0, 80, 89, 110)
	if ps[7].epoch != 1 || len(ps[7].batches) != 1 {
		t.Fatalf("epoch handling: %+v", ps[7])
	}
	got, err := decodeProducerState(ps.encode())
	if err != nil || !reflect.DeepEqual(got, ps) {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	if _, err := decodeProducerState([]byte{0, 0, 0, 9, 1}); err == nil {
		t.Fatal("truncated state decoded")
	}
}

func TestSequenceWrap(t *testing.T) {
	if seqAfter(math.MaxInt32) != 0 || seqAfter(5) != 6 {
		t.Fatal("seqAfter")
	}
	if lastSeq(math.MaxInt32-1, 3) != 0 {
		t.Fatalf("lastSeq wraps: %d", lastSeq(math.MaxInt32-1, 3))
	}
}

func TestAssignReplicasSpreadsLeaders(t *testing.T) {
	a := assignReplicas([]int32{1, 2, 3}, 6, 3, 0)
	leaders := map[int32]int{}
	for _, reps := range a {
		leaders[reps[0]]++
		seen := map[int32]bool{}
		for _, r := range reps {
			if seen[r] {
				t.Fatalf("replica listed twice: %v", reps)
			}
			seen[r] = true
		}
	}
	if leaders[1] != 2 || leaders[2] != 2 || leaders[3] != 2 {
		t.Fatalf("preferred leaders not even: %v", leaders)
	}
}

func TestTopicNamesAndConfigs(t *testing.T) {
	for _, ok := range []string{"a", "orders.v1", "A_b-9"} {
		if err := validTopicName(ok); err != nil {
			t.Errorf("%q rejected: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "sp ace", strings.Repeat("x", 250)} {
		if validTopicName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	v := "1000"
	if _, err := validateConfigs(map[string]*string{"retention.ms": &v}); err != nil {
		t.Fatal(err)
	}
	bad := "soon"
	if _, err := validateConfigs(map[string]*string{"retention.ms": &bad}); err == nil {
		t.Fatal("non-numeric retention accepted")
	}
	if _, err := validateConfigs(map[string]*string{"no.such.config": &v}); err == nil {
		t.Fatal("unknown config accepted")
	}
	compact := "compact"
	if _, err := validateConfigs(map[string]*string{"cleanup.policy": &compact}); err == nil {
		t.Fatal("compaction accepted though unsupported")
	}
}

func metaEntry(t *testing.T, idx uint64, cmd metaCmd) raft.Committed {
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return raft.Committed{Index: idx, Term: 1, Kind: clog.KindCommand, Payload: b}
}

// TestMetadataDeterministic: two replicas applying the same commands reach
// the same state, and a snapshot restores it.
func TestMetadataDeterministic(t *testing.T) {
	cmds := []metaCmd{
		{Op: "create_topic", Req: 1<<48 | 1, Topic: &topicMeta{Name: "a", ID: [16]byte{1}}, Assign: [][]int32{{1, 2, 3}, {2, 3, 1}}},
		{Op: "create_topic", Req: 2<<48 | 1, Topic: &topicMeta{Name: "b", ID: [16]byte{2}}, Assign: [][]int32{{3, 1, 2}}},
		{Op: "create_topic", Req: 2<<48 | 2, Topic: &topicMeta{Name: "a", ID: [16]byte{3}}, Assign: [][]int32{{1, 2, 3}}},
		{Op: "alloc_producer_ids", Req: 1<<48 | 2, Count: producerIDBlock},
		{Op: "create_partitions", Name: "b", Assign: [][]int32{{1, 2, 3}}},
		{Op: "delete_topic", Name: "a"},
	}
	var ents []raft.Committed
	for i, c := range cmds {
		ents = append(ents, metaEntry(t, uint64(i+1), c))
	}
	m1, m2 := newMetaSM(1, nil), newMetaSM(2, nil)
	if err := m1.Apply(ents); err != nil {
		t.Fatal(err)
	}
	if err := m2.Apply(ents); err != nil {
		t.Fatal(err)
	}
	s1, _ := m1.Snapshot()
	s2, _ := m2.Snapshot()
	if string(s1) != string(s2) {
		t.Fatalf("replicas diverged:\n%s\n%s", s1, s2)
	}
	if r, ok := m2.takeResult(2<<48 | 2); !ok || r.Err != kerr.TopicAlreadyExists.Code {
		t.Fatalf("duplicate create: %+v %v", r, ok)
	}
	if r, ok := m1.takeResult(1<<48 | 2); !ok || r.PIDStart != 1 {
		t.Fatalf("producer id block: %+v", r)
	}
	if _, ok := m1.takeResult(2<<48 | 1); ok {
		t.Fatal("node 1 kept node 2's result")
	}
	b, ok := m1.topic("b")
	if !ok || len(b.Partitions) != 2 || b.Partitions[0].Group != firstPartitionGroup+2 {
		t.Fatalf("topic b: %+v", b)
	}
	if _, ok := m1.topic("a"); ok {
		t.Fatal("deleted topic still there")
	}
	m3 := newMetaSM(3, nil)
	if err := m3.Restore(6, s1); err != nil {
		t.Fatal(err)
	}
	s3, _ := m3.Snapshot()
	if string(s3) != string(s1) {
		t.Fatal("snapshot did not restore the state")
	}
}

func TestOffsetsStateMachine(t *testing.T) {
	sm := newOffsetsSM()
	mk := func(i uint64, c offsetCmd) raft.Committed {
		b, _ := json.Marshal(c)
		return raft.Committed{Index: i, Kind: clog.KindCommand, Payload: b}
	}
	err := sm.Apply([]raft.Committed{
		mk(1, offsetCmd{Op: "commit", Group: "g", Offsets: []offsetRecord{{Topic: "t", Partition: 0, Offset: 10}, {Topic: "t", Partition: 1, Offset: 20}}}),
		mk(2, offsetCmd{Op: "commit", Group: "g", Offsets: []offsetRecord{{Topic: "t", Partition: 0, Offset: 15}}}),
		mk(3, offsetCmd{Op: "commit", Group: "h", Offsets: []offsetRecord{{Topic: "t", Partition: 0, Offset: 1}}}),
		mk(4, offsetCmd{Op: "delete", Group: "h"}),
		mk(5, offsetCmd{Op: "delete", Group: "g", TPs: []tpRef{{Topic: "t", Partition: 1}}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := sm.Snapshot()
	sm2 := newOffsetsSM()
	if err := sm2.Restore(5, snap); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*offsetsSM{sm, sm2} {
		if len(s.groups) != 1 || len(s.groups["g"]) != 1 {
			t.Fatalf("groups: %+v", s.groups)
		}
		for tp, o := range s.groups["g"] {
			if tp.Partition != 0 || o.Offset != 15 {
				t.Fatalf("offset %+v %+v", tp, o)
			}
		}
	}
	if groupPartition("some-group", 6) != groupPartition("some-group", 6) || groupPartition("x", 1) != 0 {
		t.Fatal("group partition not stable")
	}
}

func TestClusterFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "c.toml")
	os.WriteFile(good, []byte(`
[[nodes]]
id = 2
kafka = "127.0.0.1:9093"
raft = "127.0.0.1:5002"
[[nodes]]
id = 1
kafka = "127.0.0.1:9092"
raft = "127.0.0.1:5001"
admin = "127.0.0.1:3000"
kafka_listen = "0.0.0.0:9092"
`), 0o644)
	cf, err := LoadClusterFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if cf.Nodes[0].ID != 1 || cf.DefaultReplicationFactor != 2 || cf.ClusterID == "" || cf.OffsetsPartitions <= 0 || cf.ConsumerMigrationPolicy != "bidirectional" {
		t.Fatalf("defaults: %+v", cf)
	}
	for name, body := range map[string]string{
		"duplicate id":   "[[nodes]]\nid=1\nkafka=\"a:1\"\nraft=\"a:2\"\n[[nodes]]\nid=1\nkafka=\"a:3\"\nraft=\"a:4\"\n",
		"bad address":    "[[nodes]]\nid=1\nkafka=\"nonsense\"\nraft=\"a:2\"\n",
		"unknown key":    "[[nodes]]\nid=1\nkafka=\"a:1\"\nraft=\"a:2\"\ncolour=\"red\"\n",
		"no nodes":       "cluster_id=\"x\"\n",
		"bad super user": "super_users=[\"admin\"]\n[[nodes]]\nid=1\nkafka=\"a:1\"\nraft=\"a:2\"\n",
		"bad migration":  "group_consumer_migration_policy=\"sideways\"\n[[nodes]]\nid=1\nkafka=\"a:1\"\nraft=\"a:2\"\n",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".toml")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := LoadClusterFile(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		150 * time.Millisecond:  "150ms",
		30 * time.Second:        "30s",
		8500 * time.Millisecond: "8.5s",
		450 * time.Microsecond:  "0.45ms",
		3 * time.Microsecond:    "0.003ms",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}
