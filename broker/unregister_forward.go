package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A broker that serves UnregisterBroker for itself cannot wait for its
// removal to apply locally: once the metadata leader applies it, the
// peers forget the broker (syncPeers) and its learner is dropped, so the
// commit may never reach it and the request would sit until its
// deadline. It sends the request on to the metadata leader instead and
// relays the leader's answer, given once the leader has applied it.

// forwardUnregister sends UnregisterBroker for id to the metadata leader.
// ok is false when it was not sent or no answer came (this node leads or
// no leader is known or alive, ACLs are on so an anonymous forward would
// be refused, a dial or request error); the caller then proposes itself.
// Sending it twice is harmless: a second removal answers
// BROKER_ID_NOT_REGISTERED, which the caller's client counts as done.
func (b *Broker) forwardUnregister(ctx context.Context, id int32) (code int16, msg string, ok bool) {
	leader := int32(b.meta.Status().Leader)
	if b.cfg.Cluster.ACLsEnabled || leader == 0 || leader == b.cfg.NodeID || !b.host.PeerAlive(uint64(leader)) {
		return 0, "", false
	}
	cl, err := b.fwd.client(leader)
	if err != nil {
		return 0, "", false
	}
	seeds := cl.SeedBrokers()
	if len(seeds) == 0 {
		return 0, "", false
	}
	req := kmsg.NewPtrUnregisterBrokerRequest()
	req.BrokerID = id
	kresp, err := seeds[0].Request(ctx, req)
	if err != nil {
		b.logger.Debug("unregister forward failed", "node", id, "to", leader, "err", err)
		return 0, "", false
	}
	resp, isResp := kresp.(*kmsg.UnregisterBrokerResponse)
	if !isResp {
		return 0, "", false
	}
	if resp.ErrorMessage != nil {
		msg = *resp.ErrorMessage
	}
	if resp.ErrorCode == 0 {
		b.logger.Info("broker removed from the cluster", "node", id, "by", leader)
	}
	return resp.ErrorCode, msg, true
}
