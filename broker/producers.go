package broker

import (
	"encoding/binary"
	"errors"
	"math"
)

// Idempotent producer state, per partition: for each producer id, its epoch
// and the last few batches (first and last sequence, base offset), as Kafka
// keeps. It is derived from the batches in the log as they are applied, so
// every replica holds the same state and a new leader dedups retries of
// batches its predecessor wrote.

const keepBatches = 5

type seqBatch struct {
	first, last int32
	offset      int64
}

type producerEntry struct {
	epoch   int16
	batches []seqBatch // oldest first, at most keepBatches
}

type producerState map[int64]*producerEntry

// seqAfter is the sequence following s (sequences wrap at MaxInt32).
func seqAfter(s int32) int32 {
	if s == math.MaxInt32 {
		return 0
	}
	return s + 1
}

// lastSeq is the sequence of a batch's last record.
func lastSeq(first int32, count int32) int32 {
	l := int64(first) + int64(count) - 1
	if l > math.MaxInt32 {
		l -= math.MaxInt32 + 1
	}
	return int32(l)
}

// apply records a batch that was committed at offset. Replaying a batch
// already recorded (after a snapshot restore) changes nothing.
func (ps producerState) apply(pid int64, epoch int16, first, last int32, offset int64) {
	if pid < 0 {
		return
	}
	e := ps[pid]
	if e == nil {
		e = &producerEntry{epoch: epoch}
		ps[pid] = e
	}
	switch {
	case epoch < e.epoch:
		return
	case epoch > e.epoch:
		e.epoch = epoch
		e.batches = e.batches[:0]
	}
	for _, b := range e.batches {
		if b.first == first && b.last == last {
			return
		}
	}
	if n := len(e.batches); n > 0 && offset <= e.batches[n-1].offset {
		return // older than what the state already holds
	}
	e.batches = append(e.batches, seqBatch{first: first, last: last, offset: offset})
	if len(e.batches) > keepBatches {
		e.batches = append(e.batches[:0], e.batches[len(e.batches)-keepBatches:]...)
	}
}

func (ps producerState) clone() producerState {
	out := make(producerState, len(ps))
	for pid, e := range ps {
		c := &producerEntry{epoch: e.epoch, batches: append([]seqBatch(nil), e.batches...)}
		out[pid] = c
	}
	return out
}

// Encoding: u32 count, then per producer i64 pid, i16 epoch, u8 n, and n
// times (i32 first, i32 last, i64 offset).
func (ps producerState) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(ps)))
	for pid, e := range ps {
		b = binary.BigEndian.AppendUint64(b, uint64(pid))
		b = binary.BigEndian.AppendUint16(b, uint16(e.epoch))
		b = append(b, byte(len(e.batches)))
		for _, s := range e.batches {
			b = binary.BigEndian.AppendUint32(b, uint32(s.first))
			b = binary.BigEndian.AppendUint32(b, uint32(s.last))
			b = binary.BigEndian.AppendUint64(b, uint64(s.offset))
		}
	}
	return b
}

var errBadProducerState = errors.New("malformed producer state")

func decodeProducerState(b []byte) (producerState, error) {
	ps := producerState{}
	if len(b) == 0 {
		return ps, nil
	}
	if len(b) < 4 {
		return nil, errBadProducerState
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	for i := uint32(0); i < n; i++ {
		if len(b) < 11 {
			return nil, errBadProducerState
		}
		pid := int64(binary.BigEndian.Uint64(b))
		e := &producerEntry{epoch: int16(binary.BigEndian.Uint16(b[8:]))}
		k := int(b[10])
		b = b[11:]
		if len(b) < k*16 {
			return nil, errBadProducerState
		}
		for j := 0; j < k; j++ {
			e.batches = append(e.batches, seqBatch{
				first:  int32(binary.BigEndian.Uint32(b)),
				last:   int32(binary.BigEndian.Uint32(b[4:])),
				offset: int64(binary.BigEndian.Uint64(b[8:])),
			})
			b = b[16:]
		}
		ps[pid] = e
	}
	return ps, nil
}
