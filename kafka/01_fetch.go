package kafka

import (
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Fetch v4-16. v4 isolation level and last stable offset; v5 log start
// offset; v7 fetch sessions (KIP-227); v9 CurrentLeaderEpoch (KIP-320); v11
// rack; v12 flexible, diverging epochs; v13 topic ids; v15 replica state;
// v16 adds KIP-951 CurrentLeader and NodeEndpoints to NOT_LEADER answers.
//
// Sessions are not kept: every answer has session id 0, which tells the
// client to keep sending full requests; an incremental request for a
// session we never made gets FETCH_SESSION_ID_NOT_FOUND, which resets it.
// Epoch -1 (kafka-go's Client sends session id -1 with it) and epoch 0 are
// full requests whatever the session id, as in Kafka.
func init() { register(1, 4, 16, handleFetch) }

type fetchPart struct {
	topic   string
	topicID [16]byte
	unknown bool
	denied  int16 // TOPIC_AUTHORIZATION_FAILED: no READ
	req     kmsg.FetchRequestTopicPartition
}

func handleFetch(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.FetchRequest)
	resp := req.ResponseKind().(*kmsg.FetchResponse)
	resp.Version = req.Version
	if req.Version >= 7 && req.SessionEpoch > 0 {
		resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
		s.metrics.countErr(1, resp.ErrorCode)
		return func() kmsg.Response { return resp }
	}
	var parts []fetchPart
	for _, t := range req.Topics {
		name := t.Topic
		unknown := false
		if req.Version >= 13 {
			n, ok := s.backend.TopicName(t.TopicID)
			name, unknown = n, !ok
		}
		denied := int16(0)
		if !unknown {
			denied = topicErr(s, cc, kmsg.ACLOperationRead, name)
		}
		for _, p := range t.Partitions {
			parts = append(parts, fetchPart{topic: name, topicID: t.TopicID, unknown: unknown, denied: denied, req: p})
		}
	}
	maxWait := time.Duration(req.MaxWaitMillis) * time.Millisecond
	if req.MaxBytes > s.cfg.Limits.FetchMaxBytes {
		s.metrics.limitHits.WithLabelValues(hitFetchMaxBytes).Inc()
	}
	answer := func() *kmsg.FetchResponse {
		deadline := time.Now().Add(maxWait)
		var timer *time.Timer
		defer func() {
			if timer != nil {
				timer.Stop()
			}
		}()
		for {
			results, waits, total, stop := readFetch(s, cc, req, parts)
			if stop || total >= int(req.MinBytes) || !time.Now().Before(deadline) || len(waits) == 0 {
				return buildFetch(s, cc, req, resp, parts, results)
			}
			if timer == nil {
				timer = time.NewTimer(time.Until(deadline))
			}
			cases := make([]reflect.SelectCase, 0, len(waits)+3)
			cases = append(cases,
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)},
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(s.backend.ShuttingDown())},
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(cc.ctx.Done())})
			for _, w := range waits {
				cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w)})
			}
			waitFrom := time.Now()
			chosen, _, _ := reflect.Select(cases)
			cc.replyWaited += time.Since(waitFrom) // not handling time (request quotas)
			if chosen < 3 {
				results, _, _, _ = readFetch(s, cc, req, parts)
				return buildFetch(s, cc, req, resp, parts, results)
			}
		}
	}
	user := clientUser(cc) // here, on the reader, which owns the principal
	return func() kmsg.Response { return throttleFetch(s, cc, user, req, answer()) }
}

// throttleFetch counts a response's record bytes against the consumer's
// quota. Over it, the client gets, as from Kafka, an empty answer at once
// with throttle_time_ms, the bytes are taken back (they were not sent) and
// the connection is muted (quotas.go). A response bigger than the quota's
// window on its own is sent anyway, with its throttle time: answered
// empty, it would be refused again and again.
func throttleFetch(s *Server, cc *connCtx, user string, req *kmsg.FetchRequest, resp *kmsg.FetchResponse) kmsg.Response {
	size := fetchSize(resp)
	thr := throttle(s, cc, user, QuotaFetch, size)
	resp.ThrottleMillis = int32(thr.Milliseconds())
	if thr <= 0 || size == 0 || size > s.backend.QuotaWindow(QuotaFetch, user, cc.clientID) {
		return resp
	}
	s.backend.Unrecord(QuotaFetch, user, cc.clientID, size)
	empty := req.ResponseKind().(*kmsg.FetchResponse)
	empty.Version, empty.ThrottleMillis = req.Version, resp.ThrottleMillis
	return empty
}

// fetchSize is the record bytes a response carries.
func fetchSize(resp *kmsg.FetchResponse) int {
	size := 0
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			size += len(p.RecordBatches)
		}
	}
	return size
}

// readFetch reads every partition once. stop is set when an error should
// be reported at once rather than waited out.
//
// The records read are held in the node's request budget until the
// response is written (cc.respMem): a read takes at most what the budget
// has free, so when memory is short responses shrink (down to one batch,
// which a fetch always gets) instead of piling up.
func readFetch(s *Server, cc *connCtx, req *kmsg.FetchRequest, parts []fetchPart) (results []FetchResult, waits []<-chan struct{}, total int, stop bool) {
	results = make([]FetchResult, len(parts))
	budget := int(req.MaxBytes)
	if req.Version < 3 || budget <= 0 {
		budget = 50 << 20
	}
	if cap := int(s.cfg.Limits.FetchMaxBytes); budget > cap {
		budget = cap // the broker's fetch.max.bytes wins over the client's
	}
	s.reqMemory.release(cc.respMem, true) // an earlier read of this long poll
	cc.respMem = 0
	granted := s.reqMemory.takeUpTo(int64(budget))
	if granted < int64(budget) {
		s.metrics.limitHits.WithLabelValues(hitRequestMemoryWait).Inc()
	}
	budget = int(granted)
	defer func() {
		// Hold what was read, not what was granted.
		s.reqMemory.release(granted, true)
		s.reqMemory.force(int64(total))
		cc.respMem = int64(total)
	}()
	for i, p := range parts {
		if p.unknown {
			results[i] = FetchResult{Err: kerr.UnknownTopicID.Code, HighWatermark: -1, LastStable: -1, LogStartOffset: -1, Hint: LeaderHint{Leader: -1}}
			stop = true
			continue
		}
		if p.denied != 0 {
			results[i] = FetchResult{Err: p.denied, HighWatermark: -1, LastStable: -1, LogStartOffset: -1, Hint: LeaderHint{Leader: -1}}
			stop = true
			continue
		}
		max := p.req.PartitionMaxBytes
		if int(max) > budget {
			max = int32(budget)
		}
		epoch := int32(-1)
		if req.Version >= 9 {
			epoch = p.req.CurrentLeaderEpoch
		}
		res, w := s.backend.Fetch(FetchPartition{Topic: p.topic, Partition: p.req.Partition, Offset: p.req.FetchOffset,
			MaxBytes: max, CurrentEpoch: epoch, CommittedOnly: req.IsolationLevel == 1, MinOne: total == 0})
		results[i] = res
		if res.Err != 0 {
			stop = true
		}
		if w != nil {
			waits = append(waits, w)
		}
		total += len(res.Records)
		budget -= len(res.Records)
		if budget < 0 {
			budget = 0
		}
	}
	return results, waits, total, stop
}

func buildFetch(s *Server, cc *connCtx, req *kmsg.FetchRequest, resp *kmsg.FetchResponse, parts []fetchPart, results []FetchResult) *kmsg.FetchResponse {
	hinted := map[int32]bool{}
	ti := -1
	for i, p := range parts {
		if i == 0 || parts[i-1].topic != p.topic || parts[i-1].topicID != p.topicID {
			resp.Topics = append(resp.Topics, kmsg.FetchResponseTopic{Topic: p.topic, TopicID: p.topicID})
			ti++
		}
		res := results[i]
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.Partition = p.req.Partition
		rp.ErrorCode = res.Err
		rp.HighWatermark = res.HighWatermark
		rp.LastStableOffset = res.LastStable
		rp.LogStartOffset = res.LogStartOffset
		// An empty set, never null: librdkafka and kafka-go reject a null
		// record set (size -1) and drop the whole response.
		rp.RecordBatches = res.Records
		if rp.RecordBatches == nil {
			rp.RecordBatches = []byte{}
		}
		rp.PreferredReadReplica = -1
		if res.Err == kerr.NotLeaderForPartition.Code && res.Hint.Leader >= 0 && req.Version >= 16 {
			rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = res.Hint.Leader, res.Hint.Epoch
			hinted[res.Hint.Leader] = true
		}
		s.metrics.countErr(1, res.Err)
		resp.Topics[ti].Partitions = append(resp.Topics[ti].Partitions, rp)
	}
	for _, b := range nodeEndpoints(s, cc, hinted) {
		resp.Brokers = append(resp.Brokers, kmsg.FetchResponseBroker{NodeID: b.NodeID, Host: b.Host, Port: b.Port, Rack: b.Rack})
	}
	return resp
}
