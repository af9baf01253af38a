package kafka

import (
	"context"

	"github.com/chronik-dev/chronik/auth"
)

// UserAdmin manages SCRAM credentials for AlterUserScramCredentials and
// DescribeUserScramCredentials. Config.Credentials implements it when the
// credentials are managed (the broker's are, replicated in the cluster
// metadata); otherwise those APIs answer with an error.
type UserAdmin interface {
	Credentials
	// DescribeUsers lists the named users, every user when names is nil.
	DescribeUsers(names []string) []auth.UserInfo
	// AlterUsers applies one request's changes; each result matches the
	// change at the same index.
	AlterUsers(ctx context.Context, changes []UserChange) []UserResult
}

// UserChange sets (Credential not nil) or deletes a user's credential for
// one mechanism.
type UserChange struct {
	User       string
	Mechanism  string
	Credential *auth.Credential
}

// UserResult is the outcome of one UserChange.
type UserResult struct {
	Err int16
	Msg string
}

// scramMechanism maps the wire's mechanism numbers.
func scramMechanism(m int8) (string, bool) {
	switch m {
	case 1:
		return auth.ScramSHA256, true
	case 2:
		return auth.ScramSHA512, true
	}
	return "", false
}

func scramMechanismCode(m string) int8 {
	switch m {
	case auth.ScramSHA256:
		return 1
	case auth.ScramSHA512:
		return 2
	}
	return 0
}
