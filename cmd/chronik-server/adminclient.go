package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// adminHTTP is how the CLI reaches a node's admin server: plain HTTP, or
// HTTPS trusting --admin-ca, with the bearer token when given.
type adminHTTP struct {
	client *http.Client
	scheme string
	token  string
}

// adminClientFlags are shared by health and rolling-restart. The token's
// env var is the server's, so one environment serves both.
func adminClientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "token", Usage: "admin bearer token", EnvVars: []string{"CHRONIK_ADMIN_TOKEN"}},
		&cli.StringFlag{Name: "token-file", Usage: "file holding the admin bearer token", EnvVars: []string{"CHRONIK_ADMIN_TOKEN_FILE"}},
		&cli.StringFlag{Name: "admin-ca", Usage: "PEM CA of the admin server's certificate: use HTTPS", EnvVars: []string{"CHRONIK_ADMIN_CA"}},
		&cli.StringFlag{Name: "admin-cert", Usage: "PEM client certificate for the admin server (with --admin-key)", EnvVars: []string{"CHRONIK_ADMIN_CLIENT_CERT"}},
		&cli.StringFlag{Name: "admin-key", Usage: "PEM private key of --admin-cert", EnvVars: []string{"CHRONIK_ADMIN_CLIENT_KEY"}},
	}
}

func newAdminHTTP(c *cli.Context, timeout time.Duration) (*adminHTTP, error) {
	a := &adminHTTP{client: &http.Client{Timeout: timeout}, scheme: "http", token: c.String("token")}
	if f := c.String("token-file"); f != "" && a.token == "" {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		a.token, _, _ = strings.Cut(strings.TrimSpace(string(raw)), "\n")
	}
	if c.String("admin-ca") == "" {
		if c.String("admin-cert") != "" {
			return nil, fmt.Errorf("--admin-cert needs --admin-ca")
		}
		return a, nil
	}
	pem, err := os.ReadFile(c.String("admin-ca"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--admin-ca %s: no PEM certificate", c.String("admin-ca"))
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cf := c.String("admin-cert"); cf != "" {
		cert, err := tls.LoadX509KeyPair(cf, c.String("admin-key"))
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	a.client.Transport = &http.Transport{TLSClientConfig: tc}
	a.scheme = "https"
	return a, nil
}

// request sends req with the token, when there is one.
func (a *adminHTTP) request(req *http.Request) (*http.Response, error) {
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	return a.client.Do(req)
}

func (a *adminHTTP) url(addr, path string) string { return a.scheme + "://" + addr + path }
