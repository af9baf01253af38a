package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"
)

// healthCommand probes a node's admin endpoint; it serves as the container
// healthcheck (images built FROM scratch have no curl).
func healthCommand() *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "probe a node's admin server; exit 0 when the endpoint answers 200",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "admin", Value: "127.0.0.1:3000", Usage: "admin address", EnvVars: []string{"CHRONIK_HEALTH_ADMIN"}},
			&cli.StringFlag{Name: "endpoint", Value: "/ready", Usage: "path to probe: /ready (serving), /health (full ISR) or /restart-safe"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Second},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing"},
		}, adminClientFlags()...),
		Action: func(c *cli.Context) error {
			ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
			defer cancel()
			a, err := newAdminHTTP(c, c.Duration("timeout"))
			if err != nil {
				return err
			}
			url := a.url(c.String("admin"), c.String("endpoint"))
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := a.request(req)
			if err != nil {
				return cli.Exit(fmt.Sprintf("%s: %v", url, err), 1)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if !c.Bool("quiet") {
				fmt.Fprintf(c.App.Writer, "%s\n", body)
			}
			if resp.StatusCode != http.StatusOK {
				return cli.Exit(fmt.Sprintf("%s: %s", url, resp.Status), 1)
			}
			return nil
		},
	}
}
