package kafka

import (
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DescribeClientQuotas v0-1 (KIP-546). v1 flexible. Every component names
// an entity type that the entity must have, with its name equal to Match
// (EXACT), the default (DEFAULT) or anything (ANY); Strict leaves out
// entities with other types besides.
func init() { register(48, 0, 1, handleDescribeClientQuotas) }

func handleDescribeClientQuotas(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DescribeClientQuotasRequest)
	resp := req.ResponseKind().(*kmsg.DescribeClientQuotasResponse)
	resp.Version = req.Version
	// Kafka's rule: DESCRIBE_CONFIGS on the cluster.
	if code := clusterErr(s, cc, kmsg.ACLOperationDescribeConfigs); code != 0 {
		resp.ErrorCode = code
		s.metrics.countErr(48, code)
		return func() kmsg.Response { return resp }
	}
	if code, msg := checkQuotaFilter(req.Components); code != 0 {
		resp.ErrorCode, resp.ErrorMessage = code, &msg
		s.metrics.countErr(48, code)
		return func() kmsg.Response { return resp }
	}
	for _, e := range s.backend.ClientQuotas() {
		if !quotaFilterMatches(req.Components, req.Strict, e.Entity) {
			continue
		}
		re := kmsg.DescribeClientQuotasResponseEntry{}
		for _, p := range e.Entity {
			re.Entity = append(re.Entity, kmsg.DescribeClientQuotasResponseEntryEntity{Type: p.Type, Name: p.Name})
		}
		keys := make([]string, 0, len(e.Values))
		for k := range e.Values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			re.Values = append(re.Values, kmsg.DescribeClientQuotasResponseEntryValue{Key: k, Value: e.Values[k]})
		}
		resp.Entries = append(resp.Entries, re)
	}
	return func() kmsg.Response { return resp }
}

// checkQuotaFilter refuses what Kafka refuses: unknown entity types, a
// type named twice, a Match where the match type takes none.
func checkQuotaFilter(cs []kmsg.DescribeClientQuotasRequestComponent) (int16, string) {
	seen := map[string]bool{}
	for _, c := range cs {
		if c.EntityType != QuotaUser && c.EntityType != QuotaClientID {
			return kerr.InvalidRequest.Code, "unsupported quota entity type " + c.EntityType
		}
		if seen[c.EntityType] {
			return kerr.InvalidRequest.Code, "quota entity type " + c.EntityType + " named twice"
		}
		seen[c.EntityType] = true
		switch c.MatchType {
		case kmsg.QuotasMatchTypeExact:
			if c.Match == nil {
				return kerr.InvalidRequest.Code, "an exact match needs a name"
			}
		case kmsg.QuotasMatchTypeDefault, kmsg.QuotasMatchTypeAny:
			if c.Match != nil {
				return kerr.InvalidRequest.Code, "a default or any match takes no name"
			}
		default:
			return kerr.InvalidRequest.Code, "unknown match type"
		}
	}
	return 0, ""
}

func quotaFilterMatches(cs []kmsg.DescribeClientQuotasRequestComponent, strict bool, entity []QuotaEntityPart) bool {
	if strict && len(entity) != len(cs) {
		return false
	}
	for _, c := range cs {
		var part *QuotaEntityPart
		for i := range entity {
			if entity[i].Type == c.EntityType {
				part = &entity[i]
			}
		}
		if part == nil {
			return false
		}
		switch c.MatchType {
		case kmsg.QuotasMatchTypeExact:
			if part.Name == nil || *part.Name != *c.Match {
				return false
			}
		case kmsg.QuotasMatchTypeDefault:
			if part.Name != nil {
				return false
			}
		}
	}
	return true
}
