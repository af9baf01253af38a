package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// splitBackend is screenBackend that writes what it is given to "t",
// keeping a copy.
type splitBackend struct {
	screenBackend
	mu  sync.Mutex
	got map[string][]byte
}

func (b *splitBackend) Produce(topic string, part int32, records []byte, acks int16, timeout time.Duration) ProduceWait {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got[fmt.Sprintf("%s-%d", topic, part)] = append([]byte(nil), records...)
	return func(context.Context) ProduceResult { return ProduceResult{BaseOffset: 42, LogAppendTime: -1} }
}

// A big Produce whose partitions that may be written all have their
// records in its first chunk (TestHostileClients' well-formed frames: 64
// bytes for an existing partition, then 100 MiB for one that does not
// exist) is answered without the rest being kept: the small partitions
// are written, the refused ones answered with their error, and the
// request budget is never needed for the big records.
func TestBigProduceSplitFromHeader(t *testing.T) {
	be := &splitBackend{got: map[string][]byte{}}
	s, err := NewServer(Config{Listeners: []Listener{{Name: "PLAIN", Protocol: Plaintext, Listen: "127.0.0.1:0"}},
		Backend: be, Limits: Limits{QueuedMaxRequestBytes: 16 << 20}, MaxRequestSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	small := bytes.Repeat([]byte{7}, 64)
	pr := kmsg.NewPtrProduceRequest()
	pr.SetVersion(9)
	pr.Acks, pr.TimeoutMillis = 1, 5000
	pr.Topics = []kmsg.ProduceRequestTopic{
		{Topic: "nope", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: make([]byte, 10)}}},
		{Topic: "t", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: small}, {Partition: 1, Records: make([]byte, 40<<20)}}},
	}
	body := frame(pr, 5, "split")
	f := append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
	sent := make(chan error, 1)
	go func() { _, err := c.Write(f); sent <- err }()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := readSized(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("sending: %v", err)
	}
	if corr := int32(binary.BigEndian.Uint32(b)); corr != 5 {
		t.Fatalf("correlation id %d", corr)
	}
	resp := kmsg.NewPtrProduceResponse()
	resp.SetVersion(9)
	if err := resp.ReadFrom(b[5:]); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[int32]int16{"t": {0: 0, 1: kerr.MessageTooLarge.Code}, "nope": {0: kerr.UnknownTopicOrPartition.Code}}
	n := 0
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			code, ok := want[rt.Topic][rp.Partition]
			if !ok || rp.ErrorCode != code {
				t.Errorf("%s-%d: error %d, want %d (listed %v)", rt.Topic, rp.Partition, rp.ErrorCode, code, ok)
			}
			if code == 0 && rp.BaseOffset != 42 {
				t.Errorf("%s-%d: base offset %d, want 42", rt.Topic, rp.Partition, rp.BaseOffset)
			}
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d partitions answered, want 3: %+v", n, resp.Topics)
	}
	be.mu.Lock()
	got := be.got
	be.mu.Unlock()
	if len(got) != 1 || !bytes.Equal(got["t-0"], small) {
		t.Errorf("written: %d partitions, t-0 %d bytes (want only t-0's 64)", len(got), len(got["t-0"]))
	}
	if u := s.reqMemory.inUse(); u != 0 {
		t.Errorf("%d bytes of budget held after the answer", u)
	}
	// The connection goes on serving, and the client id was taken.
	writeReq(t, c, 9, kmsg.NewPtrApiVersionsRequest())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readSized(c); err != nil {
		t.Fatalf("ApiVersions after the split frame: %v", err)
	}
}
