package broker

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

// Idempotent produce on the leader. What is guaranteed, per producer id and
// epoch, across leader hand-overs:
//
//   - The log never holds a batch whose predecessor in sequence is missing.
//     A batch is checked against the producer state applied here plus the
//     batches this leader proposed and has not seen applied, in the leader
//     term of that check (a new leader has applied its own term's first
//     entry first: waitLeaderReady). Raft proposes it only if this replica
//     still leads in that term and the batch it follows did not fail
//     (raft.Guard), and in submission order, so a failed proposal takes
//     every later one of the same producer with it.
//   - A retry of a batch still in flight gets that batch's answer; a retry
//     of one of the last keepBatches batches in the log (applied here, by
//     whichever leader wrote it) succeeds with its first offset.
//   - A batch whose sequence follows a batch this leader failed or refused
//     with a retriable error (a proposal dropped in a hand-over, NOT_LEADER
//     during an election) gets that retriable error, not
//     OUT_OF_ORDER_SEQUENCE_NUMBER: the client retries the failed batch
//     first and then this one. OUT_OF_ORDER_SEQUENCE_NUMBER means a gap
//     this broker did not cause.

// producerFlight is one producer's batches this replica proposed and has
// not seen applied, and the ones it recently failed.
type producerFlight struct {
	batches []*pendingBatch // submission order
	failed  []failedBatch   // oldest first, at most keepBatches
}

type pendingBatch struct {
	epoch       int16
	first, last int32
	p           raft.Pending
	// after is the batch this one's proposal is chained to (Guard.After),
	// until that one is known applied or lost.
	after *pendingBatch
	lost  bool // failed, or chained to a batch that failed: it never commits
}

// failedBatch is a batch this replica failed or refused with a retriable
// error.
type failedBatch struct {
	epoch int16
	first int32
}

func finished(p raft.Pending) bool {
	select {
	case <-raft.Done(p):
		return true
	default:
		return false
	}
}

// isLost reports whether pb's proposal failed or will fail, and unlinks
// the batches it no longer needs to look at.
func (pb *pendingBatch) isLost() bool {
	if pb.lost {
		return true
	}
	if finished(pb.p) {
		pb.after = nil
		pb.lost = raft.Err(pb.p) != nil
		return pb.lost
	}
	if a := pb.after; a != nil {
		if a.isLost() {
			pb.lost, pb.after = true, nil
		} else if finished(a.p) {
			pb.after = nil
		}
	}
	return pb.lost
}

func (f *producerFlight) noteFailed(fb failedBatch) {
	for i, o := range f.failed {
		if o.epoch == fb.epoch && o.first == fb.first {
			f.failed[i] = fb
			return
		}
	}
	f.failed = append(f.failed, fb)
	if len(f.failed) > keepBatches {
		f.failed = append(f.failed[:0], f.failed[len(f.failed)-keepBatches:]...)
	}
}

// failedAt is the failure of the batch starting at first, if this replica
// failed it (or its proposal is lost and about to fail).
func (f *producerFlight) failedAt(epoch int16, first int32) (failedBatch, bool) {
	for _, pb := range f.batches {
		if pb.lost && pb.epoch == epoch && pb.first == first {
			return failedBatch{epoch: epoch, first: first}, true
		}
	}
	for _, fb := range f.failed {
		if fb.epoch == epoch && fb.first == first {
			return fb, true
		}
	}
	return failedBatch{}, false
}

// forgetFailed drops failures made moot: the batch at first is accepted
// again, or the producer moved to a newer epoch.
func (f *producerFlight) forgetFailed(epoch int16, first int32) {
	keep := f.failed[:0]
	for _, fb := range f.failed {
		if fb.epoch == epoch && fb.first != first {
			keep = append(keep, fb)
		}
	}
	f.failed = keep
}

// noteRefused records a batch of an idempotent producer that produce
// refused with a retriable error before checking its sequence.
func (p *partition) noteRefused(bi clog.BatchInfo) {
	if bi.ProducerID < 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.pending[bi.ProducerID]
	if f == nil {
		f = &producerFlight{}
		p.pending[bi.ProducerID] = f
	}
	f.noteFailed(failedBatch{epoch: bi.ProducerEpoch, first: bi.BaseSequence})
}

// sweep drops finished batches (applied ones are in the producer state
// now), remembering the failed ones, and returns what is still in flight.
func (f *producerFlight) sweep() []*pendingBatch {
	live := f.batches[:0]
	for _, pb := range f.batches {
		lost := pb.isLost()
		if !finished(pb.p) {
			live = append(live, pb)
			continue
		}
		if lost {
			f.noteFailed(failedBatch{epoch: pb.epoch, first: pb.first})
		}
	}
	clear(f.batches[len(live):])
	f.batches = live
	return live
}

// followsFailed answers a batch whose predecessor this replica failed:
// retriable, and with no reason to look for another leader (NOT_LEADER
// would send some clients to wait for a metadata refresh).
func followsFailed(fb failedBatch, first int32) kafka.ProduceWait {
	return produceErr(kerr.NotEnoughReplicas.Code,
		fmt.Sprintf("sequence %d of this producer failed here; retry it before sequence %d", fb.first, first))
}

// checkSequence applies Kafka's idempotence rules against the applied
// state and the batches still in flight (see the top of this file). It
// returns a ready answer for duplicates and errors, or nil to go ahead
// with the batch to chain the new one to (nil for none). Callers hold
// p.mu.
func (p *partition) checkSequence(bi clog.BatchInfo, acks int16) (kafka.ProduceWait, *pendingBatch) {
	pid, epoch, first := bi.ProducerID, bi.ProducerEpoch, bi.BaseSequence
	last := lastSeq(first, bi.NumRecords)
	f := p.pending[pid]
	if f == nil {
		f = &producerFlight{}
		p.pending[pid] = f
	}
	live := f.sweep()
	defer func() {
		if len(f.batches) == 0 && len(f.failed) == 0 {
			delete(p.pending, pid)
		}
	}()
	applied := p.producers[pid]
	curEpoch := int16(-1)
	if applied != nil {
		curEpoch = applied.epoch
	}
	if n := len(live); n > 0 && live[n-1].epoch > curEpoch {
		curEpoch = live[n-1].epoch
	}
	if epoch < curEpoch {
		return produceErr(kerr.InvalidProducerEpoch.Code, "producer epoch is fenced"), nil
	}
	var prevBatch *pendingBatch // newest batch of this epoch that may still commit
	for _, pb := range live {
		if pb.epoch != epoch || pb.isLost() {
			continue
		}
		if pb.first == first && pb.last == last {
			// A retry of a batch still in flight gets that batch's answer.
			return p.waiter(pb.p, acks, 30*time.Second, -1), nil
		}
		prevBatch = pb
	}
	if applied != nil && applied.epoch == epoch {
		for _, b := range applied.batches {
			if b.first == first && b.last == last {
				return immediate(kafka.ProduceResult{BaseOffset: b.offset, LogAppendTime: -1, LogStartOffset: p.rep.Log().StartOffset()}), nil
			}
		}
	}
	want := int32(0) // a new epoch starts at sequence 0
	if prevBatch != nil {
		want = seqAfter(prevBatch.last)
	} else if applied != nil && applied.epoch == epoch && len(applied.batches) > 0 {
		want = seqAfter(applied.batches[len(applied.batches)-1].last)
	}
	if first == want {
		f.forgetFailed(epoch, first)
		return nil, prevBatch
	}
	diff := int64(first) - int64(want)
	if diff < 0 && diff > -(1<<30) {
		return produceErr(kerr.DuplicateSequenceNumber.Code, "batch is older than the last five"), nil
	}
	if fb, ok := f.failedAt(epoch, want); ok {
		return followsFailed(fb, first), nil
	}
	if want == 0 && prevBatch == nil && (applied == nil || applied.epoch != epoch) {
		return produceErr(kerr.OutOfOrderSequenceNumber.Code, "a new producer epoch must start at sequence 0"), nil
	}
	return produceErr(kerr.OutOfOrderSequenceNumber.Code, fmt.Sprintf("expected sequence %d, got %d", want, first)), nil
}
