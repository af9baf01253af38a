package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Produce v3-11. v3 brought record batches (magic 2) and transactional ids;
// v5 LogStartOffset; v8 per-record errors and messages; v9 flexible; v10
// adds KIP-951 CurrentLeader and NodeEndpoints to NOT_LEADER_OR_FOLLOWER
// answers, so clients move to the new leader without a metadata refresh.
// v11 changed nothing on the wire.
func init() { register(0, 3, 11, handleProduce) }

type producePart struct {
	topic   string
	part    int32
	records []byte
	wait    ProduceWait
	now     ProduceResult // set when the partition was refused up front
}

// ForwardClientID is the client id a node uses when it forwards a Produce
// to another node; such requests are never forwarded again.
const ForwardClientID = "chronik-forward"

// ProduceForwarder is a Backend that can send one partition's records on to
// its leader, for clients that cannot follow a KIP-951 leader hint
// (Produce before v10) and would otherwise retry here until their next
// metadata refresh. ok is false when it could not; the NOT_LEADER answer
// stands then.
type ProduceForwarder interface {
	ForwardProduce(ctx context.Context, leader int32, topic string, part int32, records []byte, acks int16, timeout time.Duration) (res ProduceResult, ok bool)
}

func handleProduce(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.ProduceRequest)
	timeout := time.Duration(req.TimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	var parts []producePart
	for _, t := range req.Topics {
		denied := topicErr(s, cc, kmsg.ACLOperationWrite, t.Topic)
		for _, p := range t.Partitions {
			pp := producePart{topic: t.Topic, part: p.Partition, records: p.Records}
			switch {
			case denied != 0:
				pp.now = ProduceResult{Err: denied, Hint: LeaderHint{Leader: -1}}
			case req.TransactionID != nil:
				pp.now = ProduceResult{Err: kerr.TransactionalIDAuthorizationFailed.Code, Message: "transactions are not supported", Hint: LeaderHint{Leader: -1}}
			case req.Acks != 0 && req.Acks != 1 && req.Acks != -1:
				pp.now = ProduceResult{Err: kerr.InvalidRequiredAcks.Code, Hint: LeaderHint{Leader: -1}}
			default:
				// Submitting here, on the reader goroutine, keeps the
				// connection's batches in order.
				pp.wait = s.backend.Produce(t.Topic, p.Partition, p.Records, req.Acks, timeout)
			}
			parts = append(parts, pp)
		}
	}
	// The request's bytes count against the producer's quota now, as in
	// Kafka; the answer is not delayed, the connection is muted (quotas.go).
	size := 0
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			size += len(p.Records)
		}
	}
	thr := throttle(s, cc, clientUser(cc), QuotaProduce, size)
	if req.Acks == 0 {
		// No response at all; still let the writes finish in the background.
		for _, pp := range parts {
			if pp.wait != nil {
				go pp.wait(context.Background())
			}
		}
		return nil
	}
	return func() kmsg.Response {
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.Version = req.Version
		ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
		defer cancel()
		results := make([]ProduceResult, len(parts))
		for i, pp := range parts {
			results[i] = pp.now
			if pp.wait != nil {
				results[i] = pp.wait(ctx)
			}
		}
		if req.Version < 10 && cc.clientID != ForwardClientID {
			forwardMoved(ctx, s, cc, parts, results, req.Acks, timeout)
		}
		hinted := map[int32]bool{}
		ti := -1
		for i, pp := range parts {
			if i == 0 || parts[i-1].topic != pp.topic {
				resp.Topics = append(resp.Topics, kmsg.ProduceResponseTopic{Topic: pp.topic})
				ti++
			}
			res := results[i]
			rp := kmsg.ProduceResponseTopicPartition{Partition: pp.part, ErrorCode: res.Err, BaseOffset: res.BaseOffset,
				LogAppendTime: res.LogAppendTime, LogStartOffset: res.LogStartOffset}
			if res.Err != 0 {
				rp.BaseOffset, rp.LogAppendTime = -1, -1
				if res.Message != "" {
					msg := res.Message
					rp.ErrorMessage = &msg
				}
			}
			rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = -1, -1
			if res.Err == kerr.NotLeaderForPartition.Code && res.Hint.Leader >= 0 && req.Version >= 10 {
				rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = res.Hint.Leader, res.Hint.Epoch
				hinted[res.Hint.Leader] = true
			}
			s.metrics.countErr(0, res.Err)
			resp.Topics[ti].Partitions = append(resp.Topics[ti].Partitions, rp)
		}
		resp.Brokers = nodeEndpoints(s, cc, hinted)
		resp.ThrottleMillis = int32(thr.Milliseconds())
		return resp
	}
}

// forwardMoved sends the partitions answered NOT_LEADER with a known leader
// on to that leader, all at once, and puts its answers in results. The
// client cannot read the hint (Produce before v10), so without this it
// would retry here until its metadata refresh. The connection's replies
// are produced one at a time, in order, so its batches reach a leader in
// the order they came.
// While the node stops, tellMoved may keep a NOT_LEADER answer instead.
func forwardMoved(ctx context.Context, s *Server, cc *connCtx, parts []producePart, results []ProduceResult, acks int16, timeout time.Duration) {
	fwd, ok := s.backend.(ProduceForwarder)
	if !ok {
		return
	}
	var wg sync.WaitGroup
	for i, pp := range parts {
		if res := results[i]; pp.wait == nil || res.Err != kerr.NotLeaderForPartition.Code || res.Hint.Leader < 0 {
			continue
		}
		if tellMoved(s, cc, pp) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, ok := fwd.ForwardProduce(ctx, results[i].Hint.Leader, pp.topic, pp.part, pp.records, acks, timeout); ok {
				results[i] = r
			}
		}()
	}
	wg.Wait()
}

// nodeEndpoints lists the brokers named in leader hints (KIP-951), with
// their addresses on the listener cc came in on.
func nodeEndpoints(s *Server, cc *connCtx, ids map[int32]bool) []kmsg.ProduceResponseBroker {
	if len(ids) == 0 {
		return nil
	}
	var out []kmsg.ProduceResponseBroker
	for _, b := range s.brokersFor(cc) { // on the client's listener
		if ids[b.NodeID] {
			out = append(out, kmsg.ProduceResponseBroker{NodeID: b.NodeID, Host: b.Host, Port: b.Port, Rack: b.Rack})
		}
	}
	return out
}
