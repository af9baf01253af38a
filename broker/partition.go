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
	pending   map[int64]*producerFlight // proposed, not yet applied, per producer (sequence.go)
	// submitHook, set by tests only, may change a batch's guard to make
	// its proposal fail in Raft.
	submitHook func(clog.BatchInfo, *raft.Guard)
}

func newPartition(b *Broker, topic string, index int32, group uint64) *partition {
	p := &partition{b: b, topic: topic, index: index, group: group,
		producers: producerState{}, pending: map[int64]*producerFlight{}}
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
		p.noteRefused(bi)
		return p.notLeader(st)
	}
	if !st.LeaderReady {
		// A new leader first applies its own term's first entry, so its
		// producer state covers everything its predecessor committed.
		st = p.waitLeaderReady(min(timeout, 3*time.Second))
		if !st.IsLeader() || !st.LeaderReady {
			p.noteRefused(bi)
			return p.notLeader(st)
		}
	}
	if acks == -1 && len(st.ISR) < cfg.minInsync {
		p.noteRefused(bi)
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
	if bi.ProducerID < 0 {
		pend := p.rep.Submit(clog.KindBatch, data)
		p.mu.Unlock()
		return p.waiter(pend, acks, timeout, appendTime)
	}
	w, after := p.checkSequence(bi, acks)
	if w != nil {
		p.mu.Unlock()
		return w
	}
	// The check holds for this leader term only, and only if the batch it
	// follows commits: Raft refuses the batch otherwise (sequence.go).
	g := raft.Guard{Term: st.Term}
	if after != nil {
		g.After = after.p
	}
	if p.submitHook != nil {
		p.submitHook(bi, &g)
	}
	pend := p.rep.SubmitGuarded(clog.KindBatch, data, g)
	f := p.pending[bi.ProducerID]
	if f == nil {
		f = &producerFlight{}
		p.pending[bi.ProducerID] = f
	}
	f.batches = append(f.batches, &pendingBatch{epoch: bi.ProducerEpoch, first: bi.BaseSequence,
		last: lastSeq(bi.BaseSequence, bi.NumRecords), p: pend, after: after})
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
