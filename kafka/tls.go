package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ClientAuth says whether a TLS listener asks for client certificates.
type ClientAuth string

const (
	ClientAuthNone     ClientAuth = "none"     // not asked for
	ClientAuthRequest  ClientAuth = "request"  // verified when sent (ssl.client.auth=requested)
	ClientAuthRequired ClientAuth = "required" // handshake fails without one
)

// TLSFiles is a TLS server configuration read from PEM files and read
// again, without a restart, on Reload (SIGHUP) or when a file's
// modification time changes (looked at on a new connection, at most once
// a second). A reload that fails keeps the previous certificates and is
// logged: a half-written file never takes a listener down.
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
	ClientAuth                ClientAuth
	Logger                    *slog.Logger

	mu      sync.Mutex
	cfg     *tls.Config
	mtimes  [3]time.Time
	checked time.Time
}

// Load reads the files the first time; an error here is fatal to startup.
func (f *TLSFiles) Load() error {
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
	switch f.ClientAuth {
	case "":
		f.ClientAuth = ClientAuthNone
	case ClientAuthNone, ClientAuthRequest, ClientAuthRequired:
	default:
		return fmt.Errorf("tls client auth %q: want none, request or required", f.ClientAuth)
	}
	if f.ClientAuth != ClientAuthNone && f.CAFile == "" {
		return errors.New("tls: client certificates need a CA file")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

// Reload reads the files again.
func (f *TLSFiles) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.loadLocked(); err != nil {
		f.Logger.Error("tls reload failed; keeping the previous certificates", "cert", f.CertFile, "err", err)
		return err
	}
	f.Logger.Info("tls certificates reloaded", "cert", f.CertFile)
	return nil
}

func (f *TLSFiles) loadLocked() error {
	mt := f.modTimes()
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls: no certificate in %s", f.CAFile)
		}
		cfg.ClientCAs = pool
	}
	switch f.ClientAuth {
	case ClientAuthRequest:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequired:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	f.cfg, f.mtimes, f.checked = cfg, mt, time.Now()
	return nil
}

func (f *TLSFiles) modTimes() [3]time.Time {
	var out [3]time.Time
	for i, p := range []string{f.CertFile, f.KeyFile, f.CAFile} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			out[i] = st.ModTime()
		}
	}
	return out
}

// ServerConfig is the tls.Config a listener serves with: each handshake
// takes the latest certificates.
func (f *TLSFiles) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return f.current(), nil
	}}
}

func (f *TLSFiles) current() *tls.Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) >= time.Second {
		f.checked = time.Now()
		if f.modTimes() != f.mtimes {
			if err := f.loadLocked(); err != nil {
				f.Logger.Error("tls reload failed; keeping the previous certificates", "cert", f.CertFile, "err", err)
			} else {
				f.Logger.Info("tls certificates reloaded: files changed", "cert", f.CertFile)
			}
		}
	}
	return f.cfg
}
