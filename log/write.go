package log

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Append writes entries, which must be contiguous. An entry whose index is
// at or below LastIndex replaces that entry and everything after it (Raft's
// conflict rule). Append assigns BaseOffset and Count in entries (for
// KindBatch, Count comes from the batch header). The frames reach the
// operating system but are not durable until Sync.
//
// A malformed batch fails Append before anything changes. A failed write
// leaves the log as it was before the write (after any conflict truncation
// the call made), except that frames already moved into a segment sealed
// during the call stay (they are whole and fsynced); LastIndex tells what
// was kept.
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
	last := l.lastIndexLocked()
	if first > last+1 {
		return fmt.Errorf("log %s: append at %d leaves a gap after %d", l.opts.Dir, first, last)
	}
	// Check every entry before anything changes: a bad batch must not
	// leave the ones before it half noted.
	if err := countRecords(entries); err != nil {
		return err
	}
	if first <= last {
		if err := l.truncateLocked(first - 1); err != nil {
			return err
		}
	}
	next := l.nextOffsetLocked()
	for i := range entries {
		entries[i].BaseOffset = next
		next = entries[i].EndOffset()
	}
	// The term history must not lag the entries it describes: it reaches
	// the file before the frames (and Sync and rolls fsync it first).
	known := len(l.epochs)
	for i := range entries {
		if e := &entries[i]; e.Term > l.lastTermLocked() {
			l.noteTerm(e.Term, e.Index, e.BaseOffset)
		}
	}
	if err := l.persistEpochs(known); err != nil {
		l.forgetEpochsAfter(l.lastIndexLocked())
		return err
	}
	if err := l.writeEntries(entries); err != nil {
		// Frames that did not reach a segment are forgotten, and so are
		// the terms they began; the file has those terms, so it is marked
		// for a rewrite.
		l.forgetEpochsAfter(l.lastIndexLocked())
		return err
	}
	return nil
}

// countRecords sets each entry's record count and, for a batch, its max
// timestamp from the batch header; it fails on a malformed batch.
func countRecords(entries []Entry) error {
	for i := range entries {
		e := &entries[i]
		e.Count = 0
		if e.Kind == KindBatch {
			bi, err := ParseBatch(e.Payload)
			if err != nil {
				return fmt.Errorf("entry %d: %w", e.Index, err)
			}
			e.Count = bi.LastOffsetDelta + 1
			e.MaxTimestamp = bi.MaxTimestamp
		} else if e.MaxTimestamp == 0 {
			e.MaxTimestamp = -1
		}
	}
	return nil
}

// writeEntries encodes the entries into frames and writes them to the
// active segment, rolling where the segment is full or old. On a failed
// write the current segment's in-memory state and file are cut back to
// where the write began.
func (l *Log) writeEntries(entries []Entry) error {
	buf := l.frameBuf[:0]
	seg := l.active()
	start := seg.size
	saved := seg.save()
	for i := range entries {
		e := &entries[i]
		size := int64(frameHeaderSize + len(e.Payload))
		if l.shouldRoll(seg, int64(len(buf))+size) {
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
		pos := start + int64(len(buf))
		buf = l.appendFrame(buf, e)
		seg.noteFrame(e, pos, size, l.opts.IndexInterval)
	}
	if err := l.writeFrames(seg, buf, start); err != nil {
		// Nothing of this write counts: cut what may have reached the file
		// and forget the frames, so the log stays readable up to the last
		// good entry (a full disk must not lose what came before it).
		seg.restore(saved)
		return err
	}
	if cap(buf) <= 4<<20 {
		l.frameBuf = buf[:0]
	}
	return seg.flushIndexes()
}

// shouldRoll reports whether the active segment must roll before adding
// more bytes.
func (l *Log) shouldRoll(seg *segment, more int64) bool {
	if seg.empty() {
		return false
	}
	return seg.size+more > l.opts.SegmentBytes ||
		(l.opts.SegmentAge > 0 && time.Since(seg.created) > l.opts.SegmentAge)
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
	if err := seg.cutStaleTail(); err != nil {
		return fmt.Errorf("log %s: cut the tail of a failed write: %w", l.opts.Dir, err)
	}
	err := l.at(pointWrite)
	if err == nil {
		_, err = seg.f.WriteAt(buf, at)
	}
	if err != nil {
		return fmt.Errorf("log %s: write: %w", l.opts.Dir, err)
	}
	l.unsynced.Store(true)
	return l.at(pointWritten)
}

func (l *Log) rollLocked(index uint64, offset int64) error {
	// Sealing fsyncs frames, so the terms they carry must be durable first.
	if err := l.syncEpochs(); err != nil {
		return err
	}
	old := l.active()
	if err := old.seal(); err != nil {
		return fmt.Errorf("log %s: seal segment: %w", l.opts.Dir, err)
	}
	s, err := createSegment(l.opts.Dir, index, offset)
	if err != nil {
		return err
	}
	l.segs = append(l.segs, s)
	l.inherited.Store(false) // the old active segment is sealed (fsynced)
	if err := l.at(pointRollCreated); err != nil {
		return err
	}
	return syncDir(l.opts.Dir)
}

// Sync makes everything appended so far durable. Concurrent calls are
// safe: one that finds another in its fsync waits for it, so every Sync
// returns only once what was appended before it is on stable storage.
func (l *Log) Sync() error {
	// The flag is cleared before the fsync (an Append during the fsync sets
	// it again), so without syncMu a second Sync would see it clear and
	// return while the first is still writing.
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if !l.unsynced.Swap(false) {
		return nil
	}
	err := l.syncNow()
	if err != nil {
		l.unsynced.Store(true)
	}
	return err
}

// syncNow fsyncs the term history, then the active segment. Callers hold
// syncMu.
func (l *Log) syncNow() error {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return ErrClosed
	}
	s := l.active()
	s.acquire()
	epochs := l.dirtyEp || l.epUnsynced
	l.mu.RUnlock()
	defer s.release()
	if epochs {
		// Rare (a new term or a rewrite): only then does Sync block
		// readers.
		l.mu.Lock()
		err := ErrClosed
		if !l.closed {
			err = l.syncEpochs()
		}
		l.mu.Unlock()
		if err != nil {
			return err
		}
	}
	// The segment fsync runs without the lock, so fetches and appends
	// go on during it.
	if err := l.at(pointSync); err != nil {
		return fmt.Errorf("log %s: fsync: %w", l.opts.Dir, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("log %s: fsync: %w", l.opts.Dir, err)
	}
	l.mu.RLock()
	if len(l.segs) > 0 && l.active() == s {
		l.inherited.Store(false)
	}
	l.mu.RUnlock()
	return nil
}
