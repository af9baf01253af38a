package kafka

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"time"
)

// ClientKey names a client the same way on every node: a hash of its
// client id and the host (not the port) it connects from. A stopping node
// compares the keys of the clients using a partition here with the keys
// its peers hold live connections for, and hands the partition to a peer
// those clients can reach at once. Clients that connect only to the
// brokers they need (librdkafka) would otherwise wait out a reconnect
// back-off towards a node they have not reconnected to since it restarted.
type ClientKey uint64

// hashClient hashes a client id and host (FNV-1a). It is never 0, which
// stands for a connection that has sent no request yet.
func hashClient(clientID string, ip netip.Addr) ClientKey {
	h := fnv.New64a()
	h.Write([]byte(clientID))
	h.Write([]byte{0})
	b, _ := ip.MarshalBinary()
	h.Write(b)
	if k := ClientKey(h.Sum64()); k != 0 {
		return k
	}
	return 1
}

// TopicPartition names a partition by topic name.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// noteClient gives c its key at its first request (reader goroutine).
// A peer forwarding writes here (ForwardClientID) is not a client: it
// gets none.
func (c *conn) noteClient() {
	if c.key.Load() != 0 || c.cc.clientID == ForwardClientID {
		return
	}
	c.key.Store(uint64(hashClient(c.cc.clientID, c.ip)))
	c.s.clientsVer.Add(1)
}

// ClientsVersion changes whenever the set LiveClients returns may have
// changed (a connection's first request, a connection closing).
func (s *Server) ClientsVersion() uint64 { return s.clientsVer.Load() }

// LiveClients returns, sorted and without repeats, the keys of the clients
// holding an open connection here that has sent a request.
func (s *Server) LiveClients() []ClientKey {
	s.mu.Lock()
	out := make([]ClientKey, 0, len(s.conns))
	for c := range s.conns {
		if k := ClientKey(c.key.Load()); k != 0 {
			out = append(out, k)
		}
	}
	s.mu.Unlock()
	slices.Sort(out)
	return slices.Compact(out)
}

// PartitionClients returns, for each partition that an open connection's
// Produce or Fetch was answered for here (not NOT_LEADER) in a request
// begun at or after since, the keys of those clients, without repeats.
// Fetch v13+ names topics by id only; those partitions are left out.
func (s *Server) PartitionClients(since time.Time) map[TopicPartition][]ClientKey {
	from := since.UnixNano()
	out := map[TopicPartition][]ClientKey{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		k := ClientKey(c.key.Load())
		if k == 0 {
			continue
		}
		c.served.mu.Lock()
		for pk, t := range c.served.parts {
			if t < from || pk.topic == "" {
				continue
			}
			tp := TopicPartition{Topic: pk.topic, Partition: pk.partition}
			if !slices.Contains(out[tp], k) {
				out[tp] = append(out[tp], k)
			}
		}
		c.served.mu.Unlock()
	}
	return out
}
