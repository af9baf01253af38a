package broker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/chronik-dev/chronik/auth"
	"github.com/chronik-dev/chronik/kafka"
)

// saslNode starts one node with a SASL_PLAINTEXT listener that knows the
// users (SCRAM-SHA-256, the password is the name), its config changed by
// with; it returns the listener's address.
func saslNode(t *testing.T, with func(*Config), users ...string) (*Broker, string) {
	t.Helper()
	cfg := oneNodeConfig(t)
	with(&cfg)
	saslAddr := loopbackPorts(t, 1)[0]
	cfg.Cluster.Nodes[0].Listeners = []ListenerSpec{{Name: "SASL", Protocol: "SASL_PLAINTEXT", Advertised: saslAddr}}
	cfg.BootstrapUsers = map[string][]auth.Credential{}
	for _, u := range users {
		c, err := auth.NewCredential(auth.ScramSHA256, u, auth.MinIterations)
		if err != nil {
			t.Fatal(err)
		}
		cfg.BootstrapUsers[u] = []auth.Credential{c}
	}
	return startNode(t, cfg), saslAddr
}

func saslClient(t *testing.T, addr, user string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.RequestRetries(0),
		kgo.SASL(scram.Auth{User: user, Pass: user}.AsSha256Mechanism())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func userACL(who string, rt kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kafka.ACL {
	return anonACL(rt, name, kmsg.ACLResourcePatternTypeLiteral, op, kmsg.ACLPermissionTypeAllow, "User:"+who, "*")
}

func ops(xs ...kmsg.ACLOperation) []kmsg.ACLOperation {
	slices.Sort(xs)
	return xs
}

func sortedOps(xs []kmsg.ACLOperation) []kmsg.ACLOperation {
	return ops(slices.Clone(xs)...)
}

// TestAuthorizedOperations (KIP-430): two principals with different ACLs
// see, through kadm, the operations each may do on a topic, a group and the
// cluster, with the implied ones (READ implies DESCRIBE, ALTER_CONFIGS
// implies DESCRIBE_CONFIGS); a value not asked for is omitted.
func TestAuthorizedOperations(t *testing.T) {
	b, addr := saslNode(t, func(c *Config) { c.Cluster.ACLsEnabled = true }, "alice", "bob")
	newTopic(t, b, "ops-topic")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	T, G, C := kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup, kmsg.ACLResourceTypeCluster
	R, W, D := kmsg.ACLOperationRead, kmsg.ACLOperationWrite, kmsg.ACLOperationDescribe
	if err := b.CreateACLs(ctx, []kafka.ACL{
		userACL("alice", T, "ops-topic", R), userACL("alice", T, "ops-topic", W),
		userACL("alice", G, "ops-group", R), userACL("alice", C, kafka.ClusterResource, D),
		userACL("alice", C, kafka.ClusterResource, kmsg.ACLOperationIdempotentWrite),
		userACL("bob", T, "ops-topic", kmsg.ACLOperationAlterConfigs),
		userACL("bob", G, "ops-group", kmsg.ACLOperationDelete),
		userACL("bob", C, kafka.ClusterResource, kmsg.ACLOperationIdempotentWrite),
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ topic, group, cluster []kmsg.ACLOperation }{
		"alice": {ops(R, W, D), ops(R, D), ops(D, kmsg.ACLOperationIdempotentWrite)},
		// ALTER_CONFIGS implies DESCRIBE_CONFIGS but not DESCRIBE; DELETE
		// implies DESCRIBE; no DESCRIBE on the cluster shows nothing there.
		"bob": {ops(kmsg.ACLOperationAlterConfigs, kmsg.ACLOperationDescribeConfigs), ops(kmsg.ACLOperationDelete, D), nil},
	}
	for user, w := range want {
		cl := saslClient(t, addr, user)
		adm := kadm.NewClient(cl)
		md, err := adm.Metadata(kadm.WithAuthorizedOps(ctx), "ops-topic")
		if user == "bob" {
			// bob may not describe the topic: Metadata refuses it.
			if err == nil {
				t.Fatalf("bob: Metadata of a topic he may not describe succeeded: %+v", md.Topics)
			}
		} else if err != nil {
			t.Fatalf("%s: Metadata: %v", user, err)
		} else if got := sortedOps(md.Topics["ops-topic"].AuthorizedOperations); !slices.Equal(got, w.topic) {
			t.Errorf("%s: topic operations %v, want %v", user, got, w.topic)
		}

		groups, err := adm.DescribeGroups(ctx, "ops-group")
		if err != nil {
			t.Fatalf("%s: DescribeGroups: %v", user, err)
		}
		if got := sortedOps(groups["ops-group"].AuthorizedOperations); !slices.Equal(got, w.group) {
			t.Errorf("%s: group operations %v, want %v", user, got, w.group)
		}

		dc := kmsg.NewPtrDescribeClusterRequest()
		dc.IncludeClusterAuthorizedOperations = true
		dresp, err := dc.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("%s: DescribeCluster: %v", user, err)
		}
		if got := sortedOps(kadm.DecodeACLOperations(dresp.ClusterAuthorizedOperations)); !slices.Equal(got, w.cluster) {
			t.Errorf("%s: cluster operations %v (bits %d), want %v", user, got, dresp.ClusterAuthorizedOperations, w.cluster)
		}
		if user == "bob" && dresp.ClusterAuthorizedOperations != 0 {
			t.Errorf("bob: cluster operations bits %d, want 0 (no DESCRIBE on the cluster)", dresp.ClusterAuthorizedOperations)
		}
		// Metadata v10 still carries the cluster's operations.
		v10 := kversion.Stable()
		v10.SetMaxKeyVersion(3, 10)
		mreq := kmsg.NewPtrMetadataRequest()
		mreq.IncludeClusterAuthorizedOperations = true
		mreq.Topics = []kmsg.MetadataRequestTopic{}
		mresp, err := saslClient(t, addr, user, kgo.MaxVersions(v10)).Broker(1).Request(ctx, mreq)
		if err != nil {
			t.Fatalf("%s: Metadata v10: %v", user, err)
		}
		if got := mresp.(*kmsg.MetadataResponse).AuthorizedOperations; got != dresp.ClusterAuthorizedOperations {
			t.Errorf("%s: Metadata v10 cluster operations %d, DescribeCluster %d", user, got, dresp.ClusterAuthorizedOperations)
		}
	}

	// Not asked for: omitted, as Kafka.
	cl := saslClient(t, addr, "alice")
	mreq := kmsg.NewPtrMetadataRequest()
	mreq.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("ops-topic")}}
	mresp, err := mreq.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if got := mresp.Topics[0].AuthorizedOperations; got != -2147483648 {
		t.Errorf("topic operations not asked for: %d, want -2147483648", got)
	}
	dreq := kmsg.NewPtrDescribeGroupsRequest()
	dreq.Groups = []string{"ops-group"}
	dresp, err := dreq.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if got := dresp.Groups[0].AuthorizedOperations; got != -2147483648 {
		t.Errorf("group operations not asked for: %d, want -2147483648", got)
	}
}

// TestAuthorizedOperationsWithoutACLs: with ACLs off every operation a
// resource type supports is reported.
func TestAuthorizedOperationsWithoutACLs(t *testing.T) {
	cfg := oneNodeConfig(t)
	b := startNode(t, cfg)
	newTopic(t, b, "open-topic")
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Cluster.Nodes[0].Kafka), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).Metadata(kadm.WithAuthorizedOps(ctx), "open-topic")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(md.Topics["open-topic"].AuthorizedOperations); got != 8 {
		t.Errorf("topic operations without ACLs: %v, want all 8", md.Topics["open-topic"].AuthorizedOperations)
	}
	dc := kmsg.NewPtrDescribeClusterRequest()
	dc.IncludeClusterAuthorizedOperations = true
	dresp, err := dc.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(kadm.DecodeACLOperations(dresp.ClusterAuthorizedOperations)); got != 7 {
		t.Errorf("cluster operations without ACLs: bits %d, want all 7", dresp.ClusterAuthorizedOperations)
	}
}
