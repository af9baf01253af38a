package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/chronik-dev/chronik/internal/certgen"
)

// benchUser is the SCRAM login of the SASL_SSL target.
const benchUser = "bench"

// secureSetup is what a SASL_SSL target needs: server flags pointing at
// the certificates and users file in the cluster's temp dir, and the
// matching client options.
type secureSetup struct {
	args []string
	opts []kgo.Opt
}

// writeSecure makes a CA, one certificate valid for 127.0.0.1 (every node
// of a bench cluster is on loopback, so they share it) and a users file
// with a random SCRAM-SHA-512 password, all in dir.
func writeSecure(dir string) (*secureSetup, error) {
	ca, err := certgen.NewCA("chronik-bench CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	srv, err := ca.Sign(certgen.Options{CommonName: "chronik-bench", Hosts: []string{"127.0.0.1", "localhost"},
		NotAfter: time.Now().Add(24 * time.Hour)})
	if err != nil {
		return nil, err
	}
	if err := srv.Write(dir, "server"); err != nil {
		return nil, err
	}
	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return nil, err
	}
	pass := hex.EncodeToString(pw[:])
	users := fmt.Sprintf("[[users]]\nname = %q\npassword = %q\nmechanisms = [\"SCRAM-SHA-512\"]\n", benchUser, pass)
	usersPath := filepath.Join(dir, "users.toml")
	if err := os.WriteFile(usersPath, []byte(users), 0o600); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &secureSetup{
		args: []string{"--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server.key"),
			"--sasl-users-file", usersPath},
		opts: []kgo.Opt{
			kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
			kgo.SASL(scram.Auth{User: benchUser, Pass: pass}.AsSha512Mechanism()),
		},
	}, nil
}
