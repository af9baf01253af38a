package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/chronik-dev/chronik/auth"
	"github.com/chronik-dev/chronik/broker"
	"github.com/chronik-dev/chronik/kafka"
)

// securityFromFlags reads the TLS and SASL flags into cfg.
func securityFromFlags(c *cli.Context, cfg *broker.Config) error {
	if cert := c.String("tls-cert"); cert != "" || c.String("tls-key") != "" {
		cfg.TLS = &kafka.TLSFiles{CertFile: cert, KeyFile: c.String("tls-key"), CAFile: c.String("tls-ca"),
			ClientAuth: kafka.ClientAuth(c.String("tls-client-auth")), Logger: cfg.Logger}
		if err := cfg.TLS.Load(); err != nil {
			return fmt.Errorf("--tls-cert/--tls-key/--tls-ca: %w", err)
		}
	}
	for _, m := range strings.Split(c.String("sasl-mechanisms"), ",") {
		m = strings.TrimSpace(m)
		switch m {
		case "":
			continue
		case kafka.MechPlain, kafka.MechScramSHA256, kafka.MechScramSHA512:
			cfg.SASLMechanisms = append(cfg.SASLMechanisms, m)
		default:
			return fmt.Errorf("--sasl-mechanisms: %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", m)
		}
	}
	if f := c.String("sasl-users-file"); f != "" {
		users, err := auth.LoadUsersFile(f)
		if err != nil {
			return fmt.Errorf("--sasl-users-file: %w", err)
		}
		cfg.BootstrapUsers = users
	}
	return nil
}

// reloadOnHUP reloads the node's TLS files on every SIGHUP until stop is
// called. SIGHUP is caught even with no TLS: it must not end the process.
func reloadOnHUP(b *broker.Broker) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				b.ReloadCertificates() // each file logs its own failure and keeps its old certificates
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}
