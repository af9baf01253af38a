package compat

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAdminApiVersionsServed: every key ApiVersions lists answers a request
// at its highest listed version (an empty or default one) without closing
// the connection, and the admin keys (DeleteRecords, configs, log dirs,
// reassignments) are listed.
func TestAdminApiVersionsServed(t *testing.T) {
	c := startCluster(t, 1)
	cl := newFranz(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	listed := map[int16]int16{}
	for _, k := range resp.ApiKeys {
		listed[k.ApiKey] = k.MaxVersion
		req := kmsg.RequestForKey(k.ApiKey)
		if req == nil {
			t.Fatalf("ApiVersions lists key %d, which kmsg does not know", k.ApiKey)
		}
		if k.MaxVersion > req.MaxVersion() {
			t.Fatalf("key %d listed up to v%d, beyond the protocol's v%d", k.ApiKey, k.MaxVersion, req.MaxVersion())
		}
		if k.ApiKey == 1 {
			req.(*kmsg.FetchRequest).MaxWaitMillis = 0
		}
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cl.Broker(1).Request(rctx, req)
		rcancel()
		if err != nil {
			t.Errorf("key %d (%s) v%d: %v", k.ApiKey, kmsg.NameForKey(k.ApiKey), req.GetVersion(), err)
		}
	}
	for key, min := range map[int16]int16{21: 2, 32: 4, 33: 2, 35: 4, 43: 2, 44: 1, 45: 1, 46: 0, 57: 2} {
		if listed[key] < min {
			t.Errorf("ApiVersions lists %s up to v%d, want v%d", kmsg.NameForKey(key), listed[key], min)
		}
	}
	if _, ok := listed[75]; !ok {
		t.Errorf("ApiVersions does not list DescribeTopicPartitions")
	}
}
