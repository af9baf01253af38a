package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/chronik-dev/chronik/internal/pemfiles"
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
// logged: a half-written file never takes a listener down (see
// internal/pemfiles).
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
	ClientAuth                ClientAuth
	Logger                    *slog.Logger

	files pemfiles.Files
	mu    sync.Mutex
	cfg   *tls.Config
	from  *pemfiles.Loaded // the reading cfg was built from
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
	f.files = pemfiles.Files{CertFile: f.CertFile, KeyFile: f.KeyFile, CAFile: f.CAFile, What: "kafka", Logger: f.Logger}
	return f.files.Load()
}

// Reload reads the files again.
func (f *TLSFiles) Reload() error { return f.files.Reload() }

// ServerConfig is the tls.Config a listener serves with: each handshake
// takes the latest certificates.
func (f *TLSFiles) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return f.current(), nil
	}}
}

// current is the config of the latest reading, built once per reading so
// that handshakes share its session ticket keys.
func (f *TLSFiles) current() *tls.Config {
	l := f.files.Current()
	f.mu.Lock()
	defer f.mu.Unlock()
	if l == f.from {
		return f.cfg
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{l.Cert}, ClientCAs: l.CA, MinVersion: tls.VersionTLS12}
	switch f.ClientAuth {
	case ClientAuthRequest:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequired:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	f.cfg, f.from = cfg, l
	return cfg
}
