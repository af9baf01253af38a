package log

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// Truncate removes every entry after index.
func (l *Log) Truncate(index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.truncateLocked(index)
}

// truncateLocked removes every entry after index. The order is what makes
// it safe across a power cut: later segments are unlinked and the
// directory fsynced first, then the kept segment is cut and fsynced, and
// only then may new frames be written. A crash at any point leaves the old
// log or a prefix of it, never a cut segment followed by a segment from
// before the cut, nor stale frames behind new ones in the cut segment.
func (l *Log) truncateLocked(index uint64) error {
	if index >= l.lastIndexLocked() {
		return nil
	}
	if index < l.base.index {
		return fmt.Errorf("log %s: truncate to %d before base %d", l.opts.Dir, index, l.base.index)
	}
	if err := l.dropAfter(index); err != nil {
		return err
	}
	s := l.active()
	if err := l.reopenIndexes(s); err != nil {
		return err
	}
	if !s.empty() && s.lastIndex <= index {
		return l.trimEpochs(index)
	}
	cut, keep, err := l.findCut(s, index)
	if err != nil {
		return err
	}
	if err := s.f.Truncate(cut); err != nil {
		return fmt.Errorf("log %s: truncate: %w", l.opts.Dir, err)
	}
	// Memory follows the file at once, so a failure below leaves the two
	// agreeing (and the epochs marked for a rewrite).
	l.forgetAfterCut(s, cut, keep)
	l.forgetEpochsAfter(index)
	if err := l.at(pointTruncCut); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("log %s: truncate: fsync: %w", l.opts.Dir, err)
	}
	if err := s.cutIndexFiles(); err != nil {
		return err
	}
	return l.trimEpochs(index)
}

// dropAfter unlinks the segments that start after index, last first, and
// fsyncs the directory so none of them can come back.
func (l *Log) dropAfter(index uint64) error {
	dropped := false
	for len(l.segs) > 1 && l.active().baseIndex > index {
		s := l.active()
		l.segs = l.segs[:len(l.segs)-1]
		if err := l.dropSegment(s); err != nil {
			return err
		}
		dropped = true
	}
	if !dropped {
		return nil
	}
	if err := l.at(pointTruncRemoved); err != nil {
		return err
	}
	if err := syncDir(l.opts.Dir); err != nil {
		return fmt.Errorf("log %s: truncate: fsync directory: %w", l.opts.Dir, err)
	}
	return nil
}

// reopenIndexes opens a sealed segment's index files for appends: the
// segment becomes active again.
func (l *Log) reopenIndexes(s *segment) error {
	if s.idxF != nil {
		return nil
	}
	var err error
	if s.idxF, err = os.OpenFile(segmentName(l.opts.Dir, s.baseIndex, ".index"), os.O_RDWR, filePerm); err != nil {
		return err
	}
	if s.timF, err = os.OpenFile(segmentName(l.opts.Dir, s.baseIndex, ".timeindex"), os.O_RDWR, filePerm); err != nil {
		return err
	}
	if _, err := s.idxF.Seek(0, io.SeekEnd); err != nil {
		return err
	}
	_, err = s.timF.Seek(0, io.SeekEnd)
	return err
}

// kept is the last frame kept by a cut, if any.
type kept struct {
	h   frameHeader
	pos int64
	ok  bool
}

// findCut returns where the frame after index starts in s, and the frame
// before that point.
func (l *Log) findCut(s *segment, index uint64) (int64, kept, error) {
	var k kept
	if index < s.baseIndex {
		return 0, k, nil
	}
	cut := int64(-1)
	_, err := s.scan(posForIndex(s.index, index), s.size, func(h *frameHeader, p int64, _ []byte) bool {
		if h.index > index {
			cut = p
			return false
		}
		k = kept{h: *h, pos: p, ok: true}
		return true
	})
	if err != nil {
		return 0, k, err
	}
	if cut < 0 {
		return 0, k, fmt.Errorf("log %s: truncate: index %d not found", l.opts.Dir, index)
	}
	return cut, k, nil
}

// forgetAfterCut rebuilds the in-memory state of s cut at byte cut.
func (l *Log) forgetAfterCut(s *segment, cut int64, k kept) {
	n := sort.Search(len(s.index), func(i int) bool { return int64(s.index[i].pos) >= cut })
	s.cutIndexes(n, len(s.times))
	s.size = cut
	if !k.ok {
		s.lastIndex = 0
		s.index, s.times = nil, nil
		s.nextOffset = l.nextOffsetBefore(len(l.segs) - 1)
		s.baseOffset = s.nextOffset
		s.maxTs = -1
		return
	}
	s.lastIndex = k.h.index
	s.nextOffset = k.h.baseOffset + int64(k.h.count)
	s.sinceIndex = cut - k.pos
	if len(s.index) > 0 {
		s.sinceIndex = cut - int64(s.index[len(s.index)-1].pos)
	}
	m := sort.Search(len(s.times), func(i int) bool { return s.times[i].offset >= s.nextOffset })
	s.cutIndexes(len(s.index), m)
	s.maxTs = -1
	if m > 0 {
		s.maxTs = s.times[m-1].ts
	}
}

// cutIndexFiles cuts the index files to the in-memory records. They need
// no fsync: recovery checks the active segment's index against its frames.
func (s *segment) cutIndexFiles() error {
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
	return nil
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
// The caller fsyncs the directory.
func (l *Log) dropSegment(s *segment) error {
	if s.idxF != nil {
		s.idxF.Close()
		s.timF.Close()
		s.idxF, s.timF = nil, nil
	}
	err := l.removeFiles(s.baseIndex)
	s.removed.Store(true)
	s.release()
	if err != nil {
		return fmt.Errorf("log %s: remove segment: %w", l.opts.Dir, err)
	}
	return nil
}

// Reset discards every entry and starts the log after (index, term) with
// the next offset at offset. A replica installing a snapshot calls it.
// Segments are unlinked last first, so a crash before the epochs file is
// replaced leaves a prefix of the old log; the rename's directory fsync
// makes the unlinks durable with it.
func (l *Log) Reset(index, term uint64, offset int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	// A failed unlink is reported, but the reset goes on, so the log
	// in memory is whole either way.
	var dropErr error
	for len(l.segs) > 0 {
		s := l.active()
		l.segs = l.segs[:len(l.segs)-1]
		if err := l.dropSegment(s); err != nil && dropErr == nil {
			dropErr = err
		}
	}
	l.base = epoch{term: term, index: index, offset: offset}
	l.epochs = nil
	// The new base is durable before the new segment exists: a crash in
	// between leaves no segment, and Open starts one after the base.
	epErr := l.writeEpochs()
	s, err := createSegment(l.opts.Dir, index+1, offset)
	if err != nil {
		// No segment to append to: later calls get ErrClosed, not a panic.
		l.closed = true
		return errors.Join(epErr, err)
	}
	l.segs = append(l.segs, s)
	if err := syncDir(l.opts.Dir); err != nil {
		return errors.Join(epErr, err)
	}
	return errors.Join(epErr, dropErr)
}
