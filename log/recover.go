package log

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// CorruptionError is returned by Open when a log is damaged in a way it
// must not repair by itself: cutting the damage off would drop entries
// that may have been fsynced and acknowledged (and Raft counts on them).
// The operator action is in the package documentation ("Damage").
type CorruptionError struct {
	Dir     string
	Segment string // file name of the damaged segment
	Pos     int64  // byte where the damage starts
	After   uint64 // last intact entry before the damage
	// Next is the first intact entry found after the damage, at byte
	// NextPos; 0 for a damaged sealed segment with nothing intact after.
	Next    uint64
	NextPos int64
	Reason  string
}

func (e *CorruptionError) Error() string {
	what := "a sealed segment is damaged"
	if e.Next != 0 {
		what = fmt.Sprintf("intact entry %d follows at byte %d, so this is not a torn write", e.Next, e.NextPos)
	}
	return fmt.Sprintf("log %s: segment %s is corrupt at byte %d after entry %d (%s): %s; "+
		"refusing to open, cutting it off would drop entries that may have been acknowledged. "+
		"Stop the node and keep a copy of the directory; if the partition's other replicas are healthy, "+
		"cut this segment at byte %d (truncate -s %d %s) and remove the segments after it, "+
		"and this replica fetches the rest from the leader",
		e.Dir, e.Segment, e.Pos, e.After, e.Reason, what, e.Pos, e.Pos, filepath.Join(e.Dir, e.Segment))
}

// Unwrap makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// tail is what loading a segment found at its end.
type tail struct {
	end, fileSize int64 // valid bytes, bytes in the file
	modTime       time.Time
}

func (l *Log) loadSegments() error {
	bases, err := l.segmentBases()
	if err != nil {
		return err
	}
	fromFile := len(l.epochs)
	var tails []tail
	for i, b := range bases {
		known := len(l.epochs)
		s, t, err := l.loadSegment(b)
		if err != nil {
			return err
		}
		if len(l.segs) == 0 && !s.empty() && s.lastIndex <= l.base.index {
			// Wholly before the base: left by a Reset whose unlinks a
			// crash lost after the new base was written.
			s.close()
			l.epochs = l.epochs[:known]
			if err := l.removeFiles(b); err != nil {
				return err
			}
			if err := syncDir(l.opts.Dir); err != nil {
				return err
			}
			continue
		}
		if len(l.segs) == 0 && b > l.base.index+1 {
			s.close()
			return &CorruptionError{Dir: l.opts.Dir, Segment: filepath.Base(s.f.Name()), After: l.base.index,
				Reason: fmt.Sprintf("the first segment starts at entry %d, the log at %d: segments are missing", b, l.base.index+1)}
		}
		if len(l.segs) > 0 && !l.follows(s) {
			s.close()
			l.epochs = l.epochs[:known] // terms seen only in the stale segment
			if err := l.moveAsideStale(bases[i:]); err != nil {
				return err
			}
			break
		}
		if i < len(bases)-1 && t.end < t.fileSize {
			// A sealed segment was fsynced whole when it rolled; later
			// segments cannot be trusted to continue a damaged one.
			s.close()
			return &CorruptionError{Dir: l.opts.Dir, Segment: filepath.Base(s.f.Name()), Pos: t.end, After: s.lastIndex,
				Reason: "a sealed segment has a bad frame"}
		}
		l.segs = append(l.segs, s)
		tails = append(tails, t)
	}
	if len(l.segs) == 0 {
		return l.startEmpty(fromFile)
	}
	s, t := l.active(), tails[len(tails)-1]
	if t.end < t.fileSize {
		if err := l.cutTail(s, t); err != nil {
			return err
		}
	}
	if err := l.activate(s, t); err != nil {
		return err
	}
	return l.settleEpochs(fromFile)
}

// segmentBases lists the segments in the directory in order, removing
// those wholly at or before the base: retention moves the base before it
// deletes them, so a crash can leave them behind.
func (l *Log) segmentBases() ([]uint64, error) {
	names, err := filepath.Glob(filepath.Join(l.opts.Dir, "*.log"))
	if err != nil {
		return nil, err
	}
	var bases []uint64
	for _, n := range names {
		b, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), ".log"), 10, 64)
		if err != nil {
			continue
		}
		bases = append(bases, b)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	removed := false
	for len(bases) > 1 && bases[1] <= l.base.index+1 {
		if err := l.removeFiles(bases[0]); err != nil {
			return nil, err
		}
		bases = bases[1:]
		removed = true
	}
	if removed {
		if err := syncDir(l.opts.Dir); err != nil {
			return nil, err
		}
	}
	return bases, nil
}

// follows reports whether s continues the segments loaded so far. Rolls
// and Reset only ever create a segment at the next index, so one that does
// not can only be left over from a truncation whose unlink did not reach
// the disk before a power cut.
func (l *Log) follows(s *segment) bool {
	prev := l.active()
	want := prev.lastIndex + 1
	if prev.empty() {
		want = prev.baseIndex
	}
	return s.baseIndex == want && (s.empty() || s.baseOffset == prev.nextOffset)
}

// moveAsideStale renames the files of stale segments to *.stale, so they
// are neither loaded nor lost, and logs what it did.
func (l *Log) moveAsideStale(bases []uint64) error {
	prev := l.active()
	for _, b := range bases {
		l.opts.Logger.Warn("moving aside a stale log segment left over from a truncation",
			"dir", l.opts.Dir, "segment", filepath.Base(segmentName(l.opts.Dir, b, ".log")),
			"previous_last_index", prev.lastIndex, "renamed_to", "*.stale")
		for _, ext := range []string{".log", ".index", ".timeindex"} {
			p := segmentName(l.opts.Dir, b, ext)
			if err := os.Rename(p, p+".stale"); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	return syncDir(l.opts.Dir)
}

// startEmpty creates the first segment of a log with no segment files.
func (l *Log) startEmpty(fromFile int) error {
	s, err := createSegment(l.opts.Dir, l.base.index+1, l.base.offset)
	if err != nil {
		return err
	}
	l.segs = append(l.segs, s)
	if err := syncDir(l.opts.Dir); err != nil {
		return err
	}
	return l.settleEpochs(fromFile)
}

// settleEpochs drops terms that start past the recovered end and writes
// the file if the tail scan found terms it did not have yet.
func (l *Log) settleEpochs(fromFile int) error {
	last := l.lastIndexLocked()
	for len(l.epochs) > 0 && l.epochs[len(l.epochs)-1].index > last {
		l.epochs = l.epochs[:len(l.epochs)-1]
		l.dirtyEp = true
	}
	if l.dirtyEp || len(l.epochs) != fromFile {
		return l.writeEpochs()
	}
	return nil
}

func (l *Log) removeFiles(base uint64) error {
	var errs []error
	for _, ext := range []string{".log", ".index", ".timeindex"} {
		if err := os.Remove(segmentName(l.opts.Dir, base, ext)); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loadSegment opens an existing segment and rebuilds its state from its
// index files and a scan of its tail. It changes no file: what to do with
// a damaged tail is decided once the segment's place in the log is known.
func (l *Log) loadSegment(base uint64) (*segment, tail, error) {
	s := &segment{dir: l.opts.Dir, baseIndex: base, maxTs: -1}
	var t tail
	var err error
	if s.f, err = os.OpenFile(segmentName(l.opts.Dir, base, ".log"), os.O_RDWR, filePerm); err != nil {
		return nil, t, err
	}
	s.refs.Store(1)
	st, err := s.f.Stat()
	if err == nil {
		t.fileSize, t.modTime = st.Size(), st.ModTime()
		s.index, err = loadIndexFile(segmentName(l.opts.Dir, base, ".index"))
	}
	if err == nil {
		s.times, err = loadTimeFile(segmentName(l.opts.Dir, base, ".timeindex"))
	}
	if err == nil {
		t.end, err = l.scanTail(s, t.fileSize)
	}
	if err != nil {
		s.close()
		return nil, t, err
	}
	s.size = t.end
	s.created = time.Now() // for SegmentAge, should this one become active
	if t.modTime.Before(s.created) {
		s.created = t.modTime
	}
	if s.lastIndex == 0 {
		// Empty segment: offsets continue from the previous segment.
		s.baseOffset = l.nextOffsetLocked()
		s.nextOffset = s.baseOffset
		s.index, s.times = nil, nil
	}
	return s, t, nil
}

// scanTail walks from the last index record to the end of the file: this
// rebuilds the state of the last frames and finds a torn or corrupt tail.
// If the frame at that record is itself bad, it falls back to the record
// before it. It returns the end of the last frame that continues the log.
func (l *Log) scanTail(s *segment, fileSize int64) (int64, error) {
	for {
		for len(s.index) > 0 && int64(s.index[len(s.index)-1].pos) >= fileSize {
			s.index = s.index[:len(s.index)-1]
		}
		scanFrom := int64(0)
		if len(s.index) > 0 {
			scanFrom = int64(s.index[len(s.index)-1].pos)
		}
		for len(s.times) > 0 && (len(s.index) == 0 || s.times[len(s.times)-1].offset > s.index[len(s.index)-1].offset) {
			s.times = s.times[:len(s.times)-1]
		}
		s.maxTs = -1
		if len(s.times) > 0 {
			s.maxTs = s.times[len(s.times)-1].ts
		}
		end, err := s.scan(scanFrom, fileSize, l.rebuildFrom(s))
		if err != nil {
			return 0, err
		}
		if end == scanFrom && len(s.index) > 0 {
			s.index = s.index[:len(s.index)-1]
			continue
		}
		return end, nil
	}
}

// rebuildFrom returns the scan callback that notes each frame from the
// last index record on, and stops at one that does not continue the log.
func (l *Log) rebuildFrom(s *segment) func(h *frameHeader, pos int64, frame []byte) bool {
	first := len(s.index) > 0
	wantIndex, wantOffset := s.baseIndex, l.nextOffsetLocked()
	if first {
		wantIndex, wantOffset = s.index[len(s.index)-1].index, s.index[len(s.index)-1].offset
	}
	return func(h *frameHeader, pos int64, _ []byte) bool {
		e := Entry{Index: h.index, Term: h.term, Kind: h.kind, BaseOffset: h.baseOffset, Count: h.count, MaxTimestamp: h.maxTimestamp}
		// A frame that does not continue the log (index or offset out
		// of sequence) is as bad as a torn one.
		if e.Index != wantIndex || e.BaseOffset != wantOffset {
			return false
		}
		wantIndex, wantOffset = e.Index+1, e.EndOffset()
		if first {
			// The frame at the last index record is indexed already.
			first = false
			s.lastIndex = e.Index
			s.nextOffset = e.EndOffset()
			s.baseOffset = s.index[0].offset
			s.size = pos + h.size()
			s.sinceIndex = h.size()
			s.sinceTime = h.size()
			if e.MaxTimestamp > s.maxTs {
				s.maxTs = e.MaxTimestamp
			}
		} else {
			s.noteFrame(&e, pos, h.size(), l.opts.IndexInterval)
		}
		if e.Term > l.lastTermLocked() {
			l.noteTerm(e.Term, e.Index, e.BaseOffset)
		}
		return true
	}
}

// cutTail decides about the bytes after the last good frame of the active
// segment. With nothing intact after them they are a torn tail, and so
// they are when they hold a zeroed sector: a write that a power cut tore,
// whose later pages reached the disk and earlier ones did not (the frames
// after such a tear were never fsynced: an fsync would have written the
// whole write). Either way they are cut. A bad frame followed by intact
// frames is real damage to data that may have been acknowledged: Open
// refuses with a CorruptionError.
func (l *Log) cutTail(s *segment, t tail) error {
	after := s.lastIndex
	if s.empty() {
		after = s.baseIndex - 1
	}
	next, nextPos, found, err := s.findFrameAfter(t.end, t.fileSize, after)
	if err != nil {
		return err
	}
	name := filepath.Base(s.f.Name())
	if found {
		zeroed, err := s.hasZeroSector(t.end, nextPos)
		if err != nil {
			return err
		}
		if !zeroed {
			return &CorruptionError{Dir: l.opts.Dir, Segment: name, Pos: t.end, After: after, Next: next, NextPos: nextPos,
				Reason: "a bad frame in the middle of the active segment"}
		}
		l.opts.Logger.Warn("torn write: frames after a zeroed sector were never fsynced, cutting them",
			"dir", l.opts.Dir, "segment", name, "torn_at", t.end, "first_dropped_intact_index", next)
	}
	l.opts.Logger.Warn("truncating torn or corrupt log tail",
		"dir", l.opts.Dir, "segment", name, "valid_bytes", t.end, "dropped_bytes", t.fileSize-t.end)
	if err := s.f.Truncate(t.end); err != nil {
		return err
	}
	return s.f.Sync()
}

// activate readies the last segment for appends: its index files are
// rewritten to exactly the in-memory records so appends continue them.
func (l *Log) activate(s *segment, t tail) error {
	var err error
	if s.idxF, err = os.OpenFile(segmentName(l.opts.Dir, s.baseIndex, ".index"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, filePerm); err != nil {
		return err
	}
	if s.timF, err = os.OpenFile(segmentName(l.opts.Dir, s.baseIndex, ".timeindex"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, filePerm); err != nil {
		return err
	}
	s.pendingIndex = s.pendingIndex[:0]
	for _, r := range s.index {
		s.pendingIndex = appendIndexRecord(s.pendingIndex, r)
	}
	s.pendingTime = s.pendingTime[:0]
	for _, r := range s.times {
		s.pendingTime = appendTimeRecord(s.pendingTime, r)
	}
	if err := s.flushIndexes(); err != nil {
		return err
	}
	_, err = s.f.Seek(t.end, io.SeekStart)
	return err
}
