package broker

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A stored batch is read back only here (ListOffsets by time). What a
// client sent is hostile: a batch of a few hundred KiB can inflate to
// gigabytes. So records are read as a stream, one record header at a
// time and never a whole value, and the stream stops after
// inflateLimit bytes. Stored batches are at most max.message.bytes (the
// produce path checks), so the limit is at most inflateFactor times that.
const (
	inflateFactor = 64       // a batch may inflate to this many times its size
	inflateFloor  = 1 << 20  // small batches may still inflate to 1 MiB
	inflateCap    = 64 << 20 // and none past this
	// zstdMaxWindow bounds the window a zstd frame may ask the decoder to
	// allocate; producers' default levels use a few MiB at most.
	zstdMaxWindow = 8 << 20
)

// errInflateLimit: the records inflate past inflateLimit.
var errInflateLimit = errors.New("records inflate past the limit")

func inflateLimit(stored int) int64 {
	return min(max(int64(stored)*inflateFactor, inflateFloor), inflateCap)
}

// offsetInBatch finds the first record in a stored batch whose timestamp is
// at least ts (ListOffsets by time). When the records cannot be decoded,
// or inflate past inflateLimit, it answers with the batch's base offset,
// which is never past the right one.
func offsetInBatch(batch []byte, ts int64) (offset int64, timestamp int64) {
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(batch); err != nil {
		return int64(binary.BigEndian.Uint64(batch)), -1
	}
	if rb.Attributes&0x08 != 0 {
		// LogAppendTime: every record has the batch's time.
		return rb.FirstOffset, rb.MaxTimestamp
	}
	raw, closeRaw, err := openRecords(rb.Attributes&0x7, rb.Records, inflateLimit(len(batch)))
	if err != nil {
		return rb.FirstOffset, rb.MaxTimestamp
	}
	defer closeRaw()
	for i := int32(0); i < rb.NumRecords; i++ {
		delta, offsetDelta, err := nextRecord(raw)
		if err != nil {
			break
		}
		if rts := rb.FirstTimestamp + delta; rts >= ts {
			return rb.FirstOffset + int64(offsetDelta), rts
		}
	}
	return rb.FirstOffset, rb.MaxTimestamp
}

// nextRecord reads one record's length, attributes, timestamp delta and
// offset delta, and skips the rest of it (key, value, headers) unread.
func nextRecord(r *bufio.Reader) (timestampDelta int64, offsetDelta int32, err error) {
	length, err := binary.ReadVarint(r)
	if err != nil {
		return 0, 0, err
	}
	if length < 3 { // attributes and two varints at the least
		return 0, 0, errors.New("record too short")
	}
	if _, err := r.ReadByte(); err != nil { // attributes
		return 0, 0, err
	}
	used := int64(1)
	counted := countingByteReader{r: r, n: &used}
	if timestampDelta, err = binary.ReadVarint(counted); err != nil {
		return 0, 0, err
	}
	od, err := binary.ReadVarint(counted)
	if err != nil {
		return 0, 0, err
	}
	if used > length {
		return 0, 0, errors.New("record header longer than the record")
	}
	if _, err := r.Discard(int(min(length-used, inflateCap))); err != nil {
		return 0, 0, err
	}
	return timestampDelta, int32(od), nil
}

type countingByteReader struct {
	r *bufio.Reader
	n *int64
}

func (c countingByteReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		*c.n++
	}
	return b, err
}

// openRecords returns a stream of a batch's records, undoing its codec (0
// none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), that ends with an error after
// limit bytes. The returned function frees the decoder.
func openRecords(codec int16, b []byte, limit int64) (*bufio.Reader, func(), error) {
	var src io.Reader
	done := func() {}
	switch codec {
	case 0:
		src = bytes.NewReader(b)
	case 1:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, nil, err
		}
		src = zr
	case 2:
		out, err := unsnappy(b, limit)
		if err != nil {
			return nil, nil, err
		}
		src = bytes.NewReader(out)
	case 3:
		src = lz4.NewReader(bytes.NewReader(b))
	case 4:
		d, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, nil, err
		}
		src, done = d, d.Close
	default:
		return nil, nil, errors.New("unknown codec")
	}
	return bufio.NewReaderSize(&limitedReader{r: src, left: limit}, 32<<10), done, nil
}

// limitedReader is io.LimitReader that says why it stopped.
type limitedReader struct {
	r    io.Reader
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errInflateLimit
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// xerialMagic starts the framed snappy that Java clients write: the magic,
// then a version and a compatible version (4 bytes each), then chunks,
// each a 4-byte length and a snappy block.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

const xerialHeader = 16

// unsnappy decodes a raw or xerial-framed snappy payload of at most limit
// bytes. Each block states its decoded length up front, so nothing is
// allocated past the limit, and malformed framing is an error.
func unsnappy(b []byte, limit int64) ([]byte, error) {
	if !bytes.HasPrefix(b, xerialMagic) {
		return snappyBlock(nil, b, limit)
	}
	if len(b) < xerialHeader {
		return nil, errors.New("xerial snappy: short header")
	}
	b = b[xerialHeader:]
	var out []byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("xerial snappy: torn chunk length")
		}
		n := int(binary.BigEndian.Uint32(b))
		b = b[4:]
		if n < 0 || n > len(b) {
			return nil, errors.New("xerial snappy: chunk longer than the payload")
		}
		var err error
		if out, err = snappyBlock(out, b[:n], limit-int64(len(out))); err != nil {
			return nil, err
		}
		b = b[n:]
	}
	return out, nil
}

// snappyBlock appends the decoding of one snappy block to out, refusing a
// block that says it decodes to more than limit bytes.
func snappyBlock(out, block []byte, limit int64) ([]byte, error) {
	n, err := s2.DecodedLen(block)
	if err != nil {
		return nil, err
	}
	if int64(n) > limit {
		return nil, errInflateLimit
	}
	dst := make([]byte, n)
	dec, err := s2.Decode(dst, block)
	if err != nil {
		return nil, err
	}
	if out == nil {
		return dec, nil
	}
	return append(out, dec...), nil
}
