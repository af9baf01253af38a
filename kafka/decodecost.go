package kafka

import (
	"errors"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Decoding a request allocates its structs on top of the frame: a forged
// array of empty elements costs a few wire bytes per element and tens of
// bytes once decoded. That memory is taken from the request budget too,
// before kmsg allocates it (see decodeRequest's reserve).
//
// maxDecodeFactor bounds the bytes decoded per frame byte for every API
// but Produce (TestDecodeForgedCountsBounded measures each array of each
// API and version; the worst is about 24x). Those frames are small
// (Limits.MaxNonProduceRequestSize), so charging this much is cheap.
// Produce frames may be large, so their structs are counted exactly by a
// pre-scan instead (produceCost); the record bytes are not copied.
const maxDecodeFactor = 32

var (
	produceTopicSize     = int64(unsafe.Sizeof(kmsg.ProduceRequestTopic{}))
	producePartitionSize = int64(unsafe.Sizeof(kmsg.ProduceRequestTopicPartition{}))
)

var errMalformedProduce = errors.New("malformed produce request")

// decodeCost is how many bytes decoding a request body (after its header)
// allocates, at most.
func decodeCost(key int16, flexible bool, body []byte) (int64, error) {
	if key != 0 {
		return int64(len(body)) * maxDecodeFactor, nil
	}
	return produceCost(flexible, body)
}

// produceCost walks a Produce v3-v11 body without allocating and counts
// what decoding its topics and partitions will allocate. Every loop step
// consumes input or stops on the first short read, so the walk is linear.
func produceCost(flexible bool, src []byte) (int64, error) {
	rd := kbin.Reader{Src: src}
	arrayLen := rd.ArrayLen
	if flexible {
		arrayLen = rd.CompactArrayLen
	}
	if flexible {
		rd.UnsafeCompactNullableString() // transactional id
	} else {
		rd.UnsafeNullableString()
	}
	rd.Int16() // acks
	rd.Int32() // timeout
	var cost int64
	topics := arrayLen()
	for i := int32(0); i < topics && rd.Ok(); i++ {
		var name string
		if flexible {
			name = rd.UnsafeCompactString()
		} else {
			name = rd.UnsafeString()
		}
		cost += produceTopicSize + int64(len(name))
		parts := arrayLen()
		for j := int32(0); j < parts && rd.Ok(); j++ {
			rd.Int32()
			if flexible {
				rd.CompactNullableBytes()
				skipTags(&rd)
			} else {
				rd.NullableBytes()
			}
			cost += producePartitionSize
		}
		if flexible {
			skipTags(&rd)
		}
	}
	if !rd.Ok() {
		return 0, errMalformedProduce
	}
	return cost, nil
}
