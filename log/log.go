package log

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Log.
type Options struct {
	Dir string
	// SegmentBytes rolls the active segment before it grows past this size.
	SegmentBytes int64
	// SegmentAge rolls the active segment once its first frame is this old
	// (Kafka's segment.ms); 0 disables.
	SegmentAge time.Duration
	// IndexInterval is the number of bytes between sparse index records.
	IndexInterval int64
	Logger        *slog.Logger
}

func (o *Options) defaults() {
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 128 << 20
	}
	if o.IndexInterval <= 0 {
		o.IndexInterval = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// epoch is one line of the term history.
type epoch struct {
	term   uint64
	index  uint64 // first index of the term
	offset int64  // first offset of the term
}

// Log is a segmented, indexed log of Raft entries. Append, Truncate, Sync and
// Reset must be called from one goroutine at a time (the replica's); reads
// may come from any goroutine.
type Log struct {
	opts Options

	mu         sync.RWMutex
	segs       []*segment // ordered by baseIndex; last is active
	base       epoch      // the point before the first entry
	epochs     []epoch    // term history after base, ascending
	dirtyEp    bool       // epochs changed in a way that needs a rewrite
	epF        *os.File   // epochs file open for appends
	epUnsynced bool       // epochs appended since the last Sync
	// unsynced is set by Append and cleared by Sync, so periodic syncs of
	// idle logs cost nothing.
	unsynced atomic.Bool
	closed   bool
	frameBuf []byte
	hdrBuf   []byte
}

// Open opens or creates the log in opts.Dir and recovers its tail.
func Open(opts Options) (*Log, error) {
	opts.defaults()
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	l := &Log{opts: opts, hdrBuf: make([]byte, frameHeaderSize)}
	if err := l.loadEpochs(); err != nil {
		return nil, err
	}
	if err := l.loadSegments(); err != nil {
		l.closeFiles()
		return nil, err
	}
	return l, nil
}

func (l *Log) epochsPath() string { return filepath.Join(l.opts.Dir, "epochs") }

func (l *Log) loadEpochs() error {
	b, err := os.ReadFile(l.epochsPath())
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 || lines[0] != "chronik-epochs 1" {
		return fmt.Errorf("log %s: bad epochs file", l.opts.Dir)
	}
	parse := func(line string) (epoch, error) {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "base" {
			f = f[1:]
			// base lines are "base index term offset"
			idx, e1 := strconv.ParseUint(f[0], 10, 64)
			term, e2 := strconv.ParseUint(f[1], 10, 64)
			off, e3 := strconv.ParseInt(f[2], 10, 64)
			return epoch{term: term, index: idx, offset: off}, errors.Join(e1, e2, e3)
		}
		if len(f) != 3 {
			return epoch{}, fmt.Errorf("log %s: bad epochs line %q", l.opts.Dir, line)
		}
		term, e1 := strconv.ParseUint(f[0], 10, 64)
		idx, e2 := strconv.ParseUint(f[1], 10, 64)
		off, e3 := strconv.ParseInt(f[2], 10, 64)
		return epoch{term: term, index: idx, offset: off}, errors.Join(e1, e2, e3)
	}
	if l.base, err = parse(lines[1]); err != nil {
		return err
	}
	for i, line := range lines[2:] {
		e, err := parse(line)
		if err != nil {
			if i == len(lines)-3 {
				// A torn last line from a crash mid-append: the tail scan
				// recovers that term from the frames.
				l.dirtyEp = true
				break
			}
			return err
		}
		l.epochs = append(l.epochs, e)
	}
	return nil
}

// writeEpochs replaces the epochs file atomically.
func (l *Log) writeEpochs() error {
	var sb strings.Builder
	sb.WriteString("chronik-epochs 1\n")
	fmt.Fprintf(&sb, "base %d %d %d\n", l.base.index, l.base.term, l.base.offset)
	for _, e := range l.epochs {
		fmt.Fprintf(&sb, "%d %d %d\n", e.term, e.index, e.offset)
	}
	if l.epF != nil {
		l.epF.Close()
		l.epF = nil
	}
	if err := writeFileSync(l.epochsPath(), []byte(sb.String())); err != nil {
		return err
	}
	l.dirtyEp = false
	l.epUnsynced = false
	return nil
}

// appendEpochs adds epochs noted by Append to the end of the epochs file.
// A new term is rare but happens on every leader change, so this is one
// small write rather than a rewrite with two fsyncs; Sync makes it durable,
// before the segment, so no synced frame ever has an unrecorded term.
func (l *Log) appendEpochs(from int) error {
	if l.epF == nil {
		if _, err := os.Stat(l.epochsPath()); err != nil {
			return l.writeEpochs()
		}
		f, err := os.OpenFile(l.epochsPath(), os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		l.epF = f
	}
	var sb strings.Builder
	for _, e := range l.epochs[from:] {
		fmt.Fprintf(&sb, "%d %d %d\n", e.term, e.index, e.offset)
	}
	if _, err := l.epF.WriteString(sb.String()); err != nil {
		return fmt.Errorf("log %s: epochs: %w", l.opts.Dir, err)
	}
	l.epUnsynced = true
	return nil
}

// writeFileSync writes path through a temporary file, fsyncs it, renames it
// into place and fsyncs the directory.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFileSync is writeFileSync for other packages keeping small state files.
func WriteFileSync(path string, data []byte) error { return writeFileSync(path, data) }

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

func (l *Log) active() *segment { return l.segs[len(l.segs)-1] }

func (l *Log) lastIndexLocked() uint64 {
	for i := len(l.segs) - 1; i >= 0; i-- {
		if !l.segs[i].empty() {
			return l.segs[i].lastIndex
		}
	}
	return l.base.index
}

func (l *Log) nextOffsetLocked() int64 {
	for i := len(l.segs) - 1; i >= 0; i-- {
		if !l.segs[i].empty() {
			return l.segs[i].nextOffset
		}
	}
	return l.base.offset
}

func (l *Log) lastTermLocked() uint64 {
	if len(l.epochs) > 0 {
		return l.epochs[len(l.epochs)-1].term
	}
	return l.base.term
}

func (l *Log) noteTerm(term, index uint64, offset int64) {
	l.epochs = append(l.epochs, epoch{term: term, index: index, offset: offset})
}

// FirstIndex is the index of the first entry still stored.
func (l *Log) FirstIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.base.index + 1
}

// LastIndex is the index of the last entry (the base index when empty).
func (l *Log) LastIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lastIndexLocked()
}

// Base returns the index, term and end offset of the point before the first
// stored entry.
func (l *Log) Base() (index, term uint64, offset int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.base.index, l.base.term, l.base.offset
}

// StartOffset is the first Kafka offset still stored (Kafka's log start offset).
func (l *Log) StartOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.base.offset
}

// NextOffset is the offset the next record will get (Kafka's log end offset,
// committed or not).
func (l *Log) NextOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.nextOffsetLocked()
}

// Term returns the term of entry i, for i in [FirstIndex()-1, LastIndex()].
func (l *Log) Term(i uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i == l.base.index {
		return l.base.term, nil
	}
	if i < l.base.index {
		return 0, ErrCompacted
	}
	if i > l.lastIndexLocked() {
		return 0, ErrUnavailable
	}
	n := sort.Search(len(l.epochs), func(k int) bool { return l.epochs[k].index > i })
	if n == 0 {
		return l.base.term, nil
	}
	return l.epochs[n-1].term, nil
}

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
	pos := s.posForIndex(index)
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
	s.index = s.index[:n]
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
		s.times = s.times[:m]
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

// trimEpochs forgets terms that start after index.
func (l *Log) trimEpochs(index uint64) error {
	for len(l.epochs) > 0 && l.epochs[len(l.epochs)-1].index > index {
		l.epochs = l.epochs[:len(l.epochs)-1]
		l.dirtyEp = true
	}
	if l.dirtyEp {
		return l.writeEpochs()
	}
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
		pos := s.posForIndex(lo)
		_, err := s.scan(pos, s.size, func(h *frameHeader, _ int64, frame []byte) bool {
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
func (l *Log) segsFrom(from func(*segment) bool) []*segment {
	i := sort.Search(len(l.segs), func(k int) bool { return from(l.segs[k]) })
	out := make([]*segment, 0, len(l.segs)-i)
	for _, s := range l.segs[i:] {
		s.acquire()
		out = append(out, s)
	}
	return out
}

func releaseAll(segs []*segment) {
	for _, s := range segs {
		s.release()
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
		pos := s.posForOffset(offset)
		full := false
		_, err := s.scan(pos, s.size, func(h *frameHeader, _ int64, frame []byte) bool {
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
			pos = s.posForOffset(s.times[n-1].offset)
		}
		_, err := s.scan(pos, s.size, func(h *frameHeader, _ int64, frame []byte) bool {
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
	want := best.maxTs
	l.mu.RUnlock()
	defer best.release()
	_, err = best.scan(0, best.size, func(h *frameHeader, _ int64, _ []byte) bool {
		if h.kind == KindBatch && h.maxTimestamp == want {
			ts, offset, ok = h.maxTimestamp, h.baseOffset, true
			return false
		}
		return true
	})
	return ts, offset, ok, err
}

// EpochEndOffset answers Kafka's OffsetForLeaderEpoch: the largest epoch at
// or below the requested one and the offset where it ended (the start of the
// next epoch, or end for the latest). found is false when the requested
// epoch is older than anything the log remembers.
func (l *Log) EpochEndOffset(e uint64, end int64) (epochOut uint64, endOffset int64, found bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := sort.Search(len(l.epochs), func(k int) bool { return l.epochs[k].term > e })
	if n == 0 {
		if e >= l.base.term && l.base.index > 0 {
			// The epoch ended somewhere in compacted history.
			if len(l.epochs) > 0 {
				return l.base.term, l.epochs[0].offset, true
			}
			return l.base.term, end, true
		}
		return 0, 0, false
	}
	if n == len(l.epochs) {
		return l.epochs[n-1].term, end, true
	}
	return l.epochs[n-1].term, l.epochs[n].offset, true
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
	l.mu.RUnlock()
	defer s.release()
	var end int64 = -1
	_, err := s.scan(s.posForIndex(index), s.size, func(h *frameHeader, _ int64, _ []byte) bool {
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

// Retention says which leading segments may be deleted.
type Retention struct {
	MaxIndex uint64        // never delete an entry after this index (the applied index)
	Bytes    int64         // keep the log at most this big; <0 means no limit
	Age      time.Duration // delete segments whose newest record is older; <=0 means no limit
	// Before deletes segments whose entries all come before this index,
	// regardless of size and age (state-machine snapshots); 0 means none.
	Before uint64
}

// Retain deletes leading sealed segments that the policy allows and moves
// the base forward. It returns the number of segments deleted.
func (l *Log) Retain(r Retention, now time.Time) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	deleted := 0
	for len(l.segs) > 1 {
		s := l.segs[0]
		if s.empty() || s.lastIndex > r.MaxIndex {
			break
		}
		byBytes := r.Bytes >= 0 && total > r.Bytes
		byAge := r.Age > 0 && s.maxTs >= 0 && now.Sub(time.UnixMilli(s.maxTs)) > r.Age
		byIndex := r.Before > 0 && s.lastIndex < r.Before
		if !byBytes && !byAge && !byIndex {
			break
		}
		term, err := l.termLocked(s.lastIndex)
		if err != nil {
			return deleted, err
		}
		l.base = epoch{term: term, index: s.lastIndex, offset: s.nextOffset}
		// Epochs that began at or before the base are remembered by the
		// base itself: Term answers base.term until the next epoch starts.
		for len(l.epochs) > 0 && l.epochs[0].index <= l.base.index {
			l.epochs = l.epochs[1:]
		}
		if err := l.writeEpochs(); err != nil {
			return deleted, err
		}
		total -= s.size
		l.segs = l.segs[1:]
		l.dropSegment(s)
		deleted++
	}
	return deleted, nil
}

func (l *Log) termLocked(i uint64) (uint64, error) {
	if i == l.base.index {
		return l.base.term, nil
	}
	n := sort.Search(len(l.epochs), func(k int) bool { return l.epochs[k].index > i })
	if n == 0 {
		return l.base.term, nil
	}
	return l.epochs[n-1].term, nil
}

// Size is the total bytes of all segments.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	return total
}

// Segments is the number of segment files.
func (l *Log) Segments() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.segs)
}

// Close syncs the log and closes its files. It is safe to call twice.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var err error
	if len(l.segs) > 0 {
		s := l.active()
		err = s.flushIndexes()
		if e := s.f.Sync(); e != nil && err == nil {
			err = e
		}
	}
	if l.dirtyEp {
		if e := l.writeEpochs(); e != nil && err == nil {
			err = e
		}
	}
	if l.epF != nil {
		if e := l.epF.Sync(); e != nil && err == nil {
			err = e
		}
		l.epF.Close()
		l.epF = nil
	}
	l.closeFiles()
	return err
}

func (l *Log) closeFiles() {
	for _, s := range l.segs {
		if s.idxF != nil {
			s.idxF.Close()
			s.timF.Close()
		}
		s.removed.Store(true)
		s.release()
	}
}

// Remove closes the log and deletes its directory.
func (l *Log) Remove() error {
	l.Close()
	return os.RemoveAll(l.opts.Dir)
}

// Dir is the directory holding the log.
func (l *Log) Dir() string { return l.opts.Dir }
