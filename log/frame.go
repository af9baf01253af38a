package log

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Kind tells what a frame's payload is.
type Kind uint8

const (
	KindNoop         Kind = 0 // Raft entry with no data (a new leader's first entry)
	KindBatch        Kind = 1 // Kafka record batch, magic 2
	KindConfChange   Kind = 2 // raftpb.ConfChange
	KindConfChangeV2 Kind = 3 // raftpb.ConfChangeV2
	KindCommand      Kind = 4 // opaque state-machine command
)

const (
	frameHeaderSize = 45
	// maxFrameSize bounds a frame's length field so a corrupt length cannot
	// make recovery allocate gigabytes.
	maxFrameSize = 1 << 30

	indexRecordSize = 20
	timeRecordSize  = 16
)

// Batch header positions (Kafka record batch v2).
const (
	batchBaseOffset      = 0
	batchLength          = 8
	batchLeaderEpoch     = 12
	batchMagic           = 16
	batchCRC             = 17
	batchAttributes      = 21
	batchLastOffsetDelta = 23
	batchFirstTimestamp  = 27
	batchMaxTimestamp    = 35
	batchProducerID      = 43
	batchProducerEpoch   = 51
	batchBaseSequence    = 53
	batchRecordCount     = 57
	// BatchHeaderSize is the size of a v2 record batch header.
	BatchHeaderSize = 61
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors returned by Log.
var (
	// ErrCompacted: the requested entry was removed by retention or a snapshot.
	ErrCompacted = errors.New("log: entry compacted")
	// ErrUnavailable: the requested entry is past the end of the log.
	ErrUnavailable = errors.New("log: entry unavailable")
	// ErrCorrupt: a frame failed its CRC check when read.
	ErrCorrupt = errors.New("log: corrupt frame")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("log: closed")
	// ErrBadBatch: a KindBatch payload is not a v2 record batch.
	ErrBadBatch = errors.New("log: malformed record batch")
)

// Entry is one Raft entry as the log stores it.
type Entry struct {
	Index uint64
	Term  uint64
	Kind  Kind
	// BaseOffset and Count are assigned by Append: the Kafka offsets
	// [BaseOffset, BaseOffset+Count) belong to this entry.
	BaseOffset   int64
	Count        int32
	MaxTimestamp int64
	Payload      []byte
}

// EndOffset is the offset after the entry's last record.
func (e *Entry) EndOffset() int64 { return e.BaseOffset + int64(e.Count) }

type frameHeader struct {
	length       uint32
	crc          uint32
	index        uint64
	term         uint64
	baseOffset   int64
	count        int32
	maxTimestamp int64
	kind         Kind
}

func (h *frameHeader) size() int64 { return 4 + int64(h.length) }

func (h *frameHeader) payloadLen() int { return int(h.length) - (frameHeaderSize - 4) }

func decodeHeader(b []byte) (h frameHeader, ok bool) {
	if len(b) < frameHeaderSize {
		return h, false
	}
	h.length = binary.BigEndian.Uint32(b[0:])
	h.crc = binary.BigEndian.Uint32(b[4:])
	h.index = binary.BigEndian.Uint64(b[8:])
	h.term = binary.BigEndian.Uint64(b[16:])
	h.baseOffset = int64(binary.BigEndian.Uint64(b[24:]))
	h.count = int32(binary.BigEndian.Uint32(b[32:]))
	h.maxTimestamp = int64(binary.BigEndian.Uint64(b[36:]))
	h.kind = Kind(b[44])
	if h.length < frameHeaderSize-4 || h.length > maxFrameSize || h.count < 0 {
		return h, false
	}
	return h, true
}

func putHeader(b []byte, e *Entry) {
	binary.BigEndian.PutUint32(b[0:], uint32(frameHeaderSize-4+len(e.Payload)))
	binary.BigEndian.PutUint64(b[8:], e.Index)
	binary.BigEndian.PutUint64(b[16:], e.Term)
	binary.BigEndian.PutUint64(b[24:], uint64(e.BaseOffset))
	binary.BigEndian.PutUint32(b[32:], uint32(e.Count))
	binary.BigEndian.PutUint64(b[36:], uint64(e.MaxTimestamp))
	b[44] = byte(e.Kind)
}

// frameCRC computes the CRC of a whole frame held in b (header and payload).
func frameCRC(b []byte) uint32 { return crc32.Checksum(b[8:], castagnoli) }

// BatchInfo is what the log reads from a record batch header.
type BatchInfo struct {
	LastOffsetDelta int32
	FirstTimestamp  int64
	MaxTimestamp    int64
	ProducerID      int64
	ProducerEpoch   int16
	BaseSequence    int32
	NumRecords      int32
	Attributes      int16
}

// ParseBatch reads the header of a Kafka v2 record batch and checks that its
// length field matches b. It does not verify the CRC (see BatchCRCValid).
func ParseBatch(b []byte) (BatchInfo, error) {
	var bi BatchInfo
	if len(b) < BatchHeaderSize || b[batchMagic] != 2 {
		return bi, ErrBadBatch
	}
	if int(int32(binary.BigEndian.Uint32(b[batchLength:])))+12 != len(b) {
		return bi, ErrBadBatch
	}
	bi.Attributes = int16(binary.BigEndian.Uint16(b[batchAttributes:]))
	bi.LastOffsetDelta = int32(binary.BigEndian.Uint32(b[batchLastOffsetDelta:]))
	bi.FirstTimestamp = int64(binary.BigEndian.Uint64(b[batchFirstTimestamp:]))
	bi.MaxTimestamp = int64(binary.BigEndian.Uint64(b[batchMaxTimestamp:]))
	bi.ProducerID = int64(binary.BigEndian.Uint64(b[batchProducerID:]))
	bi.ProducerEpoch = int16(binary.BigEndian.Uint16(b[batchProducerEpoch:]))
	bi.BaseSequence = int32(binary.BigEndian.Uint32(b[batchBaseSequence:]))
	bi.NumRecords = int32(binary.BigEndian.Uint32(b[batchRecordCount:]))
	if bi.LastOffsetDelta < 0 || bi.NumRecords < 0 {
		return bi, ErrBadBatch
	}
	return bi, nil
}

// BatchCRCValid reports whether a record batch's CRC-32C matches its contents.
func BatchCRCValid(b []byte) bool {
	if len(b) < BatchHeaderSize {
		return false
	}
	want := binary.BigEndian.Uint32(b[batchCRC:])
	return crc32.Checksum(b[batchAttributes:], castagnoli) == want
}

// SetBatchLogAppendTime marks a batch as LogAppendTime with the given time,
// as a broker must for topics with message.timestamp.type=LogAppendTime, and
// recomputes its CRC. It changes b in place.
func SetBatchLogAppendTime(b []byte, ts int64) {
	attrs := binary.BigEndian.Uint16(b[batchAttributes:]) | 0x08
	binary.BigEndian.PutUint16(b[batchAttributes:], attrs)
	binary.BigEndian.PutUint64(b[batchMaxTimestamp:], uint64(ts))
	binary.BigEndian.PutUint32(b[batchCRC:], crc32.Checksum(b[batchAttributes:], castagnoli))
}
