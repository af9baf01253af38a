// Package testpki makes throwaway certificates for tests: a CA and leaf
// certificates signed by it, in memory or as PEM files in a directory.
// It is a thin test-facing layer over internal/certgen, which does the
// signing. Nothing here is for production keys.
package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"time"

	"github.com/chronik-dev/chronik/internal/certgen"
)

// validity is how long test certificates are good for.
const validity = 24 * time.Hour

// CA is an in-memory certificate authority; Cert and Key come from the
// embedded certgen.CA.
type CA struct {
	*certgen.CA
	PEM []byte
}

// NewCA makes a self-signed CA valid for a day.
func NewCA(name string) (*CA, error) {
	ca, err := certgen.NewCA(name, validity)
	if err != nil {
		return nil, err
	}
	return &CA{CA: ca, PEM: pemCert(ca.Cert)}, nil
}

// Pool is a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf is a signed certificate and its key, PEM encoded.
type Leaf struct {
	CertPEM, KeyPEM []byte
}

// TLS is the leaf as a tls.Certificate.
func (l *Leaf) TLS() (tls.Certificate, error) { return tls.X509KeyPair(l.CertPEM, l.KeyPEM) }

// Issue signs a certificate for both server and client use with common
// name cn, the DNS names dns and the loopback addresses.
func (ca *CA) Issue(cn string, dns ...string) (*Leaf, error) {
	hosts := append(append([]string(nil), dns...), "127.0.0.1", "::1")
	p, err := ca.Sign(certgen.Options{CommonName: cn, Hosts: hosts, NotAfter: time.Now().Add(validity)})
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(p.Key)
	if err != nil {
		return nil, err
	}
	return &Leaf{CertPEM: pemCert(p.Cert), KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}, nil
}

// WriteFiles writes the leaf as <dir>/<name>.crt and .key (0600) and
// returns their paths.
func (l *Leaf) WriteFiles(dir, name string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, l.CertPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, l.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// WriteFile writes the CA certificate as <dir>/<name>.crt.
func (ca *CA) WriteFile(dir, name string) (string, error) {
	p := filepath.Join(dir, name+".crt")
	return p, os.WriteFile(p, ca.PEM, 0o600)
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
