package log

import (
	"bytes"
	"io"
)

// findFrameAfter looks for an intact frame in [from, limit) at any byte
// position, with an index after the given one, as recovery must when a
// frame is bad: are there good frames behind it? It returns the first
// one's index and position. Only a plausible header (an index that could
// fit in the bytes left) has its CRC checked, so the cost is a pass over
// the bytes.
func (s *segment) findFrameAfter(from, limit int64, after uint64) (index uint64, pos int64, found bool, err error) {
	maxFrames := uint64((limit-from)/frameHeaderSize) + 1
	bp := scanBufs.Get().(*[]byte)
	defer scanBufs.Put(bp)
	buf := *bp
	var frame []byte
	for p := from; limit-p >= frameHeaderSize; {
		n := min(int64(len(buf)), limit-p)
		got, err := s.f.ReadAt(buf[:n], p)
		if err != nil && err != io.EOF {
			return 0, 0, false, err
		}
		b := buf[:got]
		if len(b) < frameHeaderSize {
			break
		}
		for i := 0; i+frameHeaderSize <= len(b); i++ {
			h, ok := decodeHeader(b[i:])
			if !ok || h.index <= after || h.index-after > maxFrames || p+int64(i)+h.size() > limit {
				continue
			}
			if int64(len(frame)) < h.size() {
				frame = make([]byte, h.size())
			}
			f := frame[:h.size()]
			if _, err := s.f.ReadAt(f, p+int64(i)); err != nil {
				return 0, 0, false, err
			}
			if frameCRC(f) == h.crc {
				return h.index, p + int64(i), true, nil
			}
		}
		p += int64(len(b) - frameHeaderSize + 1)
	}
	return 0, 0, false, nil
}

// sectorSize is the unit a disk writes whole (or not at all).
const sectorSize = 512

// hasZeroSector reports whether [from, to) is all zeros or holds a
// sector-aligned run of sectorSize zero bytes: the mark of a write whose
// pages did not all reach the disk before a power cut. Bit rot and
// misdirected writes leave other bytes.
func (s *segment) hasZeroSector(from, to int64) (bool, error) {
	if to <= from {
		return false, nil
	}
	var zeros [sectorSize]byte
	b := make([]byte, min(to-from, scanChunk))
	allZero := true
	for p := from; p < to; {
		n := min(int64(len(b)), to-p)
		if p+n < to && (p+n)%sectorSize != 0 && n > sectorSize {
			n -= (p + n) % sectorSize // end chunks on a sector boundary
		}
		if _, err := s.f.ReadAt(b[:n], p); err != nil {
			return false, err
		}
		chunk := b[:n]
		allZero = allZero && bytes.Count(chunk, zeros[:1]) == len(chunk)
		// Sectors wholly inside this chunk, at file offsets that are
		// multiples of sectorSize.
		first := (p + sectorSize - 1) / sectorSize * sectorSize
		for sec := first; sec+sectorSize <= p+n; sec += sectorSize {
			if bytes.Equal(chunk[sec-p:sec-p+sectorSize], zeros[:]) {
				return true, nil
			}
		}
		p += n
	}
	return allZero, nil
}
