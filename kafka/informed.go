package kafka

import (
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// servedParts remembers, for each partition a connection's Produce or
// Fetch was last answered for without NOT_LEADER, when (unix ns) that
// request began. A NOT_LEADER answer removes the partition: the client was
// told where it went (KIP-951). A node handing off its leaderships keeps a
// connection open until none of the partitions it served there lately is
// left (AwaitActiveClients). That a client sent some request after the
// hand-off does not tell it all: franz-go puts into one request only the
// partitions that have a batch ready, so a partition whose next batch
// came a few milliseconds later found the port closed, and franz-go waits
// out its metadata min age (5 s) before it looks for the new leader
// (seen in TestRollingRestartFast: 4 s without an ack on 2 partitions).
type servedParts struct {
	mu    sync.Mutex
	parts map[partKey]int64
}

// partKey names a partition by topic name or, in Fetch v13+, topic id.
type partKey struct {
	topic     string
	id        [16]byte
	partition int32
}

// note records the answer resp to a Produce or Fetch begun at start.
func (sp *servedParts) note(start int64, resp kmsg.Response) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.parts == nil {
		sp.parts = map[partKey]int64{}
	}
	mark := func(k partKey, code int16) {
		if code == kerr.NotLeaderForPartition.Code {
			delete(sp.parts, k)
		} else {
			sp.parts[k] = start
		}
	}
	switch r := resp.(type) {
	case *kmsg.ProduceResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				mark(partKey{topic: t.Topic, partition: p.Partition}, p.ErrorCode)
			}
		}
	case *kmsg.FetchResponse:
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				mark(partKey{topic: t.Topic, id: t.TopicID, partition: p.Partition}, p.ErrorCode)
			}
		}
	}
}

// pending reports whether a partition was last answered here, without
// NOT_LEADER, for a request begun in [from, to).
func (sp *servedParts) pending(from, to int64) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, t := range sp.parts {
		if t >= from && t < to {
			return true
		}
	}
	return false
}
