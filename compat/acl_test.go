package compat

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const anonymous = "User:ANONYMOUS"

// mustACLs creates b's ACLs with kadm and fails on any error.
func mustACLs(t *testing.T, ctx context.Context, adm *kadm.Client, b *kadm.ACLBuilder) {
	t.Helper()
	res, err := adm.CreateACLs(ctx, b)
	if err != nil {
		t.Fatalf("CreateACLs: %v", err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("CreateACLs %s %v %s: %v %s", r.Principal, r.Operation, r.Name, r.Err, r.ErrMessage)
		}
	}
}

// produceErr produces one record to topic and returns the outcome.
func produceErr(ctx context.Context, cl *kgo.Client, topic string) error {
	return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("v")}).FirstErr()
}

// metadataOn asks node id alone for topic (nil: every topic) and returns
// the topics answered, by name, with their error codes.
func metadataOn(t *testing.T, ctx context.Context, cl *kgo.Client, id int32, topic *string) map[string]int16 {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	if topic != nil {
		req.Topics = []kmsg.MetadataRequestTopic{{Topic: topic}}
	}
	resp, err := cl.Broker(int(id)).Request(ctx, req)
	if err != nil {
		t.Fatalf("Metadata from node %d: %v", id, err)
	}
	out := map[string]int16{}
	for _, tp := range resp.(*kmsg.MetadataResponse).Topics {
		if tp.Topic != nil {
			out[*tp.Topic] = tp.ErrorCode
		}
	}
	return out
}

// TestACLsEnforcedClusterWide: on a 3-node cluster with ACLs on and
// allow_everyone_if_no_acl_found, the anonymous principal manages ACLs
// with kadm; each kind (literal, prefixed, DENY over a wildcard ALLOW,
// groups) takes effect on every node, is listed by DescribeAcls and goes
// away with DeleteAcls.
func TestACLsEnforcedClusterWide(t *testing.T) {
	c := startCluster(t, 3, withTOML("acls_enabled = true\nallow_everyone_if_no_acl_found = true"))
	cl := newFranz(t, c, kgo.ProducerBatchMaxBytes(1<<20), kgo.RecordRetries(2), kgo.RequestRetries(2))
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, name := range []string{"open", "secret-1", "ro", "hidden"} {
		if _, err := adm.CreateTopic(ctx, 1, 3, nil, name); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	// Keep the right to manage ACLs once the cluster has ACLs of its own.
	mustACLs(t, ctx, adm, kadm.NewACLs().Clusters().Allow(anonymous).Operations(kadm.OpAlter, kadm.OpDescribe))
	mustACLs(t, ctx, adm, kadm.NewACLs().Topics("secret-").ResourcePatternType(kadm.ACLPatternPrefixed).
		Deny(anonymous).Operations(kadm.OpWrite))
	mustACLs(t, ctx, adm, kadm.NewACLs().Topics("ro").Allow(anonymous).Operations(kadm.OpRead))
	mustACLs(t, ctx, adm, kadm.NewACLs().Topics("hidden").Allow("User:*").Operations(kadm.OpAll).
		Deny(anonymous).Operations(kadm.OpAll))
	// Kafka's rule: an ACL on a resource ends allow-if-none for it, so
	// auto- topics need DESCRIBE to be answered at all.
	mustACLs(t, ctx, adm, kadm.NewACLs().Topics("auto-").ResourcePatternType(kadm.ACLPatternPrefixed).
		Deny(anonymous).Operations(kadm.OpCreate))
	mustACLs(t, ctx, adm, kadm.NewACLs().Topics("auto-").ResourcePatternType(kadm.ACLPatternPrefixed).
		Allow(anonymous).Operations(kadm.OpDescribe))
	mustACLs(t, ctx, adm, kadm.NewACLs().Groups("nogroup").Deny(anonymous).Operations(kadm.OpAll))

	if err := produceErr(ctx, cl, "open"); err != nil {
		t.Fatalf("produce to open: %v", err)
	}
	for _, topic := range []string{"secret-1", "ro"} {
		if err := produceErr(ctx, cl, topic); !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Fatalf("produce to %s: %v, want TOPIC_AUTHORIZATION_FAILED", topic, err)
		}
	}
	// READ implies DESCRIBE: the end offsets of ro can be listed.
	ends, err := adm.ListEndOffsets(ctx, "ro")
	if err != nil || ends.Error() != nil {
		t.Fatalf("ListEndOffsets ro: %v %v", err, ends.Error())
	}
	// Every node hides hidden from a listing and refuses it by name.
	for _, nd := range c.nodes {
		id := int32(nd.id)
		all := metadataOn(t, ctx, cl, id, nil)
		if _, ok := all["hidden"]; ok {
			t.Fatalf("node %d lists the topic the principal may not describe", id)
		}
		if _, ok := all["open"]; !ok {
			t.Fatalf("node %d does not list open: %v", id, all)
		}
		if got := metadataOn(t, ctx, cl, id, kmsg.StringPtr("hidden")); got["hidden"] != kerr.TopicAuthorizationFailed.Code {
			t.Fatalf("node %d: Metadata for hidden: %v, want TOPIC_AUTHORIZATION_FAILED", id, got)
		}
	}
	// No CREATE, no auto-create.
	if code, _ := metadataFor(t, cl, "auto-x", true); code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("Metadata creating auto-x: error %d, want UNKNOWN_TOPIC_OR_PARTITION", code)
	}
	if topicExists(t, c, "auto-x") {
		t.Fatal("auto-x was created without CREATE")
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "auto-y"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("CreateTopics auto-y: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	// kadm finds the coordinator first, which is refused already.
	described, err := adm.DescribeGroups(ctx, "nogroup")
	if err == nil {
		err = described["nogroup"].Err
	}
	if !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("DescribeGroups nogroup: %v, want GROUP_AUTHORIZATION_FAILED", err)
	}
	// A consumer of the group is refused too, and says so.
	cons := newFranz(t, c, kgo.ConsumerGroup("nogroup"), kgo.ConsumeTopics("open"))
	fetches := cons.PollFetches(ctx)
	if err := fetches.Err(); !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("consumer of nogroup: %v, want GROUP_AUTHORIZATION_FAILED", err)
	}

	list, err := adm.DescribeACLs(ctx, kadm.NewACLs().AnyResource().ResourcePatternType(kadm.ACLPatternAny).
		Allow().AllowHosts().Deny().DenyHosts().Operations(kadm.OpAny))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range list {
		if r.Err != nil {
			t.Fatalf("DescribeACLs: %v", r.Err)
		}
		n += len(r.Described)
	}
	if n != 9 {
		t.Fatalf("DescribeACLs lists %d ACLs, want 9: %+v", n, list)
	}
	del, err := adm.DeleteACLs(ctx, kadm.NewACLs().Topics("secret-").ResourcePatternType(kadm.ACLPatternPrefixed).
		Deny(anonymous).DenyHosts().Operations(kadm.OpAny))
	if err != nil || len(del) != 1 || del[0].Err != nil || len(del[0].Deleted) != 1 {
		t.Fatalf("DeleteACLs secret-: %v %+v", err, del)
	}
	if err := produceErr(ctx, cl, "secret-1"); err != nil {
		t.Fatalf("produce to secret-1 after deleting the DENY: %v", err)
	}
}

// TestACLsDefaultDeny: with ACLs on and nothing else, the anonymous
// principal may do nothing: topics are hidden, produce and create are
// refused, and so are the ACL APIs. A super user may do everything.
func TestACLsDefaultDeny(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	su := startCluster(t, 1, withTOML("acls_enabled = true\nsuper_users = [\"User:ANONYMOUS\"]"))
	scl := newFranz(t, su)
	sadm := kadm.NewClient(scl)
	if _, err := sadm.CreateTopic(ctx, 1, 1, nil, "mine"); err != nil {
		t.Fatalf("super user CreateTopic: %v", err)
	}
	if err := produceErr(ctx, scl, "mine"); err != nil {
		t.Fatalf("super user produce: %v", err)
	}
	mustACLs(t, ctx, sadm, kadm.NewACLs().Topics("x").Allow("User:bob").Operations(kadm.OpRead))

	c := startCluster(t, 1, withTOML("acls_enabled = true"))
	cl := newFranz(t, c, kgo.RecordRetries(1), kgo.RequestRetries(1))
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "t"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("CreateTopic: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	if got := metadataOn(t, ctx, cl, 1, nil); len(got) != 0 {
		t.Fatalf("Metadata lists %v to a principal that may describe nothing", got)
	}
	if err := produceErr(ctx, cl, "t"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	res, err := adm.CreateACLs(ctx, kadm.NewACLs().Topics("t").Allow(anonymous).Operations(kadm.OpRead))
	if err != nil || len(res) != 1 || !errors.Is(res[0].Err, kerr.ClusterAuthorizationFailed) {
		t.Fatalf("CreateACLs without ALTER on the cluster: %v %+v", err, res)
	}
}

// TestACLsOffByDefault: without acls_enabled nothing is refused and the
// ACL APIs answer SECURITY_DISABLED, as Kafka without an authorizer.
func TestACLsOffByDefault(t *testing.T) {
	c := startCluster(t, 1)
	adm := kadm.NewClient(newFranz(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := adm.DescribeACLs(ctx, kadm.NewACLs().AnyResource().ResourcePatternType(kadm.ACLPatternAny).
		Allow().AllowHosts().Deny().DenyHosts().Operations(kadm.OpAny))
	if err != nil || len(res) != 1 || !errors.Is(res[0].Err, kerr.SecurityDisabled) {
		t.Fatalf("DescribeACLs with ACLs off: %v %+v, want SECURITY_DISABLED", err, res)
	}
}

// TestACLsSarama: sarama's ClusterAdmin creates, lists and deletes ACLs
// with old request versions (v0 for Kafka 1.x, v1 for 2.x) and with both
// pattern types.
func TestACLsSarama(t *testing.T) {
	c := startCluster(t, 1, withTOML("acls_enabled = true\nsuper_users = [\"User:ANONYMOUS\"]"))
	for _, v := range []sarama.KafkaVersion{sarama.V1_1_0_0, sarama.V2_8_0_0} {
		cfg := saramaConfig()
		cfg.Version = v
		adm, err := sarama.NewClusterAdminFromClient(newSaramaClient(t, c, cfg))
		if err != nil {
			t.Fatal(err)
		}
		res := sarama.Resource{ResourceType: sarama.AclResourceTopic, ResourceName: "s-" + v.String(),
			ResourcePatternType: sarama.AclPatternLiteral}
		acl := sarama.Acl{Principal: "User:carol", Host: "*", Operation: sarama.AclOperationRead, PermissionType: sarama.AclPermissionAllow}
		if err := adm.CreateACL(res, acl); err != nil {
			t.Fatalf("%s: CreateACL: %v", v, err)
		}
		if v.IsAtLeast(sarama.V2_0_0_0) {
			pre := sarama.Resource{ResourceType: sarama.AclResourceGroup, ResourceName: "g-", ResourcePatternType: sarama.AclPatternPrefixed}
			if err := adm.CreateACL(pre, acl); err != nil {
				t.Fatalf("%s: CreateACL prefixed: %v", v, err)
			}
		}
		principal := "User:carol"
		filter := sarama.AclFilter{ResourceType: sarama.AclResourceAny, Principal: &principal,
			Operation: sarama.AclOperationAny, PermissionType: sarama.AclPermissionAny, ResourcePatternTypeFilter: sarama.AclPatternAny}
		if !v.IsAtLeast(sarama.V2_0_0_0) {
			filter.ResourcePatternTypeFilter = sarama.AclPatternLiteral
		}
		got, err := adm.ListAcls(filter)
		if err != nil {
			t.Fatalf("%s: ListAcls: %v", v, err)
		}
		found := false
		for _, r := range got {
			found = found || r.ResourceName == res.ResourceName && len(r.Acls) == 1
		}
		if !found {
			t.Fatalf("%s: ListAcls does not list the new ACL: %+v", v, got)
		}
		gone, err := adm.DeleteACL(filter, false)
		if err != nil || len(gone) == 0 {
			t.Fatalf("%s: DeleteACL: %v %+v", v, err, gone)
		}
		if left, err := adm.ListAcls(filter); err != nil || len(left) != 0 {
			t.Fatalf("%s: ACLs left after DeleteACL: %v %+v", v, err, left)
		}
		adm.Close()
	}
}
