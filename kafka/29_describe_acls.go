package kafka

import (
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DescribeAcls v0-3. v1 pattern types (KIP-290; v0 filters are LITERAL);
// v2 flexible; v3 the USER resource type. Needs DESCRIBE on the cluster.
// Without ACLs enabled it is SECURITY_DISABLED, as in Kafka without an
// authorizer.
func init() { register(29, 0, 3, handleDescribeACLs) }

func handleDescribeACLs(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DescribeACLsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeACLsResponse)
	resp.Version = req.Version
	f := ACLFilter{ResourceType: int8(req.ResourceType), Name: req.ResourceName, Pattern: int8(req.ResourcePatternType),
		Principal: req.Principal, Host: req.Host, Operation: int8(req.Operation), Permission: int8(req.PermissionType)}
	if req.Version == 0 {
		f.Pattern = int8(kmsg.ACLResourcePatternTypeLiteral)
	}
	a := authorizer(s)
	switch {
	case a == nil:
		resp.ErrorCode = kerr.SecurityDisabled.Code
	case !mayCluster(s, cc, kmsg.ACLOperationDescribe):
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
	default:
		if msg := checkFilter(f); msg != "" {
			resp.ErrorCode, resp.ErrorMessage = kerr.InvalidRequest.Code, &msg
			break
		}
		resp.Resources = groupACLs(a.DescribeACLs(f))
	}
	s.metrics.countErr(29, resp.ErrorCode)
	return func() kmsg.Response { return resp }
}

// checkFilter says what is wrong with a filter ("" if nothing).
func checkFilter(f ACLFilter) string {
	switch {
	case f.ResourceType <= int8(kmsg.ACLResourceTypeUnknown) || f.ResourceType > int8(kmsg.ACLResourceTypeUser):
		return "unknown resource type"
	case f.Pattern <= int8(kmsg.ACLResourcePatternTypeUnknown) || f.Pattern > int8(kmsg.ACLResourcePatternTypePrefixed):
		return "unknown pattern type"
	case f.Operation <= int8(kmsg.ACLOperationUnknown) || f.Operation > int8(kmsg.ACLOperationDescribeTokens):
		return "unknown operation"
	case f.Permission <= int8(kmsg.ACLPermissionTypeUnknown) || f.Permission > int8(kmsg.ACLPermissionTypeAllow):
		return "unknown permission type"
	}
	return ""
}

// groupACLs puts ACLs under their resource patterns, in a stable order.
func groupACLs(acls []ACL) []kmsg.DescribeACLsResponseResource {
	type key struct {
		rt, pt int8
		name   string
	}
	byRes := map[key][]kmsg.DescribeACLsResponseResourceACL{}
	var keys []key
	for _, a := range acls {
		k := key{a.ResourceType, a.Pattern, a.Name}
		if _, ok := byRes[k]; !ok {
			keys = append(keys, k)
		}
		byRes[k] = append(byRes[k], kmsg.DescribeACLsResponseResourceACL{Principal: a.Principal, Host: a.Host,
			Operation: kmsg.ACLOperation(a.Operation), PermissionType: kmsg.ACLPermissionType(a.Permission)})
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].rt != keys[j].rt {
			return keys[i].rt < keys[j].rt
		}
		if keys[i].pt != keys[j].pt {
			return keys[i].pt < keys[j].pt
		}
		return keys[i].name < keys[j].name
	})
	out := make([]kmsg.DescribeACLsResponseResource, 0, len(keys))
	for _, k := range keys {
		out = append(out, kmsg.DescribeACLsResponseResource{ResourceType: kmsg.ACLResourceType(k.rt), ResourceName: k.name,
			ResourcePatternType: kmsg.ACLResourcePatternType(k.pt), ACLs: byRes[k]})
	}
	return out
}
