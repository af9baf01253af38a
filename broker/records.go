package broker

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// offsetInBatch finds the first record in a stored batch whose timestamp is
// at least ts (ListOffsets by time). When the records cannot be decoded it
// answers with the batch's base offset, which is never past the right one.
func offsetInBatch(batch []byte, ts int64) (offset int64, timestamp int64) {
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(batch); err != nil {
		return int64(binary.BigEndian.Uint64(batch)), -1
	}
	if rb.Attributes&0x08 != 0 {
		// LogAppendTime: every record has the batch's time.
		return rb.FirstOffset, rb.MaxTimestamp
	}
	raw, ok := decompress(rb.Attributes&0x7, rb.Records)
	if !ok {
		return rb.FirstOffset, rb.MaxTimestamp
	}
	for i := int32(0); i < rb.NumRecords && len(raw) > 0; i++ {
		length, n := binary.Varint(raw)
		if n <= 0 || int64(len(raw)-n) < length || length < 0 {
			break
		}
		var r kmsg.Record
		if err := r.ReadFrom(raw[:n+int(length)]); err != nil {
			break
		}
		rts := rb.FirstTimestamp + r.TimestampDelta64
		if rts >= ts {
			return rb.FirstOffset + int64(r.OffsetDelta), rts
		}
		raw = raw[n+int(length):]
	}
	return rb.FirstOffset, rb.MaxTimestamp
}

// decompress undoes a batch codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
func decompress(codec int16, b []byte) ([]byte, bool) {
	switch codec {
	case 0:
		return b, true
	case 1:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, false
		}
		out, err := io.ReadAll(zr)
		return out, err == nil
	case 2:
		return unsnappy(b)
	case 3:
		out, err := io.ReadAll(lz4.NewReader(bytes.NewReader(b)))
		return out, err == nil
	case 4:
		d, err := zstd.NewReader(nil)
		if err != nil {
			return nil, false
		}
		defer d.Close()
		out, err := d.DecodeAll(b, nil)
		return out, err == nil
	}
	return nil, false
}

// xerialMagic starts the framed snappy that Java clients write.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

func unsnappy(b []byte) ([]byte, bool) {
	if !bytes.HasPrefix(b, xerialMagic) {
		out, err := s2.Decode(nil, b)
		return out, err == nil
	}
	b = b[16:] // magic, version, compatible version
	var out []byte
	for len(b) >= 4 {
		n := int(binary.BigEndian.Uint32(b))
		b = b[4:]
		if n > len(b) {
			return nil, false
		}
		chunk, err := s2.Decode(nil, b[:n])
		if err != nil {
			return nil, false
		}
		out = append(out, chunk...)
		b = b[n:]
	}
	return out, true
}
