package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DeleteAcls v0-3. v1 pattern types (v0 filters are LITERAL); v2
// flexible; v3 the USER resource type. Needs ALTER on the cluster. Every
// filter's deletions are replicated together through the cluster metadata.
func init() { register(31, 0, 3, handleDeleteACLs) }

func handleDeleteACLs(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DeleteACLsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteACLsResponse)
	resp.Version = req.Version
	a := authorizer(s)
	denied := clusterErr(s, cc, kmsg.ACLOperationAlter)
	resp.Results = make([]kmsg.DeleteACLsResponseResult, len(req.Filters))
	filters := make([]ACLFilter, len(req.Filters))
	for i, rf := range req.Filters {
		filters[i] = ACLFilter{ResourceType: int8(rf.ResourceType), Name: rf.ResourceName, Pattern: int8(rf.ResourcePatternType),
			Principal: rf.Principal, Host: rf.Host, Operation: int8(rf.Operation), Permission: int8(rf.PermissionType)}
		if req.Version == 0 {
			filters[i].Pattern = int8(kmsg.ACLResourcePatternTypeLiteral)
		}
	}
	valid, idx := admitACLChanges(a, denied, filters, checkFilter, func(i int, code int16, msg *string) {
		resp.Results[i].ErrorCode, resp.Results[i].ErrorMessage = code, msg
	})
	return func() kmsg.Response {
		if len(valid) > 0 {
			ctx, cancel := context.WithTimeout(cc.ctx, 30*time.Second)
			gone, err := a.DeleteACLs(ctx, valid)
			cancel()
			for j, i := range idx {
				r := &resp.Results[i]
				if err != nil {
					msg := err.Error()
					r.ErrorCode, r.ErrorMessage = kerr.UnknownServerError.Code, &msg
					continue
				}
				for _, g := range gone[j] {
					r.MatchingACLs = append(r.MatchingACLs, kmsg.DeleteACLsResponseResultMatchingACL{
						ResourceType: kmsg.ACLResourceType(g.ResourceType), ResourceName: g.Name,
						ResourcePatternType: kmsg.ACLResourcePatternType(g.Pattern), Principal: g.Principal, Host: g.Host,
						Operation: kmsg.ACLOperation(g.Operation), PermissionType: kmsg.ACLPermissionType(g.Permission)})
				}
			}
		}
		for _, r := range resp.Results {
			s.metrics.countErr(31, r.ErrorCode)
		}
		return resp
	}
}
