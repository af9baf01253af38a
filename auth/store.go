package auth

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/BurntSushi/toml"
)

// Store holds SCRAM credentials by user and mechanism. It is safe for
// concurrent use; readers (logins) never wait on each other.
type Store struct {
	mu    sync.RWMutex
	users map[string]map[string]Credential
}

// NewStore makes an empty store.
func NewStore() *Store { return &Store{users: map[string]map[string]Credential{}} }

// Lookup returns user's credential for mechanism.
func (s *Store) Lookup(mechanism, user string) (Credential, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.users[user][mechanism]
	return c, ok
}

// Set adds or replaces user's credential for c.Mechanism.
func (s *Store) Set(user string, c Credential) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users[user] == nil {
		s.users[user] = map[string]Credential{}
	}
	s.users[user][c.Mechanism] = c
}

// Delete removes user's credential for mechanism and reports whether
// there was one.
func (s *Store) Delete(user, mechanism string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.users[user][mechanism]; !ok {
		return false
	}
	delete(s.users[user], mechanism)
	if len(s.users[user]) == 0 {
		delete(s.users, user)
	}
	return true
}

// UserInfo is what Describe tells about a user: mechanisms and
// iterations, never keys.
type UserInfo struct {
	Name       string
	Mechanisms map[string]int // mechanism -> iterations
}

// Describe lists the named users (every user when names is nil), sorted.
// A named user without credentials is left out.
func (s *Store) Describe(names []string) []UserInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if names == nil {
		for u := range s.users {
			names = append(names, u)
		}
	}
	var out []UserInfo
	for _, u := range names {
		ms := s.users[u]
		if len(ms) == 0 {
			continue
		}
		ui := UserInfo{Name: u, Mechanisms: map[string]int{}}
		for m, c := range ms {
			ui.Mechanisms[m] = c.Iterations
		}
		out = append(out, ui)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// UsersFile is the bootstrap users file (TOML):
//
//	[[users]]
//	name = "alice"
//	password = "..."                    # salted and hashed at load; never kept
//	mechanisms = ["SCRAM-SHA-512"]      # default: SCRAM-SHA-256 and SCRAM-SHA-512
//	iterations = 8192
//
// A PLAIN login is checked against the user's SCRAM credential, so a user
// listed here can log in with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
type UsersFile struct {
	Users []FileUser `toml:"users"`
}

// FileUser is one [[users]] entry.
type FileUser struct {
	Name       string   `toml:"name"`
	Password   string   `toml:"password"`
	Mechanisms []string `toml:"mechanisms"`
	Iterations int      `toml:"iterations"`
}

// LoadUsersFile reads a users file and salts every password. Errors name
// the user, never the password.
func LoadUsersFile(path string) (map[string][]Credential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var uf UsersFile
	md, err := toml.Decode(string(b), &uf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("%s: unknown keys %v", path, und)
	}
	out := map[string][]Credential{}
	for _, u := range uf.Users {
		if u.Name == "" {
			return nil, fmt.Errorf("%s: a user without a name", path)
		}
		if u.Password == "" {
			return nil, fmt.Errorf("%s: user %q has no password", path, u.Name)
		}
		if _, dup := out[u.Name]; dup {
			return nil, fmt.Errorf("%s: user %q listed twice", path, u.Name)
		}
		mechs := u.Mechanisms
		if len(mechs) == 0 {
			mechs = []string{ScramSHA256, ScramSHA512}
		}
		iters := u.Iterations
		if iters == 0 {
			iters = DefaultIterations
		}
		for _, m := range mechs {
			c, err := NewCredential(m, u.Password, iters)
			if err != nil {
				return nil, fmt.Errorf("%s: user %q: %w", path, u.Name, err)
			}
			out[u.Name] = append(out[u.Name], c)
		}
	}
	if len(out) == 0 {
		return nil, errors.New(path + ": no [[users]]")
	}
	return out, nil
}
