package kafka

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"
)

// Hint-less writers at shutdown. A node that stops forwards the writes of
// clients that cannot read KIP-951 hints (forwardMoved), but only while
// it is up: once its port closes, a client that learns of leaders on a
// timer alone (kafka-go's Writer: a random moment within 6 s, never on an
// error) retries against the closed port or the restarting node until
// then. So a stopping node waits, bounded by the broker's forward wait,
// while such clients still write here (AwaitForwardedClients).
//
// To tell those clients from the ones that do follow an error (sarama
// and librdkafka refresh metadata on NOT_LEADER_OR_FOLLOWER), a draining
// node with TellMovedOnce answers each partition of a non-idempotent
// batch NOT_LEADER once per client (its address and client id: kafka-go
// spreads its writes over a pool of connections, and a retry on another
// connection told again would back off again, 0.1, 0.4, 0.9 s...), and
// forwards it from then on.
// A client that moves stops writing here and the wait ends; one that
// comes back is forwarded to and waited for. Idempotent batches are
// forwarded while the node is not draining; while it drains they are
// answered NOT_LEADER, and then every later batch of the partition on
// that connection too (tellMovedIdempotent): answering one batch
// NOT_LEADER while the next one on the connection is forwarded would
// reach the leader out of sequence.

// movedKey is a partition told NOT_LEADER to one client.
type movedKey struct {
	ip        netip.Addr
	clientID  string
	topic     string
	partition int32
}

// toldMoved holds the partitions each client was told NOT_LEADER for
// while draining. It only grows, during a shutdown: at most partitions
// times clients.
type toldMoved struct {
	mu   sync.Mutex
	told map[movedKey]bool
}

// first marks k and reports whether it was not marked yet.
func (tm *toldMoved) first(k movedKey) bool {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if tm.told[k] {
		return false
	}
	if tm.told == nil {
		tm.told = map[movedKey]bool{}
	}
	tm.told[k] = true
	return true
}

// tellMoved decides, for a partition answered NOT_LEADER with a known
// leader, whether the NOT_LEADER answer stands (true) or the records are
// forwarded.
func tellMoved(s *Server, cc *connCtx, pp producePart) bool {
	if idempotentBatch(pp.records) {
		return tellMovedIdempotent(s, cc, pp)
	}
	cc.fwdAt.Store(time.Now().UnixNano())
	if !s.cfg.TellMovedOnce || !s.draining.Load() {
		return false
	}
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(cc.remote); err == nil {
		ip = ap.Addr()
	}
	return s.moved.first(movedKey{ip: ip, clientID: cc.clientID, topic: pp.topic, partition: pp.part})
}

// idempotentBatch reports whether records start with a record batch
// (magic 2) that carries a producer id. Older message sets have none.
func idempotentBatch(records []byte) bool {
	const magicAt, pidAt = 16, 43
	if len(records) < pidAt+8 || records[magicAt] != 2 {
		return false
	}
	return int64(binary.BigEndian.Uint64(records[pidAt:])) >= 0
}

// AwaitForwardedClients waits until no open connection has written a
// non-idempotent batch here for a partition this node does not lead
// (forwarded, or answered NOT_LEADER once) within the last quiet, or ctx
// ends. A connection that closes no longer counts (kafka-go closes its
// connections to a broker that its refreshed metadata no longer lists).
// It returns how many connections it waited for and how many of those
// were still writing here when ctx ended.
func (s *Server) AwaitForwardedClients(ctx context.Context, quiet time.Duration) (waited, still int) {
	seen := map[*conn]bool{}
	for {
		gone := s.gone.wait()
		now := time.Now().UnixNano()
		var next int64 // when the first active connection turns quiet
		active := 0
		s.mu.Lock()
		for c := range s.conns {
			t := c.cc.fwdAt.Load()
			if t == 0 || now-t >= int64(quiet) {
				continue
			}
			select {
			case <-c.done:
				continue
			default:
			}
			seen[c] = true
			active++
			if exp := t + int64(quiet); next == 0 || exp < next {
				next = exp
			}
		}
		s.mu.Unlock()
		if active == 0 {
			return len(seen), 0
		}
		t := time.NewTimer(time.Duration(next - now))
		select {
		case <-ctx.Done():
			t.Stop()
			return len(seen), active
		case <-gone:
		case <-t.C:
		}
		t.Stop()
	}
}

// tellMovedIdempotent decides the same for an idempotent batch. A draining
// node answers it NOT_LEADER, and so every later batch of the partition on
// this connection (toldIdem), never forwarding one again: the batch told
// is retried at the new leader after the ones forwarded before it, which
// were answered first (replies run in order), so the sequence holds.
// Forwarding them instead kept such a client (librdkafka before it read
// KIP-951 hints) routing the partition here until this node closed the
// connection; librdkafka then tried to reconnect at once, refused, and
// each such attempt doubles its reconnect back-off (up to 10 s), which in
// a fast rolling restart kept it seconds from every restarted node.
// Only librdkafka clients (ApiVersions' software name) are told: sarama,
// the other hintless idempotent producer, moves at once when forwarding
// ends and loses 200-300 ms more per roll to NOT_LEADER's retry back-off
// and metadata refresh (5 rolls: longest gap 214/263 ms forwarded,
// 448-525 ms told).
func tellMovedIdempotent(s *Server, cc *connCtx, pp producePart) bool {
	if !s.cfg.TellMovedOnce || !s.draining.Load() || !cc.librdkafka.Load() {
		return false
	}
	k := partKey{topic: pp.topic, partition: pp.part}
	if cc.toldIdem == nil {
		cc.toldIdem = map[partKey]bool{}
	}
	if !cc.toldIdem[k] {
		cc.toldIdem[k] = true
		cc.toldAt.CompareAndSwap(0, time.Now().UnixNano())
	}
	return true
}
