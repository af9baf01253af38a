package admin

import (
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Access to the admin server. /health and /ready stay open: container
// healthchecks and load balancers probe them without credentials. Every
// other endpoint needs the bearer token (Config.Token) or, when the TLS
// config verifies client certificates, a client certificate that chains to
// its client CA. With neither configured the server is open, as before:
// it then binds loopback in the shipped configs.

// LoadTLS builds a server TLS config from PEM files. clientCAFile, when
// set, makes a verified client certificate an alternative to the token.
func LoadTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("admin: TLS needs a certificate and a key")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("admin: TLS: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("admin: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("admin: client CA %s: no PEM certificate", clientCAFile)
		}
		// Not required: /health and /ready take clients without one.
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// openPaths need no credentials.
var openPaths = map[string]bool{"/health": true, "/ready": true}

// guard wraps next with the access check when any credential is configured.
func (s *Server) guard(next http.Handler, token string, certAuth bool) http.Handler {
	if token == "" && !certAuth {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		if certAuth && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			next.ServeHTTP(w, r)
			return
		}
		got := r.Header.Get("Authorization")
		if token != "" && subtle.ConstantTimeCompare([]byte(got), want) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		s.unauthorized.Add(1)
		if strings.HasPrefix(got, "Bearer ") {
			s.logger.Warn("admin request with a wrong token", "remote", r.RemoteAddr, "path", r.URL.Path)
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="chronik-admin"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	})
}

// Unauthorized is how many requests were refused for want of credentials.
func (s *Server) Unauthorized() uint64 { return s.unauthorized.Load() }
