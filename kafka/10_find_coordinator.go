package kafka

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// FindCoordinator v0-4. v1 added the key type (0 group, 1 transaction);
// v3 is flexible; v4 batches keys (KIP-699). Groups are coordinated by the
// leader of their partition of the internal offsets topic. There are no
// transaction coordinators.
func init() { register(10, 0, 4, handleFindCoordinator) }

func handleFindCoordinator(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.FindCoordinatorRequest)
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	resp.Version = req.Version
	brokers := map[int32]BrokerInfo{}
	for _, b := range s.brokersFor(cc) {
		brokers[b.NodeID] = b
	}
	find := func(key string) (int32, string, int32, int16) {
		if req.CoordinatorType == 0 && !mayGroup(s, cc, kmsg.ACLOperationDescribe, key) {
			return -1, "", -1, kerr.GroupAuthorizationFailed.Code
		}
		if req.CoordinatorType == 1 && !may(s, cc, kmsg.ACLOperationDescribe, kmsg.ACLResourceTypeTransactionalId, key) {
			return -1, "", -1, kerr.TransactionalIDAuthorizationFailed.Code
		}
		if req.CoordinatorType != 0 {
			return -1, "", -1, kerr.CoordinatorNotAvailable.Code
		}
		node, code := s.backend.Coordinator(key)
		if code != 0 {
			return -1, "", -1, code
		}
		b, ok := brokers[node]
		if !ok {
			return -1, "", -1, kerr.CoordinatorNotAvailable.Code
		}
		return node, b.Host, b.Port, 0
	}
	if req.Version >= 4 {
		for _, key := range req.CoordinatorKeys {
			node, host, port, code := find(key)
			resp.Coordinators = append(resp.Coordinators, kmsg.FindCoordinatorResponseCoordinator{
				Key: key, NodeID: node, Host: host, Port: port, ErrorCode: code})
			s.metrics.countErr(10, code)
		}
	} else {
		resp.NodeID, resp.Host, resp.Port, resp.ErrorCode = find(req.CoordinatorKey)
		s.metrics.countErr(10, resp.ErrorCode)
	}
	return func() kmsg.Response { return resp }
}
