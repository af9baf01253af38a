// Command chronik-certs makes a private CA and the certificates a secured
// Chronik cluster needs, with Go's crypto only (nothing is downloaded):
//
//	chronik-certs -out certs -nodes chronik-1=172.28.0.11,chronik-2=172.28.0.12 -clients admin,app
//
// It writes <out>/ca.pem and ca.key, <out>/<node>.pem and .key for every
// node (valid for its name, its IP, localhost and 127.0.0.1) and
// <out>/<client>.pem and .key for every client (CN=<client>, usable for
// mTLS). Keys are written 0600. An existing CA in <out> is reused, so
// nodes and clients can be added later without re-issuing the rest.
package main

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chronik-dev/chronik/internal/certgen"
)

func main() {
	out := flag.String("out", "certs", "output directory")
	nodes := flag.String("nodes", "chronik-1=127.0.0.1,chronik-2=127.0.0.1,chronik-3=127.0.0.1", "comma-separated node certificates: name[=ip]")
	clients := flag.String("clients", "admin", "comma-separated client certificates (CN)")
	days := flag.Int("days", 365, "validity of node and client certificates")
	users := flag.String("users", "", "also write <out>/users.toml, a --sasl-users-file with these users and random passwords (kept if it exists)")
	flag.Parse()
	err := run(*out, *nodes, *clients, time.Duration(*days)*24*time.Hour)
	if err == nil && *users != "" {
		err = writeUsers(filepath.Join(*out, "users.toml"), split(*users))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chronik-certs:", err)
		os.Exit(1)
	}
}

func run(out, nodes, clients string, valid time.Duration) error {
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	ca, err := loadCA(out)
	if errors.Is(err, os.ErrNotExist) {
		if ca, err = certgen.NewCA("Chronik CA", 10*365*24*time.Hour); err != nil {
			return err
		}
		if err := ca.Write(out, "ca"); err != nil {
			return err
		}
		fmt.Println("wrote", filepath.Join(out, "ca.pem"))
	} else if err != nil {
		return err
	}
	until := time.Now().Add(valid)
	for _, n := range split(nodes) {
		name, ip, _ := strings.Cut(n, "=")
		hosts := []string{name, "localhost", "127.0.0.1"}
		if ip != "" && ip != "127.0.0.1" {
			hosts = append(hosts, ip)
		}
		p, err := ca.Sign(certgen.Options{CommonName: name, Hosts: hosts, NotAfter: until})
		if err != nil {
			return err
		}
		if err := p.Write(out, name); err != nil {
			return err
		}
		fmt.Println("wrote", filepath.Join(out, name+".pem"), "for", strings.Join(hosts, ", "))
	}
	for _, c := range split(clients) {
		p, err := ca.Sign(certgen.Options{CommonName: c, NotAfter: until})
		if err != nil {
			return err
		}
		if err := p.Write(out, c); err != nil {
			return err
		}
		fmt.Println("wrote", filepath.Join(out, c+".pem"), "(client CN="+c+")")
	}
	return nil
}

// writeUsers writes a users file with a random password per user; the
// operator reads them there (they are never printed).
func writeUsers(path string, users []string) error {
	if _, err := os.Stat(path); err == nil {
		fmt.Println("kept", path)
		return nil
	}
	var b strings.Builder
	b.WriteString("# SASL users for --sasl-users-file (made by chronik-certs). Passwords are\n" +
		"# salted and hashed when a node loads this file; keep the file private.\n")
	for _, u := range users {
		raw := make([]byte, 18)
		rand.Read(raw)
		fmt.Fprintf(&b, "\n[[users]]\nname = %q\npassword = %q\n", u, base64.RawURLEncoding.EncodeToString(raw))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return err
	}
	fmt.Println("wrote", path, "(passwords inside)")
	return nil
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func loadCA(dir string) (*certgen.CA, error) {
	cb, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	cp, _ := pem.Decode(cb)
	kp, _ := pem.Decode(kb)
	if cp == nil || kp == nil {
		return nil, fmt.Errorf("%s: ca.pem or ca.key is not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(kp.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: ca.key is not an ECDSA key", dir)
	}
	return &certgen.CA{Cert: cert, Key: ek}, nil
}
