package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"fmt"
	"hash"
)

// SCRAM mechanisms, named as in SaslHandshake.
const (
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// Iteration bounds: Kafka refuses fewer than 4096 and more than 16384
// (a bound on what one login can make the broker compute).
const (
	MinIterations     = 4096
	MaxIterations     = 16384
	DefaultIterations = 8192
)

// Credential is one user's SCRAM credential for one mechanism (RFC 5802):
// the salt and iteration count, and the two keys derived from the salted
// password. The password itself cannot be recovered from it.
type Credential struct {
	Mechanism  string
	Salt       []byte
	Iterations int
	StoredKey  []byte
	ServerKey  []byte
}

// Hash returns the hash function of a SCRAM mechanism.
func Hash(mechanism string) (func() hash.Hash, error) {
	switch mechanism {
	case ScramSHA256:
		return sha256.New, nil
	case ScramSHA512:
		return sha512.New, nil
	}
	return nil, fmt.Errorf("unknown SCRAM mechanism %q", mechanism)
}

// NewCredential salts and hashes password with a fresh random salt.
func NewCredential(mechanism, password string, iterations int) (Credential, error) {
	h, err := Hash(mechanism)
	if err != nil {
		return Credential{}, err
	}
	if err := checkIterations(iterations); err != nil {
		return Credential{}, err
	}
	salt := make([]byte, 32)
	rand.Read(salt) // never fails (crypto/rand documents it)
	sp, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return Credential{}, err
	}
	return FromSaltedPassword(mechanism, salt, sp, iterations)
}

// FromSaltedPassword derives a credential from a salted password, as
// AlterUserScramCredentials carries it.
func FromSaltedPassword(mechanism string, salt, saltedPassword []byte, iterations int) (Credential, error) {
	h, err := Hash(mechanism)
	if err != nil {
		return Credential{}, err
	}
	if err := checkIterations(iterations); err != nil {
		return Credential{}, err
	}
	if len(salt) == 0 || len(saltedPassword) == 0 {
		return Credential{}, fmt.Errorf("empty salt or salted password")
	}
	clientKey := mac(h, saltedPassword, "Client Key")
	stored := h()
	stored.Write(clientKey)
	return Credential{Mechanism: mechanism, Salt: append([]byte(nil), salt...), Iterations: iterations,
		StoredKey: stored.Sum(nil), ServerKey: mac(h, saltedPassword, "Server Key")}, nil
}

// VerifyPassword reports whether password is the one c was made from; it
// is how SASL/PLAIN logins are checked against SCRAM-only storage.
func (c Credential) VerifyPassword(password string) bool {
	h, err := Hash(c.Mechanism)
	if err != nil || checkIterations(c.Iterations) != nil {
		return false
	}
	sp, err := pbkdf2.Key(h, password, c.Salt, c.Iterations, h().Size())
	if err != nil {
		return false
	}
	d, err := FromSaltedPassword(c.Mechanism, c.Salt, sp, c.Iterations)
	return err == nil && subtle.ConstantTimeCompare(d.StoredKey, c.StoredKey) == 1
}

func checkIterations(n int) error {
	if n < MinIterations || n > MaxIterations {
		return fmt.Errorf("SCRAM iterations %d outside [%d, %d]", n, MinIterations, MaxIterations)
	}
	return nil
}

func mac(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
