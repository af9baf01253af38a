package broker

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/kafka"
	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

// idemBatch is a one-record batch of idempotent producer pid at sequence seq.
func idemBatch(t *testing.T, pid int64, epoch int16, seq int32) []byte {
	t.Helper()
	r := kmsg.Record{Value: []byte{byte(seq)}}
	r.Length = int32(len(r.AppendTo(nil)) - 1)
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, NumRecords: 1, Records: r.AppendTo(nil)}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// logSequences lists the producer sequences of the committed batches of p.
func logSequences(t *testing.T, p *partition) []int32 {
	t.Helper()
	buf, err := p.rep.Log().ReadBatches(p.startOffset(), p.hw.Load(), 1<<24, true)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int32
	for len(buf) > 0 {
		n := int(binary.BigEndian.Uint32(buf[8:])) + 12
		bi, err := clog.ParseBatch(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		if bi.ProducerID >= 0 {
			seqs = append(seqs, bi.BaseSequence)
		}
		buf = buf[n:]
	}
	return seqs
}

// retriable says whether a client retries the batch (Kafka's retriable
// produce errors that idempotent producers survive).
func retriable(code int16) bool {
	switch code {
	case kerr.NotLeaderForPartition.Code, kerr.NotEnoughReplicas.Code, kerr.RequestTimedOut.Code,
		kerr.LeaderNotAvailable.Code, kerr.KafkaStorageError.Code:
		return true
	}
	return false
}

func wantSeqs(t *testing.T, p *partition, n int32) {
	t.Helper()
	got := logSequences(t, p)
	ok := len(got) == int(n)
	for i := range got {
		ok = ok && got[i] == int32(i)
	}
	if !ok {
		t.Fatalf("log holds sequences %v, want 0..%d once each, in order", got, n-1)
	}
}

// failProposalOf makes the Raft proposal of the first batch at sequence
// seq fail (its term guard names a term that has passed), as a proposal
// dropped in a leadership hand-over does.
func failProposalOf(p *partition, seq int32) {
	used := false
	p.mu.Lock()
	p.submitHook = func(bi clog.BatchInfo, g *raft.Guard) {
		if bi.BaseSequence == seq && !used {
			used = true
			g.Term++
		}
	}
	p.mu.Unlock()
}

// TestSequenceMiddleOfFiveFails: five batches in flight, the middle one's
// proposal fails. The two after it must not be written (the log would have
// a gap, and the client's retry of the middle one would be taken for a
// duplicate or the next batch for OUT_OF_ORDER_SEQUENCE_NUMBER): they get a
// retriable error, and the client's retries of all three, in order, land
// once each.
func TestSequenceMiddleOfFiveFails(t *testing.T) {
	b := startNode(t, oneNodeConfig(t))
	p := newTopic(t, b, "seqmid")
	const pid = 7
	failProposalOf(p, 2)
	var waits []kafka.ProduceWait
	for seq := int32(0); seq < 5; seq++ {
		waits = append(waits, p.produce(idemBatch(t, pid, 0, seq), -1, 5*time.Second))
	}
	ctx := context.Background()
	for seq, w := range waits {
		res := w(ctx)
		switch {
		case seq < 2 && (res.Err != 0 || res.BaseOffset != int64(seq)):
			t.Fatalf("batch %d: error %d offset %d", seq, res.Err, res.BaseOffset)
		case seq >= 2 && !retriable(res.Err):
			t.Fatalf("batch %d after the failed one: error %d (%s), want a retriable error", seq, res.Err, res.Message)
		}
	}
	// The client retries from the failed batch on, in order.
	for seq := int32(2); seq < 6; seq++ {
		res := p.produce(idemBatch(t, pid, 0, seq), -1, 5*time.Second)(ctx)
		if res.Err != 0 || res.BaseOffset != int64(seq) {
			t.Fatalf("retry of %d: error %d (%s) offset %d", seq, res.Err, res.Message, res.BaseOffset)
		}
	}
	// A retry of a batch already written is a duplicate: its first offset.
	if res := p.produce(idemBatch(t, pid, 0, 3), -1, 5*time.Second)(ctx); res.Err != 0 || res.BaseOffset != 3 {
		t.Fatalf("duplicate of 3: error %d offset %d", res.Err, res.BaseOffset)
	}
	wantSeqs(t, p, 6)
}

// TestSequenceAfterFailedBatch: once a batch's proposal has failed, the
// next batch, sent before the client saw the failure, is answered with a
// retriable error rather than OUT_OF_ORDER_SEQUENCE_NUMBER (fatal for
// librdkafka); so is one following a batch refused before its sequence was
// checked (NOT_LEADER in an election). A real gap still is out of order.
func TestSequenceAfterFailedBatch(t *testing.T) {
	b := startNode(t, oneNodeConfig(t))
	p := newTopic(t, b, "seqafter")
	const pid = 9
	ctx := context.Background()
	produce := func(seq int32) kafka.ProduceResult {
		return p.produce(idemBatch(t, pid, 0, seq), -1, 5*time.Second)(ctx)
	}
	if res := produce(0); res.Err != 0 {
		t.Fatalf("batch 0: %d", res.Err)
	}
	failProposalOf(p, 1)
	if res := produce(1); !retriable(res.Err) {
		t.Fatalf("failed batch 1: error %d", res.Err)
	}
	if res := produce(2); res.Err != kerr.NotEnoughReplicas.Code {
		t.Fatalf("batch 2 after failed 1: error %d (%s), want NOT_ENOUGH_REPLICAS", res.Err, res.Message)
	}
	for seq := int32(1); seq < 3; seq++ {
		if res := produce(seq); res.Err != 0 || res.BaseOffset != int64(seq) {
			t.Fatalf("retry of %d: error %d offset %d", seq, res.Err, res.BaseOffset)
		}
	}
	// Batch 3 refused before the check (as the not-leader path does).
	bi, err := clog.ParseBatch(idemBatch(t, pid, 0, 3))
	if err != nil {
		t.Fatal(err)
	}
	p.noteRefused(bi)
	if res := produce(4); res.Err != kerr.NotEnoughReplicas.Code {
		t.Fatalf("batch 4 after refused 3: error %d (%s)", res.Err, res.Message)
	}
	if res := produce(3); res.Err != 0 || res.BaseOffset != 3 {
		t.Fatalf("retry of 3: error %d offset %d", res.Err, res.BaseOffset)
	}
	if res := produce(5); res.Err != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("batch 5 after 3 (4 never written): error %d, want OUT_OF_ORDER_SEQUENCE_NUMBER", res.Err)
	}
	if res := produce(4); res.Err != 0 || res.BaseOffset != 4 {
		t.Fatalf("batch 4: error %d offset %d", res.Err, res.BaseOffset)
	}
	wantSeqs(t, p, 5)
	if res := produce(5); res.Err != 0 {
		t.Fatalf("batch 5: error %d", res.Err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if f := p.pending[pid]; f != nil && len(f.failed) > 0 {
		t.Fatalf("failures kept after their retries landed: %+v", f.failed)
	}
}
