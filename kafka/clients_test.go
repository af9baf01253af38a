package kafka

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A client's key depends on its id and host only, and the server lists the
// clients of its open connections and, per partition, those served it
// lately.
func TestPartitionClients(t *testing.T) {
	lo, other := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	if hashClient("rdkafka", lo) != hashClient("rdkafka", lo) || hashClient("rdkafka", lo) == hashClient("rdkafka", other) ||
		hashClient("rdkafka", lo) == hashClient("kgo", lo) {
		t.Fatal("client keys do not tell id and host apart")
	}
	s, cs := forwardingServer(4)
	for i, id := range []string{"rdkafka", "rdkafka", "kgo", ForwardClientID} {
		cs[i].ip, cs[i].cc.clientID = lo, id
	}
	v0 := s.ClientsVersion()
	if got := s.LiveClients(); len(got) != 0 {
		t.Fatalf("clients before any request: %v", got)
	}
	for _, c := range cs {
		c.noteClient()
		c.noteClient()
	}
	if s.ClientsVersion() == v0 {
		t.Fatal("the version did not change with new clients")
	}
	rdk, kgo := hashClient("rdkafka", lo), hashClient("kgo", lo)
	want := []ClientKey{rdk, kgo}
	slices.Sort(want)
	if got := s.LiveClients(); !slices.Equal(got, want) {
		t.Fatalf("live clients %v, want %v", got, want)
	}
	produced := func(c *conn, at time.Time, part int32, code int16) {
		c.served.note(at.UnixNano(), &kmsg.ProduceResponse{Topics: []kmsg.ProduceResponseTopic{{Topic: "t",
			Partitions: []kmsg.ProduceResponseTopicPartition{{Partition: part, ErrorCode: code}}}}})
	}
	now := time.Now()
	produced(cs[0], now, 1, 0)
	produced(cs[1], now, 1, 0)
	produced(cs[2], now.Add(-time.Minute), 1, 0) // too long ago
	produced(cs[2], now, 2, 0)
	produced(cs[0], now, 3, 6) // answered NOT_LEADER: not served here
	got := s.PartitionClients(now.Add(-time.Second))
	if len(got) != 2 || !slices.Equal(got[TopicPartition{"t", 1}], []ClientKey{rdk}) || !slices.Equal(got[TopicPartition{"t", 2}], []ClientKey{kgo}) {
		t.Fatalf("partition clients %v", got)
	}
}
