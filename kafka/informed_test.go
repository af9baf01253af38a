package kafka

import (
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func produceResp(codes map[int32]int16) *kmsg.ProduceResponse {
	r := kmsg.NewPtrProduceResponse()
	t := kmsg.NewProduceResponseTopic()
	t.Topic = "t"
	for p, c := range codes {
		rp := kmsg.NewProduceResponseTopicPartition()
		rp.Partition, rp.ErrorCode = p, c
		t.Partitions = append(t.Partitions, rp)
	}
	r.Topics = append(r.Topics, t)
	return r
}

// A connection counts as told where its partitions went only once every
// partition it was served lately has been answered NOT_LEADER, not when
// some later request was (it may have carried other partitions).
func TestServedPartsPendingUntilEveryPartitionMoved(t *testing.T) {
	var sp servedParts
	nl := kerr.NotLeaderForPartition.Code
	sp.note(100, produceResp(map[int32]int16{7: 0, 10: 0, 13: 0}))
	if !sp.pending(50, 200) {
		t.Fatal("partitions served in the window are not pending")
	}
	if sp.pending(150, 200) {
		t.Fatal("a partition served before the window is pending")
	}
	// A request after the hand-off carried 13 only.
	sp.note(300, produceResp(map[int32]int16{13: nl}))
	if !sp.pending(50, 200) {
		t.Fatal("7 and 10 were never told they moved, yet nothing is pending")
	}
	sp.note(310, produceResp(map[int32]int16{7: nl, 10: nl}))
	if sp.pending(50, 200) {
		t.Fatal("every partition was answered NOT_LEADER, yet one is pending")
	}
	// Served again after the window (this node still leads it): not
	// waited for.
	sp.note(400, produceResp(map[int32]int16{7: 0}))
	if sp.pending(50, 200) {
		t.Fatal("a partition served after the window is pending")
	}
}

// An answer already made reaches the client while the next one on the
// connection is still being waited for (a produce held through a
// leadership hand-over), not once that one is done too.
func TestWriterFlushesBeforeWaiting(t *testing.T) {
	c, client := testConn(t, Limits{})
	c.cc.clientID = ForwardClientID // no quotas: testConn has no backend
	c.s.cfg.MaxInFlight = 4
	release := make(chan struct{})
	defer close(release)
	queued := make(chan struct{})
	// The first answer is made once the second request is queued behind it.
	ready := func() kmsg.Response { <-queued; return kmsg.NewPtrApiVersionsResponse() }
	held := func() kmsg.Response { <-release; return kmsg.NewPtrApiVersionsResponse() }
	for i, r := range []reply{ready, held} {
		c.s.inflight[0].Add(1)
		if err := c.enqueue(pendingResp{key: 18, corr: int32(i + 1), start: time.Now(), r: r}); err != nil {
			t.Fatal(err)
		}
	}
	close(queued)
	client.SetReadDeadline(time.Now().Add(2 * time.Second))
	hdr := make([]byte, 8)
	if _, err := io.ReadFull(client, hdr); err != nil {
		t.Fatalf("the first answer did not arrive while the second was held: %v", err)
	}
	if corr := binary.BigEndian.Uint32(hdr[4:]); corr != 1 {
		t.Fatalf("got correlation id %d first, want 1", corr)
	}
}
