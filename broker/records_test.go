package broker

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// records encodes n records with timestamp deltas 0, 10, 20... and values
// of valueSize zero bytes.
func records(n, valueSize int) []byte {
	var out []byte
	value := make([]byte, valueSize)
	for i := 0; i < n; i++ {
		r := kmsg.Record{TimestampDelta64: int64(i) * 10, OffsetDelta: int32(i), Value: value}
		r.Length = int32(len(r.AppendTo(nil)) - 1) // what follows a 1-byte length of 0
		out = r.AppendTo(out)
	}
	return out
}

func compress(t testing.TB, codec int16, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch codec {
	case 0:
		return raw
	case 1:
		w := gzip.NewWriter(&buf)
		w.Write(raw)
		w.Close()
	case 2:
		return s2.EncodeSnappy(nil, raw)
	case 3:
		w := lz4.NewWriter(&buf)
		w.Write(raw)
		w.Close()
	case 4:
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	}
	return buf.Bytes()
}

// batch frames compressed records as a stored v2 batch.
func batch(codec int16, n int32, recs []byte) []byte {
	rb := kmsg.RecordBatch{FirstOffset: 100, Magic: 2, Attributes: codec, LastOffsetDelta: n - 1,
		FirstTimestamp: 1000, MaxTimestamp: 1000 + int64(n-1)*10, ProducerID: -1, ProducerEpoch: -1,
		FirstSequence: -1, NumRecords: n, Records: recs}
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	return b
}

func TestOffsetInBatchEveryCodec(t *testing.T) {
	for codec := int16(0); codec <= 4; codec++ {
		b := batch(codec, 5, compress(t, codec, records(5, 20)))
		if off, ts := offsetInBatch(b, 1025); off != 103 || ts != 1030 {
			t.Errorf("codec %d: offset %d ts %d, want 103 at 1030", codec, off, ts)
		}
	}
	// Java clients frame snappy the xerial way.
	raw := records(5, 20)
	x := append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1)
	for _, part := range [][]byte{raw[:40], raw[40:]} {
		c := s2.EncodeSnappy(nil, part)
		x = binary.BigEndian.AppendUint32(x, uint32(len(c)))
		x = append(x, c...)
	}
	if off, ts := offsetInBatch(batch(2, 5, x), 1035); off != 104 || ts != 1040 {
		t.Errorf("xerial snappy: offset %d ts %d, want 104 at 1040", off, ts)
	}
}

// Malformed xerial framing used to slice past the payload and panic.
func TestOffsetInBatchMalformedSnappy(t *testing.T) {
	cases := map[string][]byte{
		"short header":     append(append([]byte{}, xerialMagic...), 0, 0),
		"torn length":      append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1, 0, 0),
		"chunk too long":   append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1, 0x7f, 0, 0, 0, 1),
		"negative length":  append(append([]byte{}, xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1),
		"garbage block":    {0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3},
		"huge decoded len": binary.AppendUvarint(nil, 1<<30),
	}
	for name, recs := range cases {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s: panic %v", name, p)
				}
			}()
			if off, _ := offsetInBatch(batch(2, 3, recs), 1015); off != 100 {
				t.Errorf("%s: offset %d, want the base offset 100", name, off)
			}
		}()
	}
}

// A small batch that inflates to hundreds of MiB (the target record at its
// very end) is given up on after inflateLimit: the answer is the base
// offset, it comes at once, and little memory is spent.
func TestOffsetInBatchBombBounded(t *testing.T) {
	const n, valueSize = 96, 1 << 20 // 96 MiB inflated, past inflateCap
	raw := records(n, valueSize)
	for _, codec := range []int16{3, 4} {
		b := batch(codec, n, compress(t, codec, raw))
		if len(b) > 2<<20 {
			t.Fatalf("codec %d: bomb is %d bytes", codec, len(b))
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		off, _ := offsetInBatch(b, 1000+int64(n-1)*10)
		took := time.Since(start)
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("codec %d: %d-byte batch, answered %d in %v, allocated %d KiB", codec, len(b), off, took, alloc>>10)
		if off != 100 {
			t.Errorf("codec %d: offset %d, want the base offset 100", codec, off)
		}
		if alloc > 32<<20 {
			t.Errorf("codec %d: allocated %d MiB", codec, alloc>>20)
		}
		if took > 5*time.Second {
			t.Errorf("codec %d: took %v", codec, took)
		}
	}
	// Within the limit the exact record is still found, reading headers
	// only: values are skipped, not held.
	small := records(8, 100<<10)
	b := batch(4, 8, compress(t, 4, small))
	if off, _ := offsetInBatch(b, 1070); off != 107 {
		t.Errorf("800 KiB zstd batch: offset %d, want 107", off)
	}
}
