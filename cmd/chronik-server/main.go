// Command chronik-server runs a Chronik node.
//
//	chronik-server --node-id 1 --cluster-config cluster.toml
//
// Every flag can also be set through a CHRONIK_* environment variable
// (--drain-timeout is CHRONIK_DRAIN_TIMEOUT, and so on).
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	app := &cli.App{
		Name:  "chronik-server",
		Usage: "a Kafka-compatible broker whose partitions are replicated with Raft",
		Description: "Runs one node of a Chronik cluster. On SIGTERM or SIGINT the node shuts down gracefully:\n" +
			"it drains requests, hands leadership of its partitions to in-sync followers, syncs its logs\n" +
			"and exits 0. A second signal, or the sum of the stage timeouts plus 5s, forces an exit with code 1.",
		Flags:  serverFlags(),
		Action: runServer,
		Commands: []*cli.Command{
			healthCommand(),
			rollingRestartCommand(),
			usersCommand(),
			electCommand(),
			clusterCommand(),
		},
	}
	if err := app.Run(interspersed(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "chronik-server:", err)
		os.Exit(1)
	}
}
