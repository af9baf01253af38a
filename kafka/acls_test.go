package kafka

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func testACL(rt kmsg.ACLResourceType, name string, pt kmsg.ACLResourcePatternType, who, host string, op kmsg.ACLOperation, perm kmsg.ACLPermissionType) ACL {
	return ACL{ResourceType: int8(rt), Name: name, Pattern: int8(pt), Principal: who, Host: host, Operation: int8(op), Permission: int8(perm)}
}

// TestDecide covers Kafka's rules with principals a test picks: deny wins,
// implied operations, wildcards, prefixes, hosts, and what happens where
// no ACL applies.
func TestDecide(t *testing.T) {
	const (
		T, G     = kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup
		lit, pre = kmsg.ACLResourcePatternTypeLiteral, kmsg.ACLResourcePatternTypePrefixed
		allow    = kmsg.ACLPermissionTypeAllow
		deny     = kmsg.ACLPermissionTypeDeny
	)
	alice, bob := Principal{Type: "User", Name: "alice"}, Principal{Type: "User", Name: "bob"}
	acls := []ACL{
		testACL(T, "orders", lit, "User:alice", "*", kmsg.ACLOperationRead, allow),
		testACL(T, "logs-", pre, "User:*", "*", kmsg.ACLOperationWrite, allow),
		testACL(T, "logs-secret", lit, "User:bob", "*", kmsg.ACLOperationAll, deny),
		testACL(T, "cfg", lit, "User:alice", "10.0.0.1", kmsg.ACLOperationAlterConfigs, allow),
		testACL(G, "*", lit, "User:alice", "*", kmsg.ACLOperationRead, allow),
		testACL(G, "g-", pre, "User:alice", "*", kmsg.ACLOperationRead, deny),
	}
	cases := []struct {
		p           Principal
		host        string
		op          kmsg.ACLOperation
		rt          kmsg.ACLResourceType
		name        string
		allowIfNone bool
		want        bool
	}{
		{alice, "1.2.3.4", kmsg.ACLOperationRead, T, "orders", false, true},
		{alice, "1.2.3.4", kmsg.ACLOperationDescribe, T, "orders", false, true}, // READ implies DESCRIBE
		{alice, "1.2.3.4", kmsg.ACLOperationWrite, T, "orders", false, false},
		{bob, "1.2.3.4", kmsg.ACLOperationRead, T, "orders", false, false},
		{bob, "1.2.3.4", kmsg.ACLOperationRead, T, "orders", true, false}, // an ACL exists: no fallback
		{bob, "1.2.3.4", kmsg.ACLOperationWrite, T, "logs-app", false, true},
		{bob, "1.2.3.4", kmsg.ACLOperationWrite, T, "logs-secret", false, false}, // DENY ALL wins
		{alice, "1.2.3.4", kmsg.ACLOperationWrite, T, "logs-secret", false, true},
		{bob, "1.2.3.4", kmsg.ACLOperationRead, T, "logs-app", false, false},
		{alice, "10.0.0.1", kmsg.ACLOperationDescribeConfigs, T, "cfg", false, true}, // ALTER_CONFIGS implies it
		{alice, "10.0.0.2", kmsg.ACLOperationDescribeConfigs, T, "cfg", false, false},
		{alice, "10.0.0.1", kmsg.ACLOperationAlter, T, "cfg", false, false},
		{alice, "1.2.3.4", kmsg.ACLOperationRead, G, "anything", false, true},
		{alice, "1.2.3.4", kmsg.ACLOperationRead, G, "g-1", false, false},
		{alice, "1.2.3.4", kmsg.ACLOperationDescribe, G, "g-1", false, true}, // a READ deny does not deny DESCRIBE
		{bob, "1.2.3.4", kmsg.ACLOperationRead, T, "nobody-knows", false, false},
		{bob, "1.2.3.4", kmsg.ACLOperationRead, T, "nobody-knows", true, true},
	}
	idx := NewACLIndex(acls)
	for _, c := range cases {
		if got := Decide(acls, c.p, c.host, c.op, c.rt, c.name, c.allowIfNone); got != c.want {
			t.Errorf("%s from %s: %v on %v %q (allowIfNone %v) = %v, want %v", c.p, c.host, c.op, c.rt, c.name, c.allowIfNone, got, c.want)
		}
		if got := idx.Decide(c.p, c.host, c.op, c.rt, c.name, c.allowIfNone); got != c.want {
			t.Errorf("index: %s from %s: %v on %v %q (allowIfNone %v) = %v, want %v", c.p, c.host, c.op, c.rt, c.name, c.allowIfNone, got, c.want)
		}
	}
	if !DecideAny(acls, bob, "1.2.3.4", kmsg.ACLOperationWrite, T, false) {
		t.Error("bob may write logs-*: WRITE on some topic")
	}
	if DecideAny(acls, alice, "1.2.3.4", kmsg.ACLOperationAlter, T, false) {
		t.Error("alice may ALTER no topic")
	}
}

// TestFilterMatches covers the filters of DescribeAcls and DeleteAcls:
// ANY, MATCH (what applies to a name), LITERAL and PREFIXED.
func TestFilterMatches(t *testing.T) {
	lit := testACL(kmsg.ACLResourceTypeTopic, "a-b", kmsg.ACLResourcePatternTypeLiteral, "User:x", "*", kmsg.ACLOperationRead, kmsg.ACLPermissionTypeAllow)
	wild := testACL(kmsg.ACLResourceTypeTopic, "*", kmsg.ACLResourcePatternTypeLiteral, "User:x", "*", kmsg.ACLOperationRead, kmsg.ACLPermissionTypeAllow)
	pre := testACL(kmsg.ACLResourceTypeTopic, "a-", kmsg.ACLResourcePatternTypePrefixed, "User:y", "*", kmsg.ACLOperationWrite, kmsg.ACLPermissionTypeDeny)
	name, who := "a-b", "User:y"
	f := func(pt kmsg.ACLResourcePatternType, n *string) ACLFilter {
		return ACLFilter{ResourceType: int8(kmsg.ACLResourceTypeTopic), Name: n, Pattern: int8(pt),
			Operation: int8(kmsg.ACLOperationAny), Permission: int8(kmsg.ACLPermissionTypeAny)}
	}
	cases := []struct {
		f    ACLFilter
		want [3]bool // lit, wild, pre
	}{
		{f(kmsg.ACLResourcePatternTypeAny, nil), [3]bool{true, true, true}},
		{f(kmsg.ACLResourcePatternTypeAny, &name), [3]bool{true, false, false}},
		{f(kmsg.ACLResourcePatternTypeMatch, &name), [3]bool{true, true, true}},
		{f(kmsg.ACLResourcePatternTypeLiteral, nil), [3]bool{true, true, false}},
		{f(kmsg.ACLResourcePatternTypePrefixed, nil), [3]bool{false, false, true}},
		{func() ACLFilter { x := f(kmsg.ACLResourcePatternTypeAny, nil); x.Principal = &who; return x }(), [3]bool{false, false, true}},
		{func() ACLFilter {
			x := f(kmsg.ACLResourcePatternTypeAny, nil)
			x.Permission = int8(kmsg.ACLPermissionTypeAllow)
			return x
		}(), [3]bool{true, true, false}},
	}
	for i, c := range cases {
		for j, a := range []ACL{lit, wild, pre} {
			if got := c.f.Matches(a); got != c.want[j] {
				t.Errorf("case %d, acl %d: %v, want %v", i, j, got, c.want[j])
			}
		}
	}
}

// BenchmarkDecide is one decision among 1,000 ACLs: by a scan of all (none
// applies), and through the index (one applies).
func BenchmarkDecide(b *testing.B) {
	var acls []ACL
	for i := 0; i < 1000; i++ {
		acls = append(acls, testACL(kmsg.ACLResourceTypeTopic, "t-"+string(rune('a'+i%26))+string(rune('a'+i/26)), kmsg.ACLResourcePatternTypeLiteral,
			"User:x", "*", kmsg.ACLOperationWrite, kmsg.ACLPermissionTypeAllow))
	}
	p := Principal{Type: "User", Name: "y"}
	b.Run("scan", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			Decide(acls, p, "127.0.0.1", kmsg.ACLOperationWrite, kmsg.ACLResourceTypeTopic, "orders", false)
		}
	})
	idx := NewACLIndex(acls)
	b.Run("index", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			idx.Decide(p, "127.0.0.1", kmsg.ACLOperationWrite, kmsg.ACLResourceTypeTopic, "t-ab", false)
		}
	})
}
