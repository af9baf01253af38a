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
	acls := make([]ACL, len(req.Creations))
	for i, c := range req.Creations {
		acls[i] = ACL{ResourceType: int8(c.ResourceType), Name: c.ResourceName, Pattern: int8(c.ResourcePatternType),
			Principal: c.Principal, Host: c.Host, Operation: int8(c.Operation), Permission: int8(c.PermissionType)}
		if req.Version == 0 {
			acls[i].Pattern = int8(kmsg.ACLResourcePatternTypeLiteral)
		}
	}
	valid, idx := admitACLChanges(a, denied, acls, CheckACL, func(i int, code int16, msg *string) {
		resp.Results[i].ErrorCode, resp.Results[i].ErrorMessage = code, msg
	})
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

// admitACLChanges sorts the entries of a CreateAcls or DeleteAcls request:
// with ACLs off, the principal refused (denied) or the entry invalid
// (check's message), fail gets the entry's error; the others are returned
// with their indexes in the request.
func admitACLChanges[T any](a Authorizer, denied int16, entries []T, check func(T) string, fail func(i int, code int16, msg *string)) (valid []T, idx []int) {
	for i, e := range entries {
		switch {
		case a == nil:
			fail(i, kerr.SecurityDisabled.Code, nil)
		case denied != 0:
			fail(i, denied, nil)
		default:
			if msg := check(e); msg != "" {
				fail(i, kerr.InvalidRequest.Code, &msg)
				continue
			}
			valid, idx = append(valid, e), append(idx, i)
		}
	}
	return valid, idx
}
