package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chronik-dev/chronik/broker"
)

func rollingRestartCommand() *cli.Command {
	return &cli.Command{
		Name:  "rolling-restart",
		Usage: "restart every node of a cluster, one at a time, with no downtime",
		Description: "Restarts the nodes of --cluster-config one after another, followers first (the nodes leading\n" +
			"the fewest partitions). Before each node it waits until /restart-safe says stopping it keeps\n" +
			"every partition's quorum; after it, until the node is back with every partition led and in\n" +
			"sync. By default a node is restarted by sending SIGTERM to its process (found through its\n" +
			"admin /health), which suits a supervisor that starts it again: `make run`, systemd with\n" +
			"Restart=always, Docker's restart policy. Otherwise give --restart-command, run with sh -c\n" +
			"after replacing {id}, {host}, {admin} and {kafka}, e.g.\n" +
			"  --restart-command 'ssh {host} sudo systemctl restart chronik-server'",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "cluster-config", Usage: "cluster TOML file", EnvVars: []string{"CHRONIK_CLUSTER_CONFIG"}, Required: true},
			&cli.StringFlag{Name: "restart-command", Usage: "shell command that restarts node {id} (default: SIGTERM to the local process)"},
			&cli.StringFlag{Name: "nodes", Usage: "comma-separated node ids to restart (default: all)"},
			&cli.DurationFlag{Name: "safe-timeout", Value: 60 * time.Second, Usage: "how long to wait for a node to be safe to restart"},
			&cli.DurationFlag{Name: "shutdown-timeout", Value: 60 * time.Second, Usage: "how long to wait for a node to stop"},
			&cli.DurationFlag{Name: "rejoin-timeout", Value: 60 * time.Second, Usage: "how long to wait for a node to rejoin with a full ISR"},
		}, adminClientFlags()...),
		Action: runRollingRestart,
	}
}

type nodeHealth struct {
	Status    string    `json:"status"`
	NodeID    int32     `json:"node_id"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
}

type partitionRow struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Replicas  []int32 `json:"replicas"`
	Target    []int32 `json:"target,omitempty"` // a move under way
}

type rollStep struct {
	id                     int32
	stopped, back, healthy time.Duration
}

// adminClient is set from the flags when the command starts.
var adminClient = &adminHTTP{client: &http.Client{Timeout: 2 * time.Second}, scheme: "http"}

// getJSON fetches an admin endpoint; the status code is returned with the
// body decoded (when it is JSON) whatever it is.
func getJSON(addr, path string, v any) (int, error) {
	req, err := http.NewRequest(http.MethodGet, adminClient.url(addr, path), nil)
	if err != nil {
		return 0, err
	}
	resp, err := adminClient.request(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

func runRollingRestart(c *cli.Context) error {
	a, err := newAdminHTTP(c, 2*time.Second)
	if err != nil {
		return err
	}
	adminClient = a
	cf, err := broker.LoadClusterFile(c.String("cluster-config"))
	if err != nil {
		return err
	}
	nodes := cf.Nodes
	if s := c.String("nodes"); s != "" {
		want := map[int32]bool{}
		for _, f := range strings.Split(s, ",") {
			id, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return fmt.Errorf("--nodes: %v", err)
			}
			want[int32(id)] = true
		}
		var sel []broker.NodeSpec
		for _, n := range nodes {
			if want[n.ID] {
				sel = append(sel, n)
			}
		}
		nodes = sel
	}
	for _, n := range cf.Nodes {
		if n.Admin == "" {
			return fmt.Errorf("node %d has no admin address in %s", n.ID, c.String("cluster-config"))
		}
	}
	out := c.App.Writer
	start := time.Now()
	order := rollOrder(cf.Nodes, nodes)
	ids := make([]string, len(order))
	for i, n := range order {
		ids[i] = strconv.Itoa(int(n.ID))
	}
	fmt.Fprintf(out, "rolling restart of %d node(s), in order %s (followers first)\n", len(order), strings.Join(ids, ", "))
	var steps []rollStep
	for i, n := range order {
		fmt.Fprintf(out, "[%d/%d] node %d (admin %s)\n", i+1, len(order), n.ID, n.Admin)
		st, err := restartOne(c, cf, n)
		if err != nil {
			return cli.Exit(fmt.Sprintf("node %d: %v; stopping the roll", n.ID, err), 1)
		}
		steps = append(steps, st)
	}
	total := time.Since(start)
	fmt.Fprintf(out, "\nrolling restart complete in %s\n", total.Round(time.Millisecond))
	if d, ok := waitPreferred(cf, c.Duration("rejoin-timeout")); ok {
		fmt.Fprintf(out, "leadership back on the preferred replicas %s after the last node rejoined\n", d.Round(time.Millisecond))
	} else {
		fmt.Fprintf(out, "leadership not back on every preferred replica after %s (automatic rebalancing may be off)\n", d.Round(time.Millisecond))
	}
	fmt.Fprintf(out, "%-6s %-12s %-12s %-14s\n", "node", "stopped in", "back in", "healthy after")
	for _, s := range steps {
		fmt.Fprintf(out, "%-6d %-12s %-12s %-14s\n", s.id, s.stopped.Round(time.Millisecond), s.back.Round(time.Millisecond), s.healthy.Round(time.Millisecond))
	}
	return nil
}

// rollOrder puts the nodes leading the fewest partitions first, so fewer
// leaderships move twice.
func rollOrder(all, sel []broker.NodeSpec) []broker.NodeSpec {
	counts := map[int32]int{}
	for _, n := range all {
		var rows []partitionRow
		if code, err := getJSON(n.Admin, "/partitions", &rows); err == nil && code == 200 {
			for _, r := range rows {
				counts[r.Leader]++
			}
			break
		}
	}
	order := append([]broker.NodeSpec(nil), sel...)
	sort.SliceStable(order, func(i, j int) bool { return counts[order[i].ID] < counts[order[j].ID] })
	return order
}

func restartOne(c *cli.Context, cf *broker.ClusterFile, n broker.NodeSpec) (rollStep, error) {
	out := c.App.Writer
	step := rollStep{id: n.ID}
	// 1. Safe to stop?
	deadline := time.Now().Add(c.Duration("safe-timeout"))
	var lastReasons string
	for {
		var r struct {
			Safe    bool     `json:"safe"`
			Reasons []string `json:"reasons"`
		}
		code, err := getJSON(n.Admin, "/restart-safe", &r)
		if err == nil && code == 200 && r.Safe {
			break
		}
		why := fmt.Sprint(err)
		if err == nil {
			why = strings.Join(r.Reasons, "; ")
		}
		if why != lastReasons {
			fmt.Fprintf(out, "  waiting until it is safe to restart: %s\n", why)
			lastReasons = why
		}
		if time.Now().After(deadline) {
			return step, fmt.Errorf("not safe to restart after %s: %s", c.Duration("safe-timeout"), why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var before nodeHealth
	if _, err := getJSON(n.Admin, "/health", &before); err != nil {
		return step, fmt.Errorf("reading /health: %v", err)
	}
	// 2. Restart.
	t0 := time.Now()
	if cmdTmpl := c.String("restart-command"); cmdTmpl != "" {
		host, _, _ := net.SplitHostPort(n.Admin)
		cmdline := strings.NewReplacer("{id}", strconv.Itoa(int(n.ID)), "{host}", host, "{admin}", n.Admin, "{kafka}", n.Kafka).Replace(cmdTmpl)
		fmt.Fprintf(out, "  running: %s\n", cmdline)
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("shutdown-timeout")+c.Duration("rejoin-timeout"))
		cmd := exec.CommandContext(ctx, "sh", "-c", cmdline)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		cancel()
		if err != nil {
			return step, fmt.Errorf("restart command: %v", err)
		}
	} else {
		if !isLocal(n.Admin) {
			return step, fmt.Errorf("admin %s is not on this host; give --restart-command", n.Admin)
		}
		if before.PID <= 0 {
			return step, fmt.Errorf("/health did not report a pid")
		}
		fmt.Fprintf(out, "  sending SIGTERM to pid %d\n", before.PID)
		if err := syscall.Kill(before.PID, syscall.SIGTERM); err != nil {
			return step, fmt.Errorf("signal pid %d: %v", before.PID, err)
		}
	}
	// 3. Wait for the old process to go and a new one to answer.
	stopDeadline := t0.Add(c.Duration("shutdown-timeout"))
	restarted := false
	for !restarted {
		var h nodeHealth
		_, err := getJSON(n.Admin, "/health", &h)
		switch {
		case err != nil && step.stopped == 0:
			step.stopped = time.Since(t0)
			fmt.Fprintf(out, "  stopped after %s\n", step.stopped.Round(time.Millisecond))
		case err == nil && h.StartedAt.After(before.StartedAt):
			if step.stopped == 0 {
				step.stopped = time.Since(t0)
			}
			restarted = true
		}
		if !restarted && time.Now().After(stopDeadline) && step.stopped == 0 {
			return step, fmt.Errorf("did not stop within %s", c.Duration("shutdown-timeout"))
		}
		if !restarted && time.Now().After(t0.Add(c.Duration("shutdown-timeout")+c.Duration("rejoin-timeout"))) {
			return step, fmt.Errorf("did not come back within %s", c.Duration("rejoin-timeout"))
		}
		if !restarted {
			time.Sleep(20 * time.Millisecond)
		}
	}
	step.back = time.Since(t0)
	fmt.Fprintf(out, "  running again after %s\n", step.back.Round(time.Millisecond))
	// 4. Healthy: every partition led and fully in sync.
	rejoin := time.Now().Add(c.Duration("rejoin-timeout"))
	for {
		code, err := getJSON(n.Admin, "/health", nil)
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(rejoin) {
			return step, fmt.Errorf("no full ISR within %s of rejoining", c.Duration("rejoin-timeout"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	step.healthy = time.Since(t0)
	fmt.Fprintf(out, "  back in sync after %s\n", step.healthy.Round(time.Millisecond))
	return step, nil
}

// waitPreferred waits until every partition is led by its first replica.
func waitPreferred(cf *broker.ClusterFile, timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < timeout {
		for _, n := range cf.Nodes {
			var rows []partitionRow
			if code, err := getJSON(n.Admin, "/partitions", &rows); err != nil || code != 200 {
				continue
			}
			all := true
			for _, r := range rows {
				if len(r.Replicas) > 0 && r.Leader != r.Replicas[0] {
					all = false
					break
				}
			}
			if all {
				return time.Since(start), true
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), false
}

// isLocal reports whether addr's host is this machine (loopback).
func isLocal(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}
