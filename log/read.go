package log

import (
	"fmt"
	"sort"
)

// Entries returns entries [lo, hi), at most maxBytes of payload but at
// least one entry.
func (l *Log) Entries(lo, hi uint64, maxBytes uint64) ([]Entry, error) {
	l.mu.RLock()
	if lo <= l.base.index {
		l.mu.RUnlock()
		return nil, ErrCompacted
	}
	if hi > l.lastIndexLocked()+1 {
		l.mu.RUnlock()
		return nil, ErrUnavailable
	}
	segs := l.segsFrom(func(s *segment) bool { return s.empty() || s.lastIndex >= lo })
	l.mu.RUnlock()
	defer releaseAll(segs)

	var out []Entry
	var total uint64
	stopped := false
	for _, s := range segs {
		if s.empty() {
			continue
		}
		pos := posForIndex(s.index, lo)
		_, err := s.scan(pos, func(h *frameHeader, _ int64, frame []byte) bool {
			if h.index < lo {
				return true
			}
			if h.index >= hi {
				stopped = true
				return false
			}
			p := h.payloadLen()
			if len(out) > 0 && total+uint64(p) > maxBytes {
				stopped = true
				return false
			}
			payload := make([]byte, p)
			copy(payload, frame[frameHeaderSize:])
			out = append(out, Entry{Index: h.index, Term: h.term, Kind: h.kind, BaseOffset: h.baseOffset,
				Count: h.count, MaxTimestamp: h.maxTimestamp, Payload: payload})
			total += uint64(p)
			lo = h.index + 1
			return true
		})
		if err != nil {
			return nil, err
		}
		if stopped || lo >= hi {
			stopped = true
			break
		}
	}
	if !stopped && lo < hi {
		// Entries inside [FirstIndex, LastIndex] could not be read back.
		return out, fmt.Errorf("log %s: entries [%d,%d): %w", l.opts.Dir, lo, hi, ErrCorrupt)
	}
	return out, nil
}

// segsFrom returns acquired segments starting at the first one for which
// from answers true. Callers hold l.mu.
func (l *Log) segsFrom(from func(*segment) bool) []segView {
	i := sort.Search(len(l.segs), func(k int) bool { return from(l.segs[k]) })
	out := make([]segView, 0, len(l.segs)-i)
	for _, s := range l.segs[i:] {
		s.acquire()
		out = append(out, s.view())
	}
	return out
}

func releaseAll(segs []segView) {
	for i := range segs {
		segs[i].seg.release()
	}
}

// ReadBatches returns the record batches holding offsets from offset up to
// (not including) maxOffset, concatenated as Kafka's Fetch wants them. It
// returns at most maxBytes unless the first batch alone is larger and
// minOne is set. The first batch may start before offset (clients skip the
// records they did not ask for).
func (l *Log) ReadBatches(offset, maxOffset int64, maxBytes int, minOne bool) ([]byte, error) {
	if offset >= maxOffset {
		return nil, nil
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return nil, ErrClosed
	}
	segs := l.segsFrom(func(s *segment) bool { return !s.empty() && s.nextOffset > offset || s.empty() })
	l.mu.RUnlock()
	defer releaseAll(segs)

	var out []byte
	for _, s := range segs {
		if s.empty() {
			continue
		}
		pos := posForOffset(s.index, offset)
		full := false
		_, err := s.scan(pos, func(h *frameHeader, _ int64, frame []byte) bool {
			if h.kind != KindBatch || h.baseOffset+int64(h.count) <= offset {
				return true
			}
			if h.baseOffset >= maxOffset {
				full = true
				return false
			}
			p := frame[frameHeaderSize:]
			if len(out)+len(p) > maxBytes && !(minOne && len(out) == 0) {
				full = true
				return false
			}
			if out == nil {
				// Start small and let append grow: a consumer at the tail
				// reads a batch or two per fetch, and sizing every answer
				// for maxBytes (1 MiB by default) cost a zeroed 1 MiB
				// allocation per fetch.
				out = make([]byte, 0, min(maxBytes, max(len(p), 16<<10)))
			}
			out = append(out, p...)
			return true
		})
		if err != nil {
			return nil, err
		}
		if full {
			break
		}
	}
	return out, nil
}

// OffsetForTime returns the base offset of the first batch whose max
// timestamp is at least ts, and that batch, or ok=false when no batch is.
func (l *Log) OffsetForTime(ts int64) (offset int64, batch []byte, ok bool, err error) {
	l.mu.RLock()
	segs := l.segsFrom(func(*segment) bool { return true }) // max timestamps are not ordered across segments
	l.mu.RUnlock()
	defer releaseAll(segs)
	for _, s := range segs {
		if s.empty() || s.maxTs < ts {
			continue
		}
		// Start at the last time record below ts: every frame before it
		// has a smaller max timestamp.
		pos := int64(0)
		n := sort.Search(len(s.times), func(k int) bool { return s.times[k].ts >= ts })
		if n > 0 {
			pos = posForOffset(s.index, s.times[n-1].offset)
		}
		_, err := s.scan(pos, func(h *frameHeader, _ int64, frame []byte) bool {
			if h.kind == KindBatch && h.maxTimestamp >= ts {
				offset = h.baseOffset
				batch = append([]byte(nil), frame[frameHeaderSize:]...)
				ok = true
				return false
			}
			return true
		})
		if err != nil || ok {
			return offset, batch, ok, err
		}
	}
	return 0, nil, false, nil
}

// MaxTimestamp returns the largest timestamp in the log and the base offset
// of the batch holding it (ListOffsets with timestamp -3).
func (l *Log) MaxTimestamp() (ts int64, offset int64, ok bool, err error) {
	l.mu.RLock()
	var best *segment
	for _, s := range l.segs {
		if !s.empty() && s.maxTs >= 0 && (best == nil || s.maxTs > best.maxTs) {
			best = s
		}
	}
	if best == nil {
		l.mu.RUnlock()
		return 0, 0, false, nil
	}
	best.acquire()
	v := best.view()
	l.mu.RUnlock()
	defer best.release()
	_, err = v.scan(0, func(h *frameHeader, _ int64, _ []byte) bool {
		if h.kind == KindBatch && h.maxTimestamp == v.maxTs {
			ts, offset, ok = h.maxTimestamp, h.baseOffset, true
			return false
		}
		return true
	})
	return ts, offset, ok, err
}

// EndOffsetAt returns the end offset after entry index, which must be stored
// (or be the base). The replica uses it to turn a commit index into a high
// watermark.
func (l *Log) EndOffsetAt(index uint64) (int64, error) {
	l.mu.RLock()
	if index == l.base.index {
		defer l.mu.RUnlock()
		return l.base.offset, nil
	}
	if index < l.base.index {
		l.mu.RUnlock()
		return 0, ErrCompacted
	}
	if index > l.lastIndexLocked() {
		l.mu.RUnlock()
		return 0, ErrUnavailable
	}
	i := sort.Search(len(l.segs), func(k int) bool { return !l.segs[k].empty() && l.segs[k].lastIndex >= index })
	s := l.segs[i]
	if s.lastIndex == index {
		defer l.mu.RUnlock()
		return s.nextOffset, nil
	}
	s.acquire()
	v := s.view()
	l.mu.RUnlock()
	defer s.release()
	var end int64 = -1
	_, err := v.scan(posForIndex(v.index, index), func(h *frameHeader, _ int64, _ []byte) bool {
		if h.index == index {
			end = h.baseOffset + int64(h.count)
			return false
		}
		return h.index < index
	})
	if err != nil {
		return 0, err
	}
	if end < 0 {
		return 0, fmt.Errorf("log %s: end offset of %d: %w", l.opts.Dir, index, ErrCorrupt)
	}
	return end, nil
}
