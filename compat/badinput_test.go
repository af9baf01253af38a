package compat

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawRequest frames req like a client would.
func rawRequest(req kmsg.Request, corr int32) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, uint32(corr))
	b = binary.BigEndian.AppendUint16(b, 3)
	b = append(b, "raw"...)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	b = req.AppendTo(b)
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

// expectClosed checks that the server closes the connection after data.
func expectClosed(t *testing.T, addr string, data []byte, what string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(data)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%s: connection left open", what)
	}
}

// readResponse reads one response frame and returns its body after the
// correlation id.
func readResponse(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	return body[4:]
}

// TestBadInput throws malformed traffic at a node and checks that each bad
// connection is closed or answered with an error, and that a well-behaved
// client keeps working throughout.
func TestBadInput(t *testing.T) {
	c := startCluster(t, 1)
	createTopic(t, c, "bad", 1, 1, nil)
	addr := c.node(1).kafka
	good := newFranz(t, c, kgo.DefaultProduceTopic("bad"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(what string) {
		t.Helper()
		if err := good.ProduceSync(ctx, &kgo.Record{Value: []byte(what)}).FirstErr(); err != nil {
			t.Fatalf("after %s, a good client failed: %v", what, err)
		}
	}

	oversized := binary.BigEndian.AppendUint32(nil, 200<<20)
	expectClosed(t, addr, append(oversized, 0, 0, 0, 0), "oversized frame")
	check("oversized frame")

	expectClosed(t, addr, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "garbage bytes")
	check("garbage bytes")

	unknown := kmsg.NewPtrDescribeQuorumRequest() // key 55, KRaft only: never served
	expectClosed(t, addr, rawRequest(unknown, 1), "unknown key")
	check("unknown key")

	oldProduce := kmsg.NewPtrProduceRequest()
	oldProduce.SetVersion(2)
	expectClosed(t, addr, rawRequest(oldProduce, 2), "unsupported version")
	check("unsupported version")

	truncated := rawRequest(kmsg.NewPtrMetadataRequest(), 3)
	binary.BigEndian.PutUint32(truncated, uint32(len(truncated)-4+10)) // claims more than is sent
	conn, _ := net.Dial("tcp", addr)
	conn.Write(truncated)
	conn.Close()
	check("truncated request")

	// A well-framed Metadata v12 whose body is nonsense.
	junk := binary.BigEndian.AppendUint32(nil, 20)
	junk = append(junk, 0, 3, 0, 12, 0, 0, 0, 4, 0, 0, 0)
	junk = append(junk, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x7f, 0x7f, 0x7f, 0x01)
	expectClosed(t, addr, junk, "malformed body")
	check("malformed body")

	// ApiVersions at a version the broker does not know: a v0 answer.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	av := kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(4)
	frame := rawRequest(av, 9)
	binary.BigEndian.PutUint16(frame[6:], 99) // version 99
	conn.Write(frame)
	var avResp kmsg.ApiVersionsResponse
	if err := avResp.ReadFrom(readResponse(t, conn)); err != nil {
		t.Fatal(err)
	}
	if avResp.ErrorCode != kerr.UnsupportedVersion.Code || len(avResp.ApiKeys) == 0 {
		t.Fatalf("ApiVersions v99: error %d, %d keys", avResp.ErrorCode, len(avResp.ApiKeys))
	}

	// A record batch whose CRC does not match: CORRUPT_MESSAGE, and the
	// connection stays usable.
	rec := kmsg.Record{Value: []byte("x")}
	rec.Length = int32(len(rec.AppendTo(nil)) - 1)
	batch := kmsg.RecordBatch{Magic: 2, LastOffsetDelta: 0, NumRecords: 1, ProducerID: -1, ProducerEpoch: -1,
		FirstSequence: -1, Records: rec.AppendTo(nil)}
	raw := batch.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], 0xdeadbeef)
	pr := kmsg.NewPtrProduceRequest()
	pr.SetVersion(9)
	pr.Acks = -1
	pr.TimeoutMillis = 5000
	pr.Topics = []kmsg.ProduceRequestTopic{{Topic: "bad", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: raw}}}}
	conn.Write(rawRequest(pr, 10))
	var prResp kmsg.ProduceResponse
	prResp.Version = 9
	body := readResponse(t, conn)
	if err := prResp.ReadFrom(body[1:]); err != nil { // skip the flexible header's tags
		t.Fatal(err)
	}
	if code := prResp.Topics[0].Partitions[0].ErrorCode; code != kerr.CorruptMessage.Code {
		t.Fatalf("corrupt batch: error %d, want CORRUPT_MESSAGE", code)
	}
	check("corrupt batch")
	if _, _, err := c.get(1, "/ready"); err != nil {
		t.Fatalf("node stopped answering: %v", err)
	}
	for _, want := range []string{"bad request size", "unknown api key", "is not served", "malformed"} {
		if len(c.node(1).log.lines(want)) == 0 {
			t.Errorf("no log line about %q", want)
		}
	}
}

// withCRC fills in a raw v2 batch's length and CRC-32C.
func withCRC(raw []byte) []byte {
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}
