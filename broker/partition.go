package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

// partition is this node's replica of one Kafka partition: a Raft group
// whose log is the partition log, and the state applied from it (the high
// watermark and the idempotent-producer state).
type partition struct {
	b     *Broker
	topic string
	index int32
	group uint64
	// rep is set by attach before the partition is reachable by requests,
	// and read only by them. Raft may run the replica on a worker before
	// attach (a snapshot install calls Restore), so that side uses live and
	// restored instead.
	rep      *raft.Replica
	live     atomic.Pointer[raft.Replica]
	restored atomic.Uint64 // last index given to Restore

	hw       atomic.Int64 // committed end offset: consumers never read past it
	logStart atomic.Int64 // set by DeleteRecords (records_delete.go)
	notify   atomic.Pointer[chan struct{}]

	mu        sync.Mutex
	producers producerState
	pending   map[int64][]*pendingBatch // proposed, not yet applied, per producer
}

type pendingBatch struct {
	epoch       int16
	first, last int32
	p           raft.Pending
}

func newPartition(b *Broker, topic string, index int32, group uint64) *partition {
	p := &partition{b: b, topic: topic, index: index, group: group,
		producers: producerState{}, pending: map[int64][]*pendingBatch{}}
	ch := make(chan struct{})
	p.notify.Store(&ch)
	return p
}

func (p *partition) name() string { return p.topic + "-" + strconv.Itoa(int(p.index)) }

// wake tells long polls that the partition changed.
func (p *partition) wake() {
	ch := make(chan struct{})
	old := p.notify.Swap(&ch)
	close(*old)
}

func (p *partition) waitCh() <-chan struct{} { return *p.notify.Load() }

// Apply implements raft.StateMachine: committed batches move the high
// watermark and feed the producer state.
func (p *partition) Apply(ents []raft.Committed) error {
	hw := int64(-1)
	p.mu.Lock()
	for _, e := range ents {
		if e.Kind == clog.KindBatch {
			bi, err := clog.ParseBatch(e.Payload)
			if err != nil {
				p.mu.Unlock()
				return fmt.Errorf("%s: committed entry %d: %w", p.name(), e.Index, err)
			}
			if bi.ProducerID >= 0 {
				p.producers.apply(bi.ProducerID, bi.ProducerEpoch, bi.BaseSequence,
					lastSeq(bi.BaseSequence, bi.LastOffsetDelta+1), e.BaseOffset)
			}
		} else if e.Kind == clog.KindCommand {
			if err := p.applyCommand(e); err != nil {
				p.mu.Unlock()
				return err
			}
		}
		hw = e.BaseOffset + int64(e.Count)
	}
	p.mu.Unlock()
	if hw >= 0 {
		p.raiseHW(hw)
	}
	return nil
}

// raiseHW moves the high watermark up to hw, never down: committed entries
// stay committed, so a lower value is a stale one (attach reading an
// applied index that Apply or Restore has since passed on a worker).
func (p *partition) raiseHW(hw int64) {
	for {
		cur := p.hw.Load()
		if hw <= cur {
			return
		}
		if p.hw.CompareAndSwap(cur, hw) {
			p.wake()
			return
		}
	}
}

// Snapshot implements raft.StateMachine: the producer state.
func (p *partition) Snapshot() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.encodeSnapshot(), nil
}

// Restore implements raft.StateMachine.
func (p *partition) Restore(index uint64, data []byte) error {
	ps, logStart, err := decodeSnapshot(data)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name(), err)
	}
	p.mu.Lock()
	p.producers = ps
	p.mu.Unlock()
	p.logStart.Store(logStart)
	// Restore runs while the replica opens (before attach) or on a worker.
	// Recording the index before looking for the replica, while attach
	// stores the replica before reading the index, means one of the two
	// always sets the high watermark for it.
	p.restored.Store(max(p.restored.Load(), index))
	if rep := p.live.Load(); rep != nil {
		p.raiseHW(endOffsetAt(rep, index))
	}
	return nil
}

// attach hands the partition its replica once AddReplica returned, and
// sets the high watermark to the end of what is applied (raft applies the
// rest as it commits). Call it before the partition is published to
// requests.
func (p *partition) attach(rep *raft.Replica) {
	p.rep = rep
	p.live.Store(rep)
	p.raiseHW(endOffsetAt(rep, max(rep.Status().Applied, p.restored.Load())))
}

// endOffsetAt is the Kafka end offset of the log at raft index i, or the
// log start when i is below what the log still holds.
func endOffsetAt(rep *raft.Replica, i uint64) int64 {
	if hw, err := rep.Log().EndOffsetAt(i); err == nil {
		return hw
	}
	return rep.Log().StartOffset()
}

func immediate(r kafka.ProduceResult) kafka.ProduceWait {
	return func(context.Context) kafka.ProduceResult { return r }
}

func produceErr(code int16, msg string) kafka.ProduceWait {
	return immediate(kafka.ProduceResult{Err: code, Message: msg, BaseOffset: -1, LogAppendTime: -1, LogStartOffset: -1, Hint: noHint})
}

// produce validates a batch, checks its producer sequence and proposes it.
// It runs on the client connection's reader goroutine, so batches from one
// connection are proposed in order; the returned function waits.
func (p *partition) produce(records []byte, acks int16, timeout time.Duration) kafka.ProduceWait {
	bi, err := clog.ParseBatch(records)
	if err != nil {
		return produceErr(kerr.CorruptMessage.Code, "records must be exactly one v2 record batch")
	}
	if !clog.BatchCRCValid(records) {
		return produceErr(kerr.CorruptMessage.Code, "record batch CRC mismatch")
	}
	if bi.NumRecords != bi.LastOffsetDelta+1 || bi.NumRecords <= 0 {
		return produceErr(kerr.InvalidRecord.Code, "record count does not match the last offset delta")
	}
	if c := bi.Attributes & 0x7; c > 4 {
		return produceErr(kerr.UnsupportedCompressionType.Code, "unknown compression codec")
	}
	if bi.Attributes&0x30 != 0 {
		return produceErr(kerr.InvalidRecord.Code, "transactional and control batches are not supported")
	}
	cfg := p.b.topicConfig(p.topic)
	if int64(len(records)) > cfg.maxMessageBytes {
		return produceErr(kerr.MessageTooLarge.Code, "batch larger than max.message.bytes")
	}
	if !cfg.timestampOK(bi.FirstTimestamp, bi.MaxTimestamp, time.Now()) {
		return produceErr(kerr.InvalidTimestamp.Code, "timestamp outside message.timestamp.before.max.ms / after.max.ms")
	}
	st := p.status(min(timeout, electionWait))
	if !st.IsLeader() {
		return p.notLeader(st)
	}
	if !st.LeaderReady {
		// A new leader first applies its own term's first entry, so its
		// producer state covers everything its predecessor committed.
		st = p.waitLeaderReady(min(timeout, 3*time.Second))
		if !st.IsLeader() || !st.LeaderReady {
			return p.notLeader(st)
		}
	}
	if acks == -1 && len(st.ISR) < cfg.minInsync {
		return immediate(kafka.ProduceResult{Err: kerr.NotEnoughReplicas.Code, BaseOffset: -1, LogAppendTime: -1, LogStartOffset: -1})
	}
	appendTime := int64(-1)
	data := records
	if cfg.logAppendTime {
		appendTime = time.Now().UnixMilli()
		data = append([]byte(nil), records...)
		clog.SetBatchLogAppendTime(data, appendTime)
	}

	p.mu.Lock()
	if bi.ProducerID >= 0 {
		if w := p.checkSequence(bi, acks); w != nil {
			p.mu.Unlock()
			return w
		}
	}
	pend := p.rep.Submit(clog.KindBatch, data)
	if bi.ProducerID >= 0 {
		p.pending[bi.ProducerID] = append(p.pending[bi.ProducerID], &pendingBatch{epoch: bi.ProducerEpoch,
			first: bi.BaseSequence, last: lastSeq(bi.BaseSequence, bi.NumRecords), p: pend})
	}
	p.mu.Unlock()
	return p.waiter(pend, acks, timeout, appendTime)
}

func (p *partition) waiter(pend raft.Pending, acks int16, timeout time.Duration, appendTime int64) kafka.ProduceWait {
	return func(ctx context.Context) kafka.ProduceResult {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		res, err := p.rep.Wait(ctx, pend, acks == -1)
		if err != nil {
			return p.produceFailure(err)
		}
		return kafka.ProduceResult{BaseOffset: res.BaseOffset, LogAppendTime: appendTime, LogStartOffset: p.rep.Log().StartOffset()}
	}
}

func (p *partition) produceFailure(err error) kafka.ProduceResult {
	r := kafka.ProduceResult{BaseOffset: -1, LogAppendTime: -1, LogStartOffset: -1, Hint: noHint}
	var nl *raft.NotLeaderError
	switch {
	case errors.As(err, &nl):
		r.Err = kerr.NotLeaderForPartition.Code
		r.Message = nl.Error()
		r.Hint = p.awayHint(nl.Term, time.Second)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// No quorum acknowledged in time: retriable, and retries of
		// idempotent batches are deduplicated.
		r.Err = kerr.NotEnoughReplicas.Code
		r.Message = "not replicated to a quorum within the request timeout"
	case errors.Is(err, raft.ErrStopped):
		if st := p.rep.Status(); st.Failed {
			r.Err = kerr.KafkaStorageError.Code
		} else {
			r.Err = kerr.NotLeaderForPartition.Code
			r.Hint = p.b.leaderHint(p.group, 0)
		}
	default:
		r.Err = kerr.KafkaStorageError.Code
		r.Message = err.Error()
	}
	return r
}

// notLeader answers a produce this replica cannot take. Without a known
// leader to name, the answer waits for one (awayHint) in the reply, off the
// connection's reader.
func (p *partition) notLeader(st *raft.Status) kafka.ProduceWait {
	res := kafka.ProduceResult{Err: kerr.NotLeaderForPartition.Code, BaseOffset: -1, LogAppendTime: -1, LogStartOffset: -1,
		Hint: p.b.leaderHint(p.group, 0)}
	if res.Hint.Leader >= 0 {
		return immediate(res)
	}
	return func(context.Context) kafka.ProduceResult {
		res.Hint = p.awayHint(st.Term, time.Second)
		return res
	}
}

// electionWait bounds how long a request waits for an election in progress
// on this partition to resolve.
const electionWait = 500 * time.Millisecond

// status returns the replica's status; while an election is in progress
// (no leader known yet), it waits up to d for the outcome. During a
// leadership transfer the old leader already names this node as the new
// one (KIP-951 hint) while this node may still be finishing its election:
// answering the client's redirected request NOT_LEADER without a usable
// hint would leave it waiting for its next metadata refresh (seconds).
func (p *partition) status(d time.Duration) *raft.Status {
	st, _ := p.awaitStatus(d, leaderKnown)
	return st
}

func leaderKnown(st *raft.Status) bool { return st.IsLeader() || st.Leader != 0 }

// waitLeaderReady waits up to d, while this replica leads, until it has
// applied its own term's first entry.
func (p *partition) waitLeaderReady(d time.Duration) *raft.Status {
	st, _ := p.awaitStatus(d, func(st *raft.Status) bool { return !st.IsLeader() || st.LeaderReady })
	return st
}

// awaitStatus returns the replica's status once done accepts it, waiting up
// to d for changes; ok is false when d ran out first. An accepted status
// costs no timer: this sits on the produce and fetch paths.
func (p *partition) awaitStatus(d time.Duration, done func(*raft.Status) bool) (st *raft.Status, ok bool) {
	if st = p.rep.Status(); done(st) {
		return st, true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		ch := p.rep.Changed()
		if st = p.rep.Status(); done(st) {
			return st, true
		}
		select {
		case <-ch:
		case <-t.C:
			return p.rep.Status(), false
		}
	}
}

// checkSequence applies Kafka's idempotence rules against the applied
// state and the batches still in flight. It returns a ready answer for
// duplicates and errors, or nil to go ahead. Callers hold p.mu.
func (p *partition) checkSequence(bi clog.BatchInfo, acks int16) kafka.ProduceWait {
	pid, epoch, first := bi.ProducerID, bi.ProducerEpoch, bi.BaseSequence
	last := lastSeq(first, bi.NumRecords)
	// Drop finished proposals: applied ones are in the producer state now.
	live := p.pending[pid][:0]
	for _, pb := range p.pending[pid] {
		select {
		case <-raft.Done(pb.p):
		default:
			live = append(live, pb)
		}
	}
	if len(live) == 0 {
		delete(p.pending, pid)
	} else {
		p.pending[pid] = live
	}
	applied := p.producers[pid]
	curEpoch := int16(-1)
	if applied != nil {
		curEpoch = applied.epoch
	}
	if n := len(live); n > 0 && live[n-1].epoch > curEpoch {
		curEpoch = live[n-1].epoch
	}
	if epoch < curEpoch {
		return produceErr(kerr.InvalidProducerEpoch.Code, "producer epoch is fenced")
	}
	for _, pb := range live {
		if pb.epoch == epoch && pb.first == first && pb.last == last {
			// A retry of a batch still in flight gets that batch's answer.
			return p.waiter(pb.p, acks, 30*time.Second, -1)
		}
	}
	if applied != nil && applied.epoch == epoch {
		for _, b := range applied.batches {
			if b.first == first && b.last == last {
				return immediate(kafka.ProduceResult{BaseOffset: b.offset, LogAppendTime: -1, LogStartOffset: p.rep.Log().StartOffset()})
			}
		}
	}
	var prev *int32
	if n := len(live); n > 0 && live[n-1].epoch == epoch {
		prev = &live[n-1].last
	} else if applied != nil && applied.epoch == epoch && len(applied.batches) > 0 {
		prev = &applied.batches[len(applied.batches)-1].last
	}
	if prev == nil {
		if first != 0 {
			return produceErr(kerr.OutOfOrderSequenceNumber.Code, "a new producer epoch must start at sequence 0")
		}
		return nil
	}
	want := seqAfter(*prev)
	if first == want {
		return nil
	}
	diff := int64(first) - int64(want)
	if diff < 0 && diff > -(1<<30) {
		return produceErr(kerr.DuplicateSequenceNumber.Code, "batch is older than the last five")
	}
	return produceErr(kerr.OutOfOrderSequenceNumber.Code, fmt.Sprintf("expected sequence %d, got %d", want, first))
}

// checkEpoch applies KIP-320 fencing: an older epoch is fenced, a newer one
// is not known here yet.
func checkEpoch(current int32, st *raft.Status) int16 {
	if current < 0 {
		return 0
	}
	switch term := int32(st.Term); {
	case current < term:
		return kerr.FencedLeaderEpoch.Code
	case current > term:
		return kerr.UnknownLeaderEpoch.Code
	}
	return 0
}

func (p *partition) fetch(req kafka.FetchPartition) (kafka.FetchResult, <-chan struct{}) {
	res := kafka.FetchResult{HighWatermark: -1, LastStable: -1, LogStartOffset: -1, Hint: noHint}
	st := p.status(electionWait)
	if !st.IsLeader() {
		res.Err = kerr.NotLeaderForPartition.Code
		res.Hint = p.b.leaderHint(p.group, 0) // status already waited for an election
		return res, nil
	}
	if code := checkEpoch(req.CurrentEpoch, st); code != 0 {
		res.Err = code
		return res, nil
	}
	wait := p.waitCh()
	hw := p.hw.Load()
	l := p.rep.Log()
	start := p.startOffset()
	res.HighWatermark, res.LastStable, res.LogStartOffset = hw, hw, start
	// Out of range is judged against the log end, not the high watermark: a
	// new leader's high watermark can briefly trail what consumers saw.
	if req.Offset < start || req.Offset > l.NextOffset() {
		res.Err = kerr.OffsetOutOfRange.Code
		return res, nil
	}
	if req.Offset >= hw {
		return res, wait
	}
	recs, err := l.ReadBatches(req.Offset, hw, int(req.MaxBytes), req.MinOne)
	if err != nil {
		p.b.logger.Error("fetch read failed", "partition", p.name(), "offset", req.Offset, "err", err)
		res.Err = kerr.KafkaStorageError.Code
		return res, nil
	}
	res.Records = recs
	return res, wait
}

func (p *partition) listOffset(ts int64, current int32) kafka.ListOffsetResult {
	res := kafka.ListOffsetResult{Offset: -1, Timestamp: -1, LeaderEpoch: -1}
	st := p.status(electionWait)
	if !st.IsLeader() {
		res.Err = kerr.NotLeaderForPartition.Code
		res.Hint = p.b.leaderHint(p.group, 0)
		return res
	}
	if code := checkEpoch(current, st); code != 0 {
		res.Err = code
		return res
	}
	res.LeaderEpoch = int32(st.Term)
	l := p.rep.Log()
	hw := p.hw.Load()
	switch ts {
	case -1:
		res.Offset = hw
	case -2:
		res.Offset = p.startOffset()
	case -3:
		mts, off, ok, err := l.MaxTimestamp()
		if err != nil {
			res.Err = kerr.KafkaStorageError.Code
		} else if ok && off < hw {
			res.Offset, res.Timestamp = off, mts
		}
	default:
		off, batch, ok, err := l.OffsetForTime(ts)
		if err != nil {
			res.Err = kerr.KafkaStorageError.Code
			return res
		}
		if !ok || off >= hw {
			return res // no record at or after ts: offset -1
		}
		exact, rts := offsetInBatch(batch, ts)
		res.Offset, res.Timestamp = exact, rts
	}
	return res
}

func (p *partition) epochEnd(current, epoch int32) kafka.EpochEndResult {
	res := kafka.EpochEndResult{LeaderEpoch: -1, EndOffset: -1}
	st := p.status(electionWait)
	if !st.IsLeader() {
		res.Err = kerr.NotLeaderForPartition.Code
		return res
	}
	if code := checkEpoch(current, st); code != 0 {
		res.Err = code
		return res
	}
	if epoch < 0 {
		return res
	}
	l := p.rep.Log()
	e, end, ok := l.EpochEndOffset(uint64(epoch), l.NextOffset())
	if !ok {
		return res
	}
	res.LeaderEpoch, res.EndOffset = int32(e), end
	return res
}
