package kafka

import (
	"context"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ACL is one access control entry bound to a resource pattern, as Kafka
// stores them. The codes are kmsg's: ACLResourceType, ACLResourcePatternType
// (LITERAL or PREFIXED), ACLOperation and ACLPermissionType (ALLOW or DENY).
type ACL struct {
	ResourceType int8   `json:"rt"`
	Name         string `json:"name"`
	Pattern      int8   `json:"pt"`
	Principal    string `json:"principal"` // "User:alice", or "User:*" for everyone
	Host         string `json:"host"`      // an address, or "*"
	Operation    int8   `json:"op"`
	Permission   int8   `json:"perm"`
}

// ACLFilter selects ACLs (DescribeAcls, DeleteAcls). A nil string matches
// anything; ANY matches every code; the pattern MATCH selects the ACLs that
// would apply to the resource Name.
type ACLFilter struct {
	ResourceType int8
	Name         *string
	Pattern      int8
	Principal    *string
	Host         *string
	Operation    int8
	Permission   int8
}

// ClusterResource is the name of the one CLUSTER resource.
const ClusterResource = "kafka-cluster"

// Authorizer is the method set a Backend implements when it enforces
// ACLs; a Backend without it allows everything. The ACLs are replicated
// in the cluster metadata, so every node decides alike.
type Authorizer interface {
	// ACLsEnabled is false when every request is allowed.
	ACLsEnabled() bool
	// Authorize decides whether p, connected from host, may do op on the
	// resource (a kmsg.ACLResourceType and its name).
	Authorize(p Principal, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType, name string) bool
	// AuthorizeAny decides whether p may do op on some resource of type rt
	// (Kafka 3's rule that WRITE on any topic allows an idempotent producer).
	AuthorizeAny(p Principal, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType) bool
	// CreateACLs adds the ACLs (already checked with CheckACL); adding one
	// that exists changes nothing.
	CreateACLs(ctx context.Context, acls []ACL) error
	// DescribeACLs lists the ACLs f matches.
	DescribeACLs(f ACLFilter) []ACL
	// DeleteACLs removes, per filter, the ACLs it matches and returns them.
	DeleteACLs(ctx context.Context, fs []ACLFilter) ([][]ACL, error)
}

// CheckACL says what is wrong with an ACL to be created ("" if nothing).
func CheckACL(a ACL) string {
	switch {
	case a.ResourceType < int8(kmsg.ACLResourceTypeTopic) || a.ResourceType > int8(kmsg.ACLResourceTypeUser):
		return "unknown or ANY resource type"
	case a.Pattern != int8(kmsg.ACLResourcePatternTypeLiteral) && a.Pattern != int8(kmsg.ACLResourcePatternTypePrefixed):
		return "the pattern type must be LITERAL or PREFIXED"
	case a.Operation < int8(kmsg.ACLOperationAll) || a.Operation > int8(kmsg.ACLOperationDescribeTokens):
		return "unknown or ANY operation"
	case a.Permission != int8(kmsg.ACLPermissionTypeAllow) && a.Permission != int8(kmsg.ACLPermissionTypeDeny):
		return "the permission must be ALLOW or DENY"
	case a.Name == "":
		return "empty resource name"
	case a.ResourceType == int8(kmsg.ACLResourceTypeCluster) && a.Name != ClusterResource:
		return "the cluster resource is named " + ClusterResource
	case a.Host == "":
		return "empty host (use * for every host)"
	}
	if typ, name, ok := strings.Cut(a.Principal, ":"); !ok || typ == "" || name == "" {
		return "principal " + a.Principal + " is not TYPE:NAME"
	}
	return ""
}

// Matches reports whether f selects a.
func (f ACLFilter) Matches(a ACL) bool {
	if f.ResourceType != int8(kmsg.ACLResourceTypeAny) && f.ResourceType != a.ResourceType {
		return false
	}
	if f.Principal != nil && *f.Principal != a.Principal ||
		f.Host != nil && *f.Host != a.Host ||
		f.Operation != int8(kmsg.ACLOperationAny) && f.Operation != a.Operation ||
		f.Permission != int8(kmsg.ACLPermissionTypeAny) && f.Permission != a.Permission {
		return false
	}
	switch kmsg.ACLResourcePatternType(f.Pattern) {
	case kmsg.ACLResourcePatternTypeAny:
		return f.Name == nil || *f.Name == a.Name
	case kmsg.ACLResourcePatternTypeMatch:
		return f.Name == nil || patternCovers(a, *f.Name)
	default:
		return f.Pattern == a.Pattern && (f.Name == nil || *f.Name == a.Name)
	}
}

// patternCovers reports whether a's resource pattern applies to the
// resource named name: the same literal name, the literal wildcard "*",
// or a prefix of it.
func patternCovers(a ACL, name string) bool {
	if a.Pattern == int8(kmsg.ACLResourcePatternTypePrefixed) {
		return strings.HasPrefix(name, a.Name)
	}
	return a.Name == name || a.Name == "*"
}

// implied lists, for each operation, the others whose ALLOW grants it:
// Kafka lets READ, WRITE, DELETE and ALTER imply DESCRIBE, and
// ALTER_CONFIGS imply DESCRIBE_CONFIGS.
var implied = map[kmsg.ACLOperation][]kmsg.ACLOperation{
	kmsg.ACLOperationDescribe: {kmsg.ACLOperationRead, kmsg.ACLOperationWrite,
		kmsg.ACLOperationDelete, kmsg.ACLOperationAlter},
	kmsg.ACLOperationDescribeConfigs: {kmsg.ACLOperationAlterConfigs},
}

// Decide applies acls to one request as Kafka's authorizer does: a DENY
// that matches wins; else a matching ALLOW (for op, ALL or an operation
// implying op) grants; a resource no ACL applies to at all is allowed only
// with allowIfNone (allow.everyone.if.no.acl.found).
func Decide(acls []ACL, p Principal, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType, name string, allowIfNone bool) bool {
	who, anyone := p.String(), p.Type+":*"
	seen, allowed := false, false
	for _, a := range acls {
		if a.ResourceType != int8(rt) || !patternCovers(a, name) {
			continue
		}
		seen = true
		if a.Principal != who && a.Principal != anyone || a.Host != host && a.Host != "*" {
			continue
		}
		aop := kmsg.ACLOperation(a.Operation)
		if a.Permission == int8(kmsg.ACLPermissionTypeDeny) {
			if aop == op || aop == kmsg.ACLOperationAll {
				return false
			}
			continue
		}
		if aop == op || aop == kmsg.ACLOperationAll {
			allowed = true
			continue
		}
		for _, imp := range implied[op] {
			if aop == imp {
				allowed = true
			}
		}
	}
	return allowed || !seen && allowIfNone
}

// DecideAny reports whether some resource of type rt would be allowed op
// for p: an ALLOW for p whose own resource pattern Decide also allows (so a
// DENY on that pattern, a covering prefix or "*" takes it back). With
// allowIfNone, a name no ACL covers would be allowed, so only a DENY of
// every name ("*") refuses.
func DecideAny(acls []ACL, p Principal, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType, allowIfNone bool) bool {
	who, anyone := p.String(), p.Type+":*"
	if allowIfNone {
		return Decide(acls, p, host, op, rt, "*", true) || !deniesAll(acls, who, anyone, host, op, rt)
	}
	for _, a := range acls {
		if a.ResourceType != int8(rt) {
			continue
		}
		if a.Permission != int8(kmsg.ACLPermissionTypeAllow) || a.Principal != who && a.Principal != anyone ||
			a.Host != host && a.Host != "*" {
			continue
		}
		if aop := kmsg.ACLOperation(a.Operation); aop != op && aop != kmsg.ACLOperationAll {
			continue
		}
		if Decide(acls, p, host, op, rt, a.Name, false) {
			return true
		}
	}
	return false
}

// deniesAll reports whether a DENY of op on the literal "*" applies to
// the principal (who, or anyone of its type) from host.
func deniesAll(acls []ACL, who, anyone, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType) bool {
	for _, a := range acls {
		if a.ResourceType == int8(rt) && a.Pattern == int8(kmsg.ACLResourcePatternTypeLiteral) && a.Name == "*" &&
			a.Permission == int8(kmsg.ACLPermissionTypeDeny) && (a.Principal == who || a.Principal == anyone) &&
			(a.Host == host || a.Host == "*") && (a.Operation == int8(op) || a.Operation == int8(kmsg.ACLOperationAll)) {
			return true
		}
	}
	return false
}

// ACLIndex holds ACLs by resource type and name so a decision looks only
// at the ACLs that can apply: the literal name, the literal "*", and the
// prefixes (which are few in practice). It is immutable once built.
type ACLIndex struct {
	byType map[int8]*aclsOfType
}

type aclsOfType struct {
	all      []ACL
	literal  map[string][]ACL // including "*"
	prefixed []ACL
}

// NewACLIndex indexes acls.
func NewACLIndex(acls []ACL) *ACLIndex {
	x := &ACLIndex{byType: map[int8]*aclsOfType{}}
	for _, a := range acls {
		t := x.byType[a.ResourceType]
		if t == nil {
			t = &aclsOfType{literal: map[string][]ACL{}}
			x.byType[a.ResourceType] = t
		}
		t.all = append(t.all, a)
		if a.Pattern == int8(kmsg.ACLResourcePatternTypePrefixed) {
			t.prefixed = append(t.prefixed, a)
		} else {
			t.literal[a.Name] = append(t.literal[a.Name], a)
		}
	}
	return x
}

// Decide is the package-level Decide over the ACLs that apply to name.
func (x *ACLIndex) Decide(p Principal, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType, name string, allowIfNone bool) bool {
	t := x.byType[int8(rt)]
	if t == nil {
		return allowIfNone
	}
	var cand []ACL
	cand = append(cand, t.literal[name]...)
	if name != "*" {
		cand = append(cand, t.literal["*"]...)
	}
	for _, a := range t.prefixed {
		if strings.HasPrefix(name, a.Name) {
			cand = append(cand, a)
		}
	}
	return Decide(cand, p, host, op, rt, name, allowIfNone)
}

// DecideAny is the package-level DecideAny over the ACLs of type rt.
func (x *ACLIndex) DecideAny(p Principal, host string, op kmsg.ACLOperation, rt kmsg.ACLResourceType, allowIfNone bool) bool {
	var all []ACL
	if t := x.byType[int8(rt)]; t != nil {
		all = t.all
	}
	return DecideAny(all, p, host, op, rt, allowIfNone)
}
