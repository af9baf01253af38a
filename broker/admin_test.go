package broker

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/kafka"
)

func TestSnapshotLogStartRoundTrip(t *testing.T) {
	ps := producerState{7: &producerEntry{epoch: 2, batches: []seqBatch{{first: 0, last: 4, offset: 10}}}}
	p := &partition{producers: ps}
	p.logStart.Store(1234)
	got, ls, err := decodeSnapshot(p.encodeSnapshot())
	if err != nil || ls != 1234 || got[7] == nil || got[7].batches[0].offset != 10 {
		t.Fatalf("round trip: %v %d %v", got, ls, err)
	}
	// A snapshot written before DeleteRecords existed has no trailer.
	got, ls, err = decodeSnapshot(ps.encode())
	if err != nil || ls != 0 || got[7] == nil {
		t.Fatalf("old snapshot: %v %d %v", got, ls, err)
	}
	if _, _, err := decodeSnapshot(append(ps.encode(), 1, 2, 3)); err == nil {
		t.Fatal("trailing garbage accepted")
	}
}

func TestAlterConfigSet(t *testing.T) {
	b := &Broker{cfg: Config{SegmentBytes: 1 << 20}}
	cur := map[string]string{"retention.ms": "1000", "segment.bytes": "4096"}
	op := func(name string, o int8, v string) kafka.ConfigOp {
		return kafka.ConfigOp{Name: name, Op: o, Value: &v}
	}
	inc := kafka.AlterConfigsResource{Incremental: true, Ops: []kafka.ConfigOp{
		op("retention.ms", kafka.ConfigSet, "2000"), {Name: "segment.bytes", Op: kafka.ConfigDelete},
		op("cleanup.policy", kafka.ConfigAppend, "delete")}}
	next, code, msg := b.alterConfigSet(cur, inc, findConfigDef)
	if code != 0 || next["retention.ms"] != "2000" || next["cleanup.policy"] != "delete" || len(next) != 2 {
		t.Fatalf("incremental: %v %d %s", next, code, msg)
	}
	next, code, _ = b.alterConfigSet(cur, kafka.AlterConfigsResource{Ops: []kafka.ConfigOp{op("segment.ms", kafka.ConfigSet, "5")}}, findConfigDef)
	if code != 0 || len(next) != 1 || next["segment.ms"] != "5" {
		t.Fatalf("replace: %v %d", next, code)
	}
	for _, bad := range []kafka.ConfigOp{op("retention.ms", kafka.ConfigSet, "x"), op("nope", kafka.ConfigSet, "1"),
		op("retention.ms", kafka.ConfigSubtract, "1")} {
		if _, code, _ := b.alterConfigSet(cur, kafka.AlterConfigsResource{Incremental: true, Ops: []kafka.ConfigOp{bad}}, findConfigDef); code != kerr.InvalidConfig.Code {
			t.Fatalf("%+v: code %d, want INVALID_CONFIG", bad, code)
		}
	}
	if d := findBrokerConfigDef("log.retention.ms"); d == nil || d.name != "retention.ms" || d.typ != kmsg.ConfigTypeLong {
		t.Fatalf("broker synonym: %+v", d)
	}
}

func TestTimestampBounds(t *testing.T) {
	now := time.UnixMilli(1_000_000_000)
	c := &topicConfig{tsBefore: 60_000, tsAfter: 1000}
	for _, tc := range []struct {
		first, max int64
		ok         bool
	}{
		{now.UnixMilli(), now.UnixMilli(), true},
		{now.UnixMilli() - 60_001, now.UnixMilli(), false},
		{now.UnixMilli(), now.UnixMilli() + 1001, false},
		{-1, -1, true},
	} {
		if got := c.timestampOK(tc.first, tc.max, now); got != tc.ok {
			t.Errorf("first %d max %d: %v, want %v", tc.first, tc.max, got, tc.ok)
		}
	}
	c.tsBefore = 1<<63 - 1
	if !c.timestampOK(0, now.UnixMilli(), now) {
		t.Error("the default before.max.ms (Long.MAX) refused an old timestamp")
	}
}

func TestAlterConfigsExpect(t *testing.T) {
	m := newMetaSM(1, nil)
	m.apply(&metaCmd{Op: "create_topic", Topic: &topicMeta{Name: "t"}, Assign: [][]int32{{1}}})
	set := &metaCmd{Op: "alter_configs", Name: "t", Replace: true, Set: map[string]string{"retention.ms": "1"}, Check: true}
	if r := m.apply(set); r.Err != 0 {
		t.Fatalf("first alteration: %d", r.Err)
	}
	stale := &metaCmd{Op: "alter_configs", Name: "t", Replace: true, Set: map[string]string{"segment.ms": "1"}, Check: true}
	if r := m.apply(stale); r.Err != errConfigsChanged {
		t.Fatalf("alteration computed from a stale map: %d, want errConfigsChanged", r.Err)
	}
	if tm, _ := m.topic("t"); tm.Configs["retention.ms"] != "1" || len(tm.Configs) != 1 {
		t.Fatalf("configs %v", tm.Configs)
	}
	b := &metaCmd{Op: "alter_broker_configs", Name: "", Set: map[string]string{"log.retention.ms": "5"}, Check: true, Replace: true}
	if r := m.apply(b); r.Err != 0 || m.brokerConfigs("")["log.retention.ms"] != "5" {
		t.Fatalf("broker alteration: %d %v", r.Err, m.brokerConfigs(""))
	}
}
