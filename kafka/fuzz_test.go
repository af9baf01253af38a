package kafka

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// testAPIs serves every key this package registers, plus the group keys at
// the coordinator's usual ranges, so decoding covers them all.
func testAPIs() map[int16]*api {
	apis := map[int16]*api{}
	for k, a := range registry {
		apis[k] = a
	}
	for k := range groupKeys {
		apis[k] = &api{key: k, min: 0, max: kmsg.RequestForKey(k).MaxVersion(), handle: handleGroup}
	}
	return apis
}

// frame encodes req as a request body (without the size prefix).
func frame(req kmsg.Request, corr int32, clientID string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, uint16(len(clientID)))
	b = append(b, clientID...)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	return req.AppendTo(b)
}

func seedRequests() []kmsg.Request {
	topic := "t"
	var out []kmsg.Request
	for k, a := range testAPIs() {
		for v := a.min; v <= a.max; v++ {
			r := kmsg.RequestForKey(k)
			r.SetVersion(v)
			out = append(out, r)
		}
	}
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(12)
	md.Topics = []kmsg.MetadataRequestTopic{{Topic: &topic}}
	pr := kmsg.NewPtrProduceRequest()
	pr.SetVersion(9)
	pr.Acks = -1
	pr.Topics = []kmsg.ProduceRequestTopic{{Topic: topic, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: []byte{1, 2, 3}}}}}
	fr := kmsg.NewPtrFetchRequest()
	fr.SetVersion(13)
	fr.Topics = []kmsg.FetchRequestTopic{{Partitions: []kmsg.FetchRequestTopicPartition{{FetchOffset: 5, PartitionMaxBytes: 100}}}}
	// Forged arrays of empty elements, the shape that makes the decoder
	// allocate the most per byte (see decodeCost).
	var forged []kmsg.Request
	for _, v := range []int16{3, 9} {
		p := kmsg.NewPtrProduceRequest()
		p.SetVersion(v)
		p.Topics = []kmsg.ProduceRequestTopic{{Topic: topic, Partitions: make([]kmsg.ProduceRequestTopicPartition, 50)}, {}}
		forged = append(forged, p)
	}
	ff := kmsg.NewPtrFetchRequest()
	ff.SetVersion(12)
	ff.Topics = make([]kmsg.FetchRequestTopic, 50)
	forged = append(forged, ff)
	return append(append(out, md, pr, fr), forged...)
}

// FuzzRequest feeds arbitrary frames to the request decoder: it must never
// panic, and whatever it accepts must re-encode.
func FuzzRequest(f *testing.F) {
	for i, r := range seedRequests() {
		f.Add(frame(r, int32(i), "fuzz"))
	}
	f.Add([]byte{0, 18, 0, 99, 0, 0, 0, 1, 255, 255})
	f.Add([]byte{0x7f, 0x7f, 0, 0, 0, 0, 0, 0})
	apis := testAPIs()
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := decodeRequest(apis, body, nil)
		if err != nil {
			if _, ok := err.(*badRequest); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if d.req != nil {
			_ = d.req.AppendTo(nil)
		}
	})
}

// forgedTagCount is a flexible ListOffsets header whose tagged-field count
// claims about 2^32 fields in a 3-byte remainder (found by FuzzRequest).
var forgedTagCount = []byte("\x00\x02\x00\x06\x00\x00\x00\n\x00\x04uzz\x00\xff\xff\xff\xff\x00\x01\x80")

// A forged count must not make the decoder spin: one such frame used to
// hold a connection's goroutine and a core for seconds.
func TestDecodeForgedTagCountReturnsAtOnce(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		_, err := decodeRequest(testAPIs(), forgedTagCount, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("accepted")
		}
	case <-time.After(time.Second):
		t.Fatal("decoding a forged tag count still running after 1s")
	}
}

func TestDecodeRequestRejects(t *testing.T) {
	apis := testAPIs()
	cases := map[string][]byte{
		"short":             {0, 1, 0},
		"unknown key":       frame(kmsg.NewPtrDescribeQuorumRequest(), 1, "x"), // KRaft only: never served
		"too new version":   func() []byte { r := kmsg.NewPtrProduceRequest(); r.SetVersion(13); return frame(r, 1, "x") }(),
		"too old version":   func() []byte { r := kmsg.NewPtrProduceRequest(); r.SetVersion(2); return frame(r, 1, "x") }(),
		"truncated body":    func() []byte { b := frame(seedRequests()[len(seedRequests())-2], 1, "x"); return b[:len(b)-3] }(),
		"garbage client id": {0, 3, 0, 1, 0, 0, 0, 1, 0x7f, 0xff},
		"forged tag count":  forgedTagCount,
	}
	for name, body := range cases {
		if _, err := decodeRequest(apis, body, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// ApiVersions above the served range is accepted for a v0 answer.
	r := kmsg.NewPtrApiVersionsRequest()
	r.SetVersion(5)
	if d, err := decodeRequest(apis, frame(r, 7, "x"), nil); err != nil || d.req != nil || d.corr != 7 {
		t.Fatalf("ApiVersions v5: %+v %v", d, err)
	}
}
