package kafka

import (
	"sort"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DescribeUserScramCredentials v0 lists users' mechanisms and iteration
// counts (never salts or keys). A named user without credentials is
// RESOURCE_NOT_FOUND, a user named twice DUPLICATE_RESOURCE.
func init() { register(50, 0, 0, handleDescribeUserScram) }

func handleDescribeUserScram(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.DescribeUserSCRAMCredentialsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeUserSCRAMCredentialsResponse)
	resp.Version = req.Version
	// Kafka: DESCRIBE on the cluster (ACLs, when enabled).
	if code := clusterErr(s, cc, kmsg.ACLOperationDescribe); code != 0 {
		resp.ErrorCode = code
		return func() kmsg.Response { return resp }
	}
	ua, ok := s.cfg.Credentials.(UserAdmin)
	if !ok {
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		msg := "SCRAM credentials are not managed on this node"
		resp.ErrorMessage = &msg
		return func() kmsg.Response { return resp }
	}
	var names []string
	count := map[string]int{}
	if req.Users != nil {
		names = []string{}
		for _, u := range req.Users {
			if count[u.Name]++; count[u.Name] == 1 {
				names = append(names, u.Name)
			}
		}
	}
	found := map[string]bool{}
	for _, ui := range ua.DescribeUsers(names) {
		found[ui.Name] = true
		if count[ui.Name] > 1 {
			continue
		}
		r := kmsg.DescribeUserSCRAMCredentialsResponseResult{User: ui.Name}
		for m, it := range ui.Mechanisms {
			r.CredentialInfos = append(r.CredentialInfos, kmsg.DescribeUserSCRAMCredentialsResponseResultCredentialInfo{
				Mechanism: scramMechanismCode(m), Iterations: int32(it)})
		}
		sort.Slice(r.CredentialInfos, func(i, j int) bool { return r.CredentialInfos[i].Mechanism < r.CredentialInfos[j].Mechanism })
		resp.Results = append(resp.Results, r)
	}
	for _, n := range names {
		var code int16
		var msg string
		switch {
		case count[n] > 1:
			code, msg = kerr.DuplicateResource.Code, "user "+n+" named more than once"
		case !found[n]:
			code, msg = kerr.ResourceNotFound.Code, "no SCRAM credentials for user "+n
		default:
			continue
		}
		resp.Results = append(resp.Results, kmsg.DescribeUserSCRAMCredentialsResponseResult{User: n, ErrorCode: code, ErrorMessage: &msg})
	}
	return func() kmsg.Response { return resp }
}
