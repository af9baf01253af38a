package broker

import "github.com/chronik-dev/chronik/auth"

// newUsers makes the SCRAM credential store, seeded with the bootstrap
// users (the users file every node is started with).
func newUsers(boot map[string][]auth.Credential) *auth.Store {
	st := auth.NewStore()
	for u, cs := range boot {
		for _, c := range cs {
			st.Set(u, c)
		}
	}
	return st
}
