package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/auth"
	"github.com/chronik-dev/chronik/kafka"
)

// SCRAM credentials are replicated state in the metadata group, changed
// by AlterUserScramCredentials (and `chronik-server users`). The users
// file each node starts with is a fallback: a user the metadata knows
// nothing of logs in with its bootstrap credential; once altered or
// deleted through the metadata (a deletion leaves a tombstone), the
// metadata's word holds on every node. Only salts and derived keys are
// stored, in the metadata log and snapshots, never a password.

// scramMeta is one replicated credential; Deleted is a tombstone hiding a
// bootstrap credential.
type scramMeta struct {
	Salt       []byte `json:"salt,omitempty"`
	Iterations int    `json:"iterations,omitempty"`
	StoredKey  []byte `json:"stored_key,omitempty"`
	ServerKey  []byte `json:"server_key,omitempty"`
	Deleted    bool   `json:"deleted,omitempty"`
}

// scramChange is one change of an alter_scram command.
type scramChange struct {
	User      string     `json:"user"`
	Mechanism string     `json:"mechanism"`
	Set       *scramMeta `json:"set,omitempty"` // nil: delete
}

func (m *metaSM) applyScram(changes []scramChange) {
	if m.st.Scram == nil {
		m.st.Scram = map[string]map[string]*scramMeta{}
	}
	for _, ch := range changes {
		if m.st.Scram[ch.User] == nil {
			m.st.Scram[ch.User] = map[string]*scramMeta{}
		}
		v := ch.Set
		if v == nil {
			v = &scramMeta{Deleted: true}
		}
		m.st.Scram[ch.User][ch.Mechanism] = v
	}
}

// scram returns the metadata's credential for user and mechanism; known
// is false when the metadata has no word on it (not even a deletion).
func (m *metaSM) scram(mechanism, user string) (c auth.Credential, ok, known bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v := m.st.Scram[user][mechanism]
	if v == nil {
		return auth.Credential{}, false, false
	}
	if v.Deleted {
		return auth.Credential{}, false, true
	}
	return auth.Credential{Mechanism: mechanism, Salt: v.Salt, Iterations: v.Iterations, StoredKey: v.StoredKey, ServerKey: v.ServerKey}, true, true
}

// scramUsers lists the users the metadata has any word on.
func (m *metaSM) scramUsers() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.st.Scram))
	for u := range m.st.Scram {
		out = append(out, u)
	}
	return out
}

// users is the broker's kafka.UserAdmin: the metadata's credentials over
// the bootstrap ones.
type users struct {
	b    *Broker
	boot *auth.Store
}

func newUsers(b *Broker, boot map[string][]auth.Credential) *users {
	st := auth.NewStore()
	for u, cs := range boot {
		for _, c := range cs {
			st.Set(u, c)
		}
	}
	return &users{b: b, boot: st}
}

// Lookup implements kafka.Credentials.
func (u *users) Lookup(mechanism, user string) (auth.Credential, bool) {
	if c, ok, known := u.b.metaSM.scram(mechanism, user); known {
		return c, ok
	}
	return u.boot.Lookup(mechanism, user)
}

var scramMechanisms = []string{auth.ScramSHA256, auth.ScramSHA512}

// DescribeUsers implements kafka.UserAdmin.
func (u *users) DescribeUsers(names []string) []auth.UserInfo {
	if names == nil {
		seen := map[string]bool{}
		for _, ui := range u.boot.Describe(nil) {
			seen[ui.Name] = true
		}
		for _, n := range u.b.metaSM.scramUsers() {
			seen[n] = true
		}
		names = []string{}
		for n := range seen {
			names = append(names, n)
		}
	}
	var out []auth.UserInfo
	for _, n := range names {
		ui := auth.UserInfo{Name: n, Mechanisms: map[string]int{}}
		for _, m := range scramMechanisms {
			if c, ok := u.Lookup(m, n); ok {
				ui.Mechanisms[m] = c.Iterations
			}
		}
		if len(ui.Mechanisms) > 0 {
			out = append(out, ui)
		}
	}
	return out
}

// AlterUsers implements kafka.UserAdmin: one metadata command for the
// request's changes. Deleting a credential that does not exist is
// RESOURCE_NOT_FOUND, checked before proposing.
func (u *users) AlterUsers(ctx context.Context, changes []kafka.UserChange) []kafka.UserResult {
	res := make([]kafka.UserResult, len(changes))
	var cmd metaCmd
	cmd.Op = "alter_scram"
	var idx []int
	for i, ch := range changes {
		sc := scramChange{User: ch.User, Mechanism: ch.Mechanism}
		if c := ch.Credential; c != nil {
			sc.Set = &scramMeta{Salt: c.Salt, Iterations: c.Iterations, StoredKey: c.StoredKey, ServerKey: c.ServerKey}
		} else if _, ok := u.Lookup(ch.Mechanism, ch.User); !ok {
			res[i] = kafka.UserResult{Err: kerr.ResourceNotFound.Code, Msg: "no " + ch.Mechanism + " credential for user " + ch.User}
			continue
		}
		cmd.Scram = append(cmd.Scram, sc)
		idx = append(idx, i)
	}
	if len(cmd.Scram) == 0 {
		return res
	}
	mr, err := u.b.metaPropose(ctx, cmd)
	r := kafka.UserResult{Err: mr.Err, Msg: mr.Msg}
	if err != nil {
		r = kafka.UserResult{Err: kerr.RequestTimedOut.Code, Msg: "metadata change did not complete: " + err.Error()}
	}
	for _, i := range idx {
		res[i] = r
	}
	if r.Err == 0 {
		u.b.logger.Info("scram credentials changed", "changes", len(idx))
	}
	return res
}
