package log

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type indexRecord struct {
	index  uint64
	offset int64
	pos    uint32
}

type timeRecord struct {
	ts     int64
	offset int64
}

// segment is one file of frames plus its in-memory indexes. Fields other
// than refs are guarded by the Log's mutex; readers copy what they need into
// a segView under it and then read the file without it (ReadAt is safe for
// concurrent use and appends never rewrite bytes below a view's size).
type segment struct {
	dir        string
	baseIndex  uint64 // index of the first frame (file name)
	f          *os.File
	idxF, timF *os.File // open for append while the segment is active

	size       int64
	lastIndex  uint64 // 0 when empty
	baseOffset int64  // offset of the first frame
	nextOffset int64  // end offset after the last frame
	maxTs      int64
	created    time.Time // time of the first frame, for SegmentAge

	index        []indexRecord
	times        []timeRecord
	sinceIndex   int64 // bytes written since the last index record
	sinceTime    int64
	pendingIndex []byte // index bytes not yet written to idxF
	pendingTime  []byte

	// staleTail: a failed write may have left bytes past size that could
	// not be cut; the next write cuts them first (see cutStaleTail).
	staleTail bool

	refs    atomic.Int32 // readers holding the file open
	removed atomic.Bool  // unlinked; close when refs drop to zero
}

func segmentName(dir string, base uint64, ext string) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", base, ext))
}

func (s *segment) empty() bool { return s.lastIndex == 0 }

func (s *segment) acquire() { s.refs.Add(1) }

// close closes a segment no reader has seen (one that failed to load).
func (s *segment) close() {
	for _, f := range []*os.File{s.f, s.idxF, s.timF} {
		if f != nil {
			f.Close()
		}
	}
}

func (s *segment) release() {
	if s.refs.Add(-1) == 0 && s.removed.Load() {
		s.f.Close()
	}
}

// createSegment makes a new, empty active segment.
func createSegment(dir string, base uint64, offset int64) (*segment, error) {
	s := &segment{dir: dir, baseIndex: base, baseOffset: offset, nextOffset: offset, maxTs: -1}
	var err error
	if s.f, err = os.OpenFile(segmentName(dir, base, ".log"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, filePerm); err != nil {
		return nil, err
	}
	if s.idxF, err = os.OpenFile(segmentName(dir, base, ".index"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, filePerm); err != nil {
		s.f.Close()
		return nil, err
	}
	if s.timF, err = os.OpenFile(segmentName(dir, base, ".timeindex"), os.O_CREATE|os.O_RDWR|os.O_TRUNC, filePerm); err != nil {
		s.f.Close()
		s.idxF.Close()
		return nil, err
	}
	s.refs.Store(1) // the log's own reference
	return s, nil
}

// noteFrame updates the in-memory state for a frame appended at pos and
// queues index records for the index files.
func (s *segment) noteFrame(e *Entry, pos int64, size int64, interval int64) {
	if s.lastIndex == 0 {
		s.created = time.Now()
		s.baseOffset = e.BaseOffset
	}
	if len(s.index) == 0 || s.sinceIndex >= interval {
		r := indexRecord{index: e.Index, offset: e.BaseOffset, pos: uint32(pos)}
		s.index = append(s.index, r)
		s.pendingIndex = appendIndexRecord(s.pendingIndex, r)
		s.sinceIndex = 0
	}
	if e.MaxTimestamp > s.maxTs {
		if len(s.times) == 0 || s.sinceTime >= interval {
			r := timeRecord{ts: e.MaxTimestamp, offset: e.BaseOffset}
			s.times = append(s.times, r)
			s.pendingTime = appendTimeRecord(s.pendingTime, r)
			s.sinceTime = 0
		}
		s.maxTs = e.MaxTimestamp
	}
	s.sinceIndex += size
	s.sinceTime += size
	s.size = pos + size
	s.lastIndex = e.Index
	s.nextOffset = e.EndOffset()
}

// segState is what Append changes in a segment, for undoing a failed write.
type segState struct {
	size, sinceIndex, sinceTime int64
	lastIndex                   uint64
	baseOffset, nextOffset      int64
	maxTs                       int64
	created                     time.Time
	nIndex, nTimes              int
	nPendingIndex, nPendingTime int
}

func (s *segment) save() segState {
	return segState{size: s.size, sinceIndex: s.sinceIndex, sinceTime: s.sinceTime, lastIndex: s.lastIndex,
		baseOffset: s.baseOffset, nextOffset: s.nextOffset, maxTs: s.maxTs, created: s.created,
		nIndex: len(s.index), nTimes: len(s.times), nPendingIndex: len(s.pendingIndex), nPendingTime: len(s.pendingTime)}
}

// restore undoes the frames noted since st was saved and cuts the file
// back. The disk may be failing; if the cut fails too, the next write
// retries it before writing (see cutStaleTail).
func (s *segment) restore(st segState) {
	s.size, s.sinceIndex, s.sinceTime, s.lastIndex = st.size, st.sinceIndex, st.sinceTime, st.lastIndex
	s.baseOffset, s.nextOffset, s.maxTs, s.created = st.baseOffset, st.nextOffset, st.maxTs, st.created
	s.cutIndexes(st.nIndex, st.nTimes)
	s.pendingIndex, s.pendingTime = s.pendingIndex[:st.nPendingIndex], s.pendingTime[:st.nPendingTime]
	s.staleTail = s.f.Truncate(st.size) != nil
}

// cutStaleTail removes bytes a failed write left past size. Writing new
// frames before them would leave the old ones behind the new tail, where
// recovery would see valid frames after a torn one.
func (s *segment) cutStaleTail() error {
	if !s.staleTail {
		return nil
	}
	if err := s.f.Truncate(s.size); err != nil {
		return err
	}
	s.staleTail = false
	return nil
}

func appendIndexRecord(b []byte, r indexRecord) []byte {
	b = binary.BigEndian.AppendUint64(b, r.index)
	b = binary.BigEndian.AppendUint64(b, uint64(r.offset))
	return binary.BigEndian.AppendUint32(b, r.pos)
}

func appendTimeRecord(b []byte, r timeRecord) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(r.ts))
	return binary.BigEndian.AppendUint64(b, uint64(r.offset))
}

// flushIndexes writes queued index records to the index files (no fsync).
func (s *segment) flushIndexes() error {
	if len(s.pendingIndex) > 0 && s.idxF != nil {
		if _, err := s.idxF.Write(s.pendingIndex); err != nil {
			return err
		}
		s.pendingIndex = s.pendingIndex[:0]
	}
	if len(s.pendingTime) > 0 && s.timF != nil {
		if _, err := s.timF.Write(s.pendingTime); err != nil {
			return err
		}
		s.pendingTime = s.pendingTime[:0]
	}
	return nil
}

// seal flushes and fsyncs the segment and its indexes and closes the index
// files: a sealed segment is trusted as is at the next startup.
func (s *segment) seal() error {
	if err := s.flushIndexes(); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	for _, f := range []*os.File{s.idxF, s.timF} {
		if f == nil {
			continue
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	s.idxF, s.timF = nil, nil
	return nil
}

// segView is a reader's copy of a segment's state, taken under the log's
// read lock, so a fetch never reads fields that Append is changing. The
// index slices share their arrays with the segment without a copy: Append
// only writes elements past every view's length, and every cut (cutIndexes)
// caps the slice, so the next append moves to a new array instead of
// overwriting elements a view may still hold.
type segView struct {
	seg        *segment // for its file, never its other fields
	size       int64
	lastIndex  uint64
	nextOffset int64
	maxTs      int64
	index      []indexRecord
	times      []timeRecord
}

// view copies the state readers need. Callers hold the log's mutex.
func (s *segment) view() segView {
	return segView{seg: s, size: s.size, lastIndex: s.lastIndex, nextOffset: s.nextOffset,
		maxTs: s.maxTs, index: s.index, times: s.times}
}

func (v *segView) empty() bool { return v.lastIndex == 0 }

// scan is segment.scan up to the view's size.
func (v *segView) scan(pos int64, fn func(h *frameHeader, pos int64, frame []byte) bool) (int64, error) {
	return v.seg.scan(pos, v.size, fn)
}

// cutIndexes keeps the first nIndex and nTimes records. The capped slices
// make the next append reallocate (see segView).
func (s *segment) cutIndexes(nIndex, nTimes int) {
	s.index = s.index[:nIndex:nIndex]
	s.times = s.times[:nTimes:nTimes]
}

// posForIndex returns the position of the last index record at or before
// Raft index i.
func posForIndex(index []indexRecord, i uint64) int64 {
	n := sort.Search(len(index), func(k int) bool { return index[k].index > i })
	if n == 0 {
		return 0
	}
	return int64(index[n-1].pos)
}

// posForOffset returns the position of the last index record whose base
// offset is at or before offset.
func posForOffset(index []indexRecord, offset int64) int64 {
	n := sort.Search(len(index), func(k int) bool { return index[k].offset > offset })
	if n == 0 {
		return 0
	}
	return int64(index[n-1].pos)
}

// readHeader reads and decodes the frame header at pos.
func (s *segment) readHeader(pos int64, buf []byte) (frameHeader, error) {
	if _, err := s.f.ReadAt(buf[:frameHeaderSize], pos); err != nil {
		return frameHeader{}, err
	}
	h, ok := decodeHeader(buf)
	if !ok {
		return h, ErrCorrupt
	}
	return h, nil
}

// scan walks frames from pos to limit, calling fn for each frame whose
// length and CRC check out. It stops at the first bad or torn frame and
// returns the position after the last good one. fn may stop the walk by
// returning false, and the returned position is then that frame's start;
// the frame slice is only valid during the call.
func (s *segment) scan(pos, limit int64, fn func(h *frameHeader, pos int64, frame []byte) bool) (int64, error) {
	bp := scanBufs.Get().(*[]byte)
	defer scanBufs.Put(bp)
	buf := *bp
	for limit-pos >= frameHeaderSize {
		n := int64(len(buf))
		if limit-pos < n {
			n = limit - pos
		}
		got, err := s.f.ReadAt(buf[:n], pos)
		if err != nil && err != io.EOF {
			return pos, err
		}
		b := buf[:got]
		off := int64(0)
		grew := false
		for int64(len(b))-off >= frameHeaderSize {
			h, ok := decodeHeader(b[off:])
			if !ok {
				return pos + off, nil
			}
			sz := h.size()
			if pos+off+sz > limit {
				return pos + off, nil // torn: runs past the end of the data
			}
			if off+sz > int64(len(b)) {
				if int64(got) < n {
					// The file ended before the frame did: a torn tail
					// (or in-memory state ahead of a failed write).
					return pos + off, nil
				}
				if off == 0 && sz > int64(len(buf)) {
					buf = make([]byte, sz) // a frame larger than the buffer
					grew = true
				}
				break
			}
			frame := b[off : off+sz]
			if frameCRC(frame) != h.crc {
				return pos + off, nil
			}
			if fn != nil && !fn(&h, pos+off, frame) {
				return pos + off, nil
			}
			off += sz
		}
		if off == 0 && !grew {
			return pos, nil
		}
		pos += off
	}
	return pos, nil
}

// scanBufs recycles scan's read buffers: scans run on every cache miss and
// every fetch, and a fresh megabyte each time costs more than the read.
var scanBufs = sync.Pool{New: func() any { b := make([]byte, scanChunk); return &b }}

const scanChunk = 256 << 10

// loadIndexFile reads an index file into records, dropping a partial tail.
func loadIndexFile(path string) ([]indexRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	recs := make([]indexRecord, 0, len(b)/indexRecordSize)
	for i := 0; i+indexRecordSize <= len(b); i += indexRecordSize {
		recs = append(recs, indexRecord{
			index:  binary.BigEndian.Uint64(b[i:]),
			offset: int64(binary.BigEndian.Uint64(b[i+8:])),
			pos:    binary.BigEndian.Uint32(b[i+16:]),
		})
	}
	return recs, nil
}

func loadTimeFile(path string) ([]timeRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	recs := make([]timeRecord, 0, len(b)/timeRecordSize)
	for i := 0; i+timeRecordSize <= len(b); i += timeRecordSize {
		recs = append(recs, timeRecord{
			ts:     int64(binary.BigEndian.Uint64(b[i:])),
			offset: int64(binary.BigEndian.Uint64(b[i+8:])),
		})
	}
	return recs, nil
}
