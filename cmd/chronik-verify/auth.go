package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// authOpts are the client options for an SSL, SASL_PLAINTEXT or SASL_SSL
// listener, with the same flags as `chronik-server users`. The password
// comes from CHRONIK_SASL_PASSWORD so that it is not on the command line.
// Every client (admin, consumer, producer) gets them.
func authOpts(c Config) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if c.TLS || c.TLSCA != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.TLSCA != "" {
			pem, err := os.ReadFile(c.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca: no certificate in %s", c.TLSCA)
			}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if c.SASLMechanism == "" {
		return opts, nil
	}
	u, p := c.SASLUser, os.Getenv("CHRONIK_SASL_PASSWORD")
	var mech sasl.Mechanism
	switch c.SASLMechanism {
	case "PLAIN":
		mech = plain.Auth{User: u, Pass: p}.AsMechanism()
	case "SCRAM-SHA-256":
		mech = scram.Auth{User: u, Pass: p}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		mech = scram.Auth{User: u, Pass: p}.AsSha512Mechanism()
	default:
		return nil, fmt.Errorf("--sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASLMechanism)
	}
	return append(opts, kgo.SASL(mech)), nil
}
