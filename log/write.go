package log

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// Append writes entries, which must be contiguous. An entry whose index is
// at or below LastIndex replaces that entry and everything after it (Raft's
// conflict rule). Append assigns BaseOffset and Count in entries (for
// KindBatch, Count comes from the batch header). The frames reach the
// operating system but are not durable until Sync.
func (l *Log) Append(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	first := entries[0].Index
	if first <= l.base.index {
		return fmt.Errorf("log %s: append at %d before base %d: %w", l.opts.Dir, first, l.base.index, ErrCompacted)
	}
	if last := l.lastIndexLocked(); first <= last {
		if err := l.truncateLocked(first - 1); err != nil {
			return err
		}
	} else if first != last+1 {
		return fmt.Errorf("log %s: append at %d leaves a gap after %d", l.opts.Dir, first, last)
	}
	next := l.nextOffsetLocked()
	knownEpochs := len(l.epochs)
	buf := l.frameBuf[:0]
	seg := l.active()
	start := seg.size
	saved := seg.save()
	for i := range entries {
		e := &entries[i]
		e.BaseOffset = next
		e.Count = 0
		if e.Kind == KindBatch {
			bi, err := ParseBatch(e.Payload)
			if err != nil {
				return err
			}
			e.Count = bi.LastOffsetDelta + 1
			e.MaxTimestamp = bi.MaxTimestamp
		} else if e.MaxTimestamp == 0 {
			e.MaxTimestamp = -1
		}
		next = e.EndOffset()
		size := int64(frameHeaderSize + len(e.Payload))
		if !seg.empty() && (seg.size+int64(len(buf))+size > l.opts.SegmentBytes ||
			(l.opts.SegmentAge > 0 && time.Since(seg.created) > l.opts.SegmentAge)) {
			if err := l.writeFrames(seg, buf, start); err != nil {
				seg.restore(saved)
				return err
			}
			buf = buf[:0]
			if err := l.rollLocked(e.Index, e.BaseOffset); err != nil {
				return err
			}
			seg = l.active()
			start = seg.size
			saved = seg.save()
		}
		if e.Term > l.lastTermLocked() {
			l.noteTerm(e.Term, e.Index, e.BaseOffset)
		}
		pos := start + int64(len(buf))
		buf = l.appendFrame(buf, e)
		seg.noteFrame(e, pos, size, l.opts.IndexInterval)
	}
	// The term history must not lag the entries it describes: write it
	// before the frames.
	if l.dirtyEp {
		if err := l.writeEpochs(); err != nil {
			return err
		}
	} else if len(l.epochs) > knownEpochs {
		if err := l.appendEpochs(knownEpochs); err != nil {
			return err
		}
	}
	if err := l.writeFrames(seg, buf, start); err != nil {
		// Nothing of this write counts: cut what may have reached the file
		// and forget the frames, so the log stays readable up to the last
		// good entry (a full disk must not lose what came before it).
		seg.restore(saved)
		last := l.lastIndexLocked()
		for len(l.epochs) > 0 && l.epochs[len(l.epochs)-1].index > last {
			l.epochs = l.epochs[:len(l.epochs)-1]
		}
		return err
	}
	l.unsynced.Store(true)
	if cap(buf) <= 4<<20 {
		l.frameBuf = buf[:0]
	}
	return seg.flushIndexes()
}

// appendFrame encodes e into buf. A batch's baseOffset and
// partitionLeaderEpoch are rewritten in the copy, not in e.Payload, which the
// caller may still share (Raft keeps unstable entries in memory).
func (l *Log) appendFrame(buf []byte, e *Entry) []byte {
	at := len(buf)
	buf = append(buf, make([]byte, frameHeaderSize)...)
	putHeader(buf[at:], e)
	buf = append(buf, e.Payload...)
	if e.Kind == KindBatch {
		p := buf[at+frameHeaderSize:]
		binary.BigEndian.PutUint64(p[batchBaseOffset:], uint64(e.BaseOffset))
		binary.BigEndian.PutUint32(p[batchLeaderEpoch:], uint32(int32(e.Term)))
	}
	binary.BigEndian.PutUint32(buf[at+4:], frameCRC(buf[at:]))
	return buf
}

func (l *Log) writeFrames(seg *segment, buf []byte, at int64) error {
	if len(buf) == 0 {
		return nil
	}
	if _, err := seg.f.WriteAt(buf, at); err != nil {
		return fmt.Errorf("log %s: write: %w", l.opts.Dir, err)
	}
	return nil
}

func (l *Log) rollLocked(index uint64, offset int64) error {
	old := l.active()
	if err := old.seal(); err != nil {
		return fmt.Errorf("log %s: seal segment: %w", l.opts.Dir, err)
	}
	s, err := createSegment(l.opts.Dir, index, offset)
	if err != nil {
		return err
	}
	l.segs = append(l.segs, s)
	return syncDir(l.opts.Dir)
}

// Truncate removes every entry after index.
func (l *Log) Truncate(index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.truncateLocked(index)
}

func (l *Log) truncateLocked(index uint64) error {
	if index >= l.lastIndexLocked() {
		return nil
	}
	if index < l.base.index {
		return fmt.Errorf("log %s: truncate to %d before base %d", l.opts.Dir, index, l.base.index)
	}
	// Drop whole segments that start after index.
	for len(l.segs) > 1 && l.active().baseIndex > index {
		s := l.active()
		l.segs = l.segs[:len(l.segs)-1]
		l.dropSegment(s)
	}
	s := l.active()
	if s.idxF == nil {
		// A sealed segment becomes active again: reopen its indexes.
		var err error
		if s.idxF, err = os.OpenFile(segmentName(l.opts.Dir, s.baseIndex, ".index"), os.O_RDWR, 0o644); err != nil {
			return err
		}
		if s.timF, err = os.OpenFile(segmentName(l.opts.Dir, s.baseIndex, ".timeindex"), os.O_RDWR, 0o644); err != nil {
			return err
		}
		if _, err := s.idxF.Seek(0, io.SeekEnd); err != nil {
			return err
		}
		if _, err := s.timF.Seek(0, io.SeekEnd); err != nil {
			return err
		}
	}
	if !s.empty() && s.lastIndex <= index {
		return l.trimEpochs(index)
	}
	// Find where the frame after index starts.
	cut := int64(-1)
	var keep *frameHeader
	var keepPos int64
	pos := posForIndex(s.index, index)
	if index < s.baseIndex {
		cut = 0
	} else {
		_, err := s.scan(pos, s.size, func(h *frameHeader, p int64, _ []byte) bool {
			if h.index > index {
				cut = p
				return false
			}
			hh := *h
			keep, keepPos = &hh, p
			return true
		})
		if err != nil {
			return err
		}
		if cut < 0 {
			return fmt.Errorf("log %s: truncate: index %d not found", l.opts.Dir, index)
		}
	}
	if err := s.f.Truncate(cut); err != nil {
		return err
	}
	// Rebuild in-memory state for the cut segment.
	n := sort.Search(len(s.index), func(k int) bool { return int64(s.index[k].pos) >= cut })
	s.cutIndexes(n, len(s.times))
	s.size = cut
	if keep == nil {
		s.lastIndex = 0
		s.index, s.times = nil, nil
		s.nextOffset = l.nextOffsetBefore(len(l.segs) - 1)
		s.baseOffset = s.nextOffset
		s.maxTs = -1
	} else {
		s.lastIndex = keep.index
		s.nextOffset = keep.baseOffset + int64(keep.count)
		s.sinceIndex = cut - keepPos
		if len(s.index) > 0 {
			s.sinceIndex = cut - int64(s.index[len(s.index)-1].pos)
		}
		m := sort.Search(len(s.times), func(k int) bool { return s.times[k].offset >= s.nextOffset })
		s.cutIndexes(len(s.index), m)
		s.maxTs = -1
		if m > 0 {
			s.maxTs = s.times[m-1].ts
		}
	}
	if err := s.idxF.Truncate(int64(len(s.index) * indexRecordSize)); err != nil {
		return err
	}
	if err := s.timF.Truncate(int64(len(s.times) * timeRecordSize)); err != nil {
		return err
	}
	if _, err := s.idxF.Seek(0, io.SeekEnd); err != nil {
		return err
	}
	if _, err := s.timF.Seek(0, io.SeekEnd); err != nil {
		return err
	}
	s.pendingIndex, s.pendingTime = s.pendingIndex[:0], s.pendingTime[:0]
	return l.trimEpochs(index)
}

// nextOffsetBefore is the end offset of the segments before segs[i].
func (l *Log) nextOffsetBefore(i int) int64 {
	for j := i - 1; j >= 0; j-- {
		if !l.segs[j].empty() {
			return l.segs[j].nextOffset
		}
	}
	return l.base.offset
}

// dropSegment unlinks a segment's files; readers holding it finish first.
func (l *Log) dropSegment(s *segment) {
	if s.idxF != nil {
		s.idxF.Close()
		s.timF.Close()
		s.idxF, s.timF = nil, nil
	}
	l.removeFiles(s.baseIndex)
	s.removed.Store(true)
	s.release()
}

// Sync makes everything appended so far durable.
func (l *Log) Sync() error {
	if !l.unsynced.Swap(false) {
		return nil
	}
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	s := l.active()
	s.acquire()
	dirty := l.dirtyEp || l.epUnsynced
	l.mu.RUnlock()
	defer s.release()
	if dirty {
		l.mu.Lock()
		var err error
		if l.dirtyEp {
			err = l.writeEpochs()
		} else if l.epUnsynced && l.epF != nil {
			if err = l.epF.Sync(); err == nil {
				l.epUnsynced = false
			}
		}
		l.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if err := s.f.Sync(); err != nil {
		l.unsynced.Store(true)
		return fmt.Errorf("log %s: fsync: %w", l.opts.Dir, err)
	}
	return nil
}

// Reset discards every entry and starts the log after (index, term) with
// the next offset at offset. A replica installing a snapshot calls it.
func (l *Log) Reset(index, term uint64, offset int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		l.dropSegment(s)
	}
	l.segs = nil
	l.base = epoch{term: term, index: index, offset: offset}
	l.epochs = nil
	if err := l.writeEpochs(); err != nil {
		return err
	}
	s, err := createSegment(l.opts.Dir, index+1, offset)
	if err != nil {
		return err
	}
	l.segs = append(l.segs, s)
	return syncDir(l.opts.Dir)
}
