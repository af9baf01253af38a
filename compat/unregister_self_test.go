package compat

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestUnregisterBrokerServedBySelf: node 4 joins a 3-node cluster (a
// metadata learner holding no replica) and is sent UnregisterBroker for
// itself. Once the metadata leader applies the removal the peers forget
// node 4, so it could not wait for the removal to apply locally (it sat
// until the request's deadline); it must answer as soon as the leader has.
func TestUnregisterBrokerServedBySelf(t *testing.T) {
	c := startCluster(t, 3)
	joinFourth(t, c)
	cl := newFranz(t, c)
	req := kmsg.NewPtrUnregisterBrokerRequest()
	req.BrokerID = 4
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := req.RequestWith(ctx, cl.Broker(4))
	took := time.Since(start)
	if err != nil {
		t.Fatalf("UnregisterBroker 4 at node 4: %v after %v", err, took.Round(time.Millisecond))
	}
	if resp.ErrorCode != 0 {
		msg := ""
		if resp.ErrorMessage != nil {
			msg = *resp.ErrorMessage
		}
		t.Fatalf("UnregisterBroker 4 at node 4: error %d %q after %v", resp.ErrorCode, msg, took.Round(time.Millisecond))
	}
	t.Logf("UnregisterBroker 4 served by node 4 answered in %v", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("UnregisterBroker took %v, want well under 5 s", took.Round(time.Millisecond))
	}
	waitFor(t, 10*time.Second, "nodes 1-3 to stop listing node 4", func() bool {
		for id := 1; id <= 3; id++ {
			ns, err := c.nodesOf(id)
			if err != nil || slices.ContainsFunc(ns, func(n nodesJSON) bool { return n.ID == 4 }) {
				return false
			}
		}
		return true
	})
}
