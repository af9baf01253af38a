package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/chronik-dev/chronik/auth"
)

// SecurityProtocol is a listener's protocol, named as Kafka's
// listener.security.protocol.map names them.
type SecurityProtocol string

const (
	Plaintext     SecurityProtocol = "PLAINTEXT"
	SSL           SecurityProtocol = "SSL"
	SASLPlaintext SecurityProtocol = "SASL_PLAINTEXT"
	SASLSSL       SecurityProtocol = "SASL_SSL"
)

// ParseSecurityProtocol checks a protocol name.
func ParseSecurityProtocol(s string) (SecurityProtocol, error) {
	switch p := SecurityProtocol(s); p {
	case Plaintext, SSL, SASLPlaintext, SASLSSL:
		return p, nil
	}
	return "", fmt.Errorf("security protocol %q: want PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", s)
}

// TLS reports whether the protocol runs over TLS.
func (p SecurityProtocol) TLS() bool { return p == SSL || p == SASLSSL }

// SASL reports whether the protocol authenticates with SASL.
func (p SecurityProtocol) SASL() bool { return p == SASLPlaintext || p == SASLSSL }

// Listener is one socket a node serves Kafka on. Clients connected to it
// are told, in Metadata and FindCoordinator, every broker's address on the
// listener of the same Name (BrokerInfo.Listeners), as Kafka does.
type Listener struct {
	Name     string
	Protocol SecurityProtocol
	Listen   string
	// TLS is the server configuration for SSL and SASL_SSL. A verified
	// client certificate makes the connection's principal
	// User:<subject DN> (principalFromCert) until SASL names another.
	TLS *tls.Config
}

type boundListener struct {
	Listener
	ln net.Listener
	// slot is signalled when a connection closes, for an accept loop
	// waiting at the connection limit.
	slot chan struct{}
}

// Credentials looks up SCRAM credentials for SASL logins.
type Credentials interface {
	Lookup(mechanism, user string) (auth.Credential, bool)
}

func (cfg *Config) checkListeners() error {
	if len(cfg.Listeners) == 0 {
		if cfg.Listen == "" {
			return errors.New("kafka: no listener")
		}
		cfg.Listeners = []Listener{{Name: string(Plaintext), Protocol: Plaintext, Listen: cfg.Listen}}
	}
	seen := map[string]bool{}
	for _, l := range cfg.Listeners {
		if l.Name == "" || seen[l.Name] {
			return fmt.Errorf("kafka: listener name %q empty or used twice", l.Name)
		}
		seen[l.Name] = true
		if _, err := ParseSecurityProtocol(string(l.Protocol)); err != nil {
			return fmt.Errorf("kafka: listener %s: %w", l.Name, err)
		}
		if l.Protocol.TLS() && l.TLS == nil {
			return fmt.Errorf("kafka: listener %s is %s but has no TLS configuration", l.Name, l.Protocol)
		}
	}
	return nil
}

// brokersFor lists the brokers as a client of cc's listener must reach
// them: on that listener's advertised addresses. A broker without the
// listener is left out, as Kafka leaves it out.
func (s *Server) brokersFor(cc *connCtx) []BrokerInfo {
	all := s.backend.Brokers()
	out := all[:0:0]
	for _, b := range all {
		if len(b.Listeners) == 0 {
			out = append(out, b) // a single, unnamed listener
			continue
		}
		addr, ok := b.Listeners[cc.listener]
		if !ok {
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			continue
		}
		b.Host, b.Port = host, int32(p)
		out = append(out, b)
	}
	return out
}

// principalFromCert names a TLS client as Kafka's default principal
// builder does: User: and the certificate's full subject distinguished
// name in RFC 2253 form ("CN=alice,O=Example"), so ACLs written for Kafka
// carry over.
func principalFromCert(cert *x509.Certificate) Principal {
	return Principal{Type: "User", Name: cert.Subject.String()}
}
