// Package pemfiles reads a TLS certificate, its key and a CA bundle from
// PEM files, and reads them again without a restart: on Reload (SIGHUP)
// or when a file's modification time changes, looked at when the
// certificates are used, at most once per Every. A reload that fails keeps
// the previous certificates and is logged, so a half-written file never
// takes a listener down. The Kafka listeners, the Raft peer port and the
// admin server each hold one.
package pemfiles

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

// Loaded is one reading of the files; it is never changed, a reload makes
// a new one.
type Loaded struct {
	Cert tls.Certificate
	// CA is the CA bundle, nil when Files has no CAFile.
	CA *x509.CertPool
}

// Files is a certificate, its key and an optional CA bundle.
type Files struct {
	CertFile, KeyFile, CAFile string
	// What names the files in logs ("kafka", "peer", "admin").
	What   string
	Logger *slog.Logger
	// Every is how often Current looks at the files' modification times
	// (1 s when 0; negative: on every call).
	Every time.Duration

	mu      sync.Mutex
	cur     *Loaded
	mtimes  [3]time.Time
	checked time.Time
}

// Load reads the files the first time; an error here is fatal to startup.
func (f *Files) Load() error {
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
	if f.CertFile == "" || f.KeyFile == "" {
		return errors.New("tls: needs a certificate and a key")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

// Reload reads the files again.
func (f *Files) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.loadLocked(); err != nil {
		f.Logger.Error("tls reload failed; keeping the previous certificates", "files", f.What, "cert", f.CertFile, "err", err)
		return err
	}
	f.Logger.Info("tls certificates reloaded", "files", f.What, "cert", f.CertFile)
	return nil
}

// Current is the latest reading, after reading the files again if they
// changed since (looked at once per Every).
func (f *Files) Current() *Loaded {
	f.mu.Lock()
	defer f.mu.Unlock()
	every := f.Every
	if every == 0 {
		every = time.Second
	}
	if time.Since(f.checked) >= every {
		f.checked = time.Now()
		if f.modTimes() != f.mtimes {
			if err := f.loadLocked(); err != nil {
				f.Logger.Error("tls reload failed; keeping the previous certificates", "files", f.What, "cert", f.CertFile, "err", err)
			} else {
				f.Logger.Info("tls certificates reloaded: files changed", "files", f.What, "cert", f.CertFile)
			}
		}
	}
	return f.cur
}

func (f *Files) loadLocked() error {
	mt := f.modTimes()
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	l := &Loaded{Cert: cert}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		l.CA = x509.NewCertPool()
		if !l.CA.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls: no certificate in %s", f.CAFile)
		}
	}
	f.cur, f.mtimes, f.checked = l, mt, time.Now()
	return nil
}

func (f *Files) modTimes() [3]time.Time {
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

// LookNext makes the next Current look at the files, however recently it
// last did.
func (f *Files) LookNext() {
	f.mu.Lock()
	f.checked = time.Time{}
	f.mu.Unlock()
}
