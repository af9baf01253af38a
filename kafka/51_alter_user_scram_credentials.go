package kafka

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/auth"
)

// AlterUserScramCredentials v0 upserts and deletes SCRAM credentials. The
// client sends the salted password (never the password); the broker
// keeps only the keys derived from it. As in Kafka, a user may appear only
// once per request (DUPLICATE_RESOURCE for all its changes otherwise).
func init() { register(51, 0, 0, handleAlterUserScram) }

func handleAlterUserScram(s *Server, cc *connCtx, kreq kmsg.Request) reply {
	req := kreq.(*kmsg.AlterUserSCRAMCredentialsRequest)
	resp := req.ResponseKind().(*kmsg.AlterUserSCRAMCredentialsResponse)
	resp.Version = req.Version
	ua, _ := s.cfg.Credentials.(UserAdmin)
	users := map[string]int{}
	for _, d := range req.Deletions {
		users[d.Name]++
	}
	for _, u := range req.Upsertions {
		users[u.Name]++
	}
	type pending struct {
		user string
		idx  int // into changes, or -1 when refused here
		res  UserResult
	}
	var plan []pending
	var changes []UserChange
	// Kafka: ALTER on the cluster (ACLs, when enabled).
	denied := clusterErr(s, cc, kmsg.ACLOperationAlter)
	add := func(user string, ch *UserChange, refuse UserResult) {
		p := pending{user: user, idx: -1, res: refuse}
		switch {
		case denied != 0:
			p.res = UserResult{Err: denied, Msg: "ALTER on the cluster is required to change SCRAM credentials"}
		case ua == nil:
			p.res = UserResult{Err: kerr.UnsupportedVersion.Code, Msg: "SCRAM credentials are not managed on this node"}
		case users[user] > 1:
			p.res = UserResult{Err: kerr.DuplicateResource.Code, Msg: "user " + user + " changed more than once in one request"}
		case user == "":
			p.res = UserResult{Err: kerr.UnacceptableCredential.Code, Msg: "empty user name"}
		case ch != nil:
			p.idx = len(changes)
			changes = append(changes, *ch)
		}
		plan = append(plan, p)
	}
	for _, d := range req.Deletions {
		m, ok := scramMechanism(d.Mechanism)
		if !ok {
			add(d.Name, nil, UserResult{Err: kerr.UnsupportedSaslMechanism.Code, Msg: "unknown SCRAM mechanism"})
			continue
		}
		add(d.Name, &UserChange{User: d.Name, Mechanism: m}, UserResult{})
	}
	for _, u := range req.Upsertions {
		m, ok := scramMechanism(u.Mechanism)
		if !ok {
			add(u.Name, nil, UserResult{Err: kerr.UnsupportedSaslMechanism.Code, Msg: "unknown SCRAM mechanism"})
			continue
		}
		c, err := auth.FromSaltedPassword(m, u.Salt, u.SaltedPassword, int(u.Iterations))
		if err != nil {
			add(u.Name, nil, UserResult{Err: kerr.UnacceptableCredential.Code, Msg: err.Error()})
			continue
		}
		add(u.Name, &UserChange{User: u.Name, Mechanism: m, Credential: &c}, UserResult{})
	}
	// The changes wait for the metadata group: in the reply, off the
	// connection's reader.
	return func() kmsg.Response {
		var results []UserResult
		if len(changes) > 0 {
			ctx, cancel := context.WithTimeout(cc.ctx, alterUsersTimeout)
			defer cancel()
			results = ua.AlterUsers(ctx, changes)
		}
		for _, p := range plan {
			r := p.res
			if p.idx >= 0 {
				r = results[p.idx]
			}
			out := kmsg.AlterUserSCRAMCredentialsResponseResult{User: p.user, ErrorCode: r.Err}
			if r.Msg != "" {
				msg := r.Msg
				out.ErrorMessage = &msg
			}
			resp.Results = append(resp.Results, out)
		}
		return resp
	}
}

// alterUsersTimeout bounds how long a change waits for the metadata group
// (the request has no timeout of its own).
const alterUsersTimeout = 15 * time.Second
