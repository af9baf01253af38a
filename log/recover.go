package log

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func (l *Log) loadSegments() error {
	names, err := filepath.Glob(filepath.Join(l.opts.Dir, "*.log"))
	if err != nil {
		return err
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
	fromFile := len(l.epochs)
	// Segments wholly at or before the base were compacted away; a crash
	// can leave them behind.
	for len(bases) > 0 && len(bases) > 1 && bases[1] <= l.base.index+1 {
		l.removeFiles(bases[0])
		bases = bases[1:]
	}
	for i, b := range bases {
		last := i == len(bases)-1
		s, err := l.openSegment(b, last)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, s)
	}
	if len(l.segs) == 0 {
		s, err := createSegment(l.opts.Dir, l.base.index+1, l.base.offset)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, s)
		if err := syncDir(l.opts.Dir); err != nil {
			return err
		}
	}
	// Drop epochs that start past the recovered end; add any term the tail
	// scan found that the file did not have yet.
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

func (l *Log) removeFiles(base uint64) {
	for _, ext := range []string{".log", ".index", ".timeindex"} {
		os.Remove(segmentName(l.opts.Dir, base, ext))
	}
}

// openSegment opens an existing segment. Sealed segments trust their index
// files; the active one is validated from its last good index record on.
func (l *Log) openSegment(base uint64, active bool) (*segment, error) {
	s := &segment{dir: l.opts.Dir, baseIndex: base, maxTs: -1}
	var err error
	s.f, err = os.OpenFile(segmentName(l.opts.Dir, base, ".log"), os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	s.refs.Store(1)
	st, err := s.f.Stat()
	if err != nil {
		return nil, err
	}
	fileSize := st.Size()
	if s.index, err = loadIndexFile(segmentName(l.opts.Dir, base, ".index")); err != nil {
		return nil, err
	}
	if s.times, err = loadTimeFile(segmentName(l.opts.Dir, base, ".timeindex")); err != nil {
		return nil, err
	}
	// Walk from the last index record to the end: this rebuilds the state
	// of the last frames and finds a torn or corrupt tail. If the frame at
	// that record is itself bad, fall back to the record before it.
	var end int64
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
		first := len(s.index) > 0
		wantIndex, wantOffset := base, l.nextOffsetLocked()
		if first {
			wantIndex, wantOffset = s.index[len(s.index)-1].index, s.index[len(s.index)-1].offset
		}
		end, err = s.scan(scanFrom, fileSize, func(h *frameHeader, pos int64, frame []byte) bool {
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
		})
		if err != nil {
			return nil, err
		}
		if end == scanFrom && len(s.index) > 0 {
			s.index = s.index[:len(s.index)-1]
			continue
		}
		break
	}
	s.created = time.Now()
	if st.ModTime().Before(s.created) {
		s.created = st.ModTime()
	}
	if s.lastIndex == 0 {
		// Empty segment: offsets continue from the previous segment.
		s.baseOffset = l.nextOffsetLocked()
		s.nextOffset = s.baseOffset
		s.index, s.times = nil, nil
	}
	if end < fileSize {
		l.opts.Logger.Warn("truncating torn or corrupt log tail",
			"dir", l.opts.Dir, "segment", filepath.Base(s.f.Name()),
			"valid_bytes", end, "dropped_bytes", fileSize-end)
		if !active {
			// A sealed segment must be whole; later segments cannot be
			// trusted to continue it.
			return nil, fmt.Errorf("log %s: sealed segment %d is corrupt at byte %d", l.opts.Dir, base, end)
		}
		if err := s.f.Truncate(end); err != nil {
			return nil, err
		}
		if err := s.f.Sync(); err != nil {
			return nil, err
		}
	}
	s.size = end
	if active {
		// Rewrite the index files to exactly the in-memory records so
		// appends continue them cleanly.
		if s.idxF, err = os.OpenFile(segmentName(l.opts.Dir, base, ".index"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644); err != nil {
			return nil, err
		}
		if s.timF, err = os.OpenFile(segmentName(l.opts.Dir, base, ".timeindex"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644); err != nil {
			return nil, err
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
			return nil, err
		}
		if _, err := s.f.Seek(end, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return s, nil
}
