package admin

import (
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/chronik-dev/chronik/internal/pemfiles"
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
	cfg, _, err := LoadReloadingTLS(certFile, keyFile, clientCAFile, nil)
	return cfg, err
}

// LoadReloadingTLS is LoadTLS whose files are read again when reload is
// called (SIGHUP) or when they change (looked at on a new connection, at
// most once a second); logger hears of reloads. Connections made after a
// reload use the new certificate and client CA.
func LoadReloadingTLS(certFile, keyFile, clientCAFile string, logger *slog.Logger) (cfg *tls.Config, reload func() error, err error) {
	if certFile == "" || keyFile == "" {
		return nil, nil, errors.New("admin: TLS needs a certificate and a key")
	}
	files := &pemfiles.Files{CertFile: certFile, KeyFile: keyFile, CAFile: clientCAFile, What: "admin", Logger: logger}
	if err := files.Load(); err != nil {
		return nil, nil, fmt.Errorf("admin: %w", err)
	}
	var mu sync.Mutex
	var built *tls.Config
	var from *pemfiles.Loaded
	// One config per reading, so that handshakes share session tickets.
	current := func(*tls.ClientHelloInfo) (*tls.Config, error) {
		l := files.Current()
		mu.Lock()
		defer mu.Unlock()
		if l != from {
			built = &tls.Config{Certificates: []tls.Certificate{l.Cert}, MinVersion: tls.VersionTLS12}
			if l.CA != nil {
				// Not required: /health and /ready take clients without one.
				built.ClientCAs, built.ClientAuth = l.CA, tls.VerifyClientCertIfGiven
			}
			from = l
		}
		return built, nil
	}
	first := files.Current()
	cfg = &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: current}
	if first.CA != nil {
		// What the server reads to know a client certificate may stand in
		// for the token; the handshakes use current's.
		cfg.ClientCAs, cfg.ClientAuth = first.CA, tls.VerifyClientCertIfGiven
	}
	return cfg, files.Reload, nil
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
