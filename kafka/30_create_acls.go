package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CreateAcls v0-3. v1 pattern types (v0 creates LITERAL ACLs); v2
// flexible; v3 the USER resource type. Needs ALTER on the cluster. The
// valid creations are replicated together through the cluster metadata,
// so every node enforces them once this answers.
func init() { register(30, 0, 3, handleCreateACLs) }

func handleCreateACLs(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.CreateACLsRequest)
	resp := req.ResponseKind().(*kmsg.CreateACLsResponse)
	resp.Version = req.Version
	a := authorizer(s)
	denied := clusterErr(s, cc, kmsg.ACLOperationAlter)
	resp.Results = make([]kmsg.CreateACLsResponseResult, len(req.Creations))
	var valid []ACL
	var idx []int
	for i, c := range req.Creations {
		acl := ACL{ResourceType: int8(c.ResourceType), Name: c.ResourceName, Pattern: int8(c.ResourcePatternType),
			Principal: c.Principal, Host: c.Host, Operation: int8(c.Operation), Permission: int8(c.PermissionType)}
		if req.Version == 0 {
			acl.Pattern = int8(kmsg.ACLResourcePatternTypeLiteral)
		}
		r := &resp.Results[i]
		switch {
		case a == nil:
			r.ErrorCode = kerr.SecurityDisabled.Code
		case denied != 0:
			r.ErrorCode = denied
		default:
			if msg := CheckACL(acl); msg != "" {
				r.ErrorCode, r.ErrorMessage = kerr.InvalidRequest.Code, &msg
				continue
			}
			valid, idx = append(valid, acl), append(idx, i)
		}
	}
	return func() kmsg.Response {
		if len(valid) > 0 {
			ctx, cancel := context.WithTimeout(cc.ctx, 30*time.Second)
			err := a.CreateACLs(ctx, valid)
			cancel()
			if err != nil {
				msg := err.Error()
				for _, i := range idx {
					resp.Results[i].ErrorCode, resp.Results[i].ErrorMessage = kerr.UnknownServerError.Code, &msg
				}
			}
		}
		for _, r := range resp.Results {
			s.metrics.countErr(30, r.ErrorCode)
		}
		return resp
	}
}
