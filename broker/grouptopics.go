package broker

import "github.com/chronik-dev/chronik/coordinator"

// groupTopics lists the topics KIP-848 consumer groups may subscribe to,
// with their ids and partition counts, for server-side assignment.
func (b *Broker) groupTopics() map[string]coordinator.TopicMeta {
	ts := b.metaSM.topics()
	out := make(map[string]coordinator.TopicMeta, len(ts))
	for _, t := range ts {
		if t.Internal {
			continue
		}
		out[t.Name] = coordinator.TopicMeta{ID: t.ID, Partitions: int32(len(t.Partitions))}
	}
	return out
}
