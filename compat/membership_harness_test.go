package compat

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Harness additions for membership tests: a node added to a running
// cluster, a wiped data directory, a frozen process.

// addNode adds a node with the next id and fresh ports, not started. Its
// cluster config is the cluster's plus its own [[nodes]] entry; the other
// nodes' files stay as they are (the registry tells them about it).
func (c *cluster) addNode() *node {
	c.t.Helper()
	ports := freePorts(c.t, 3)
	id := len(c.nodes) + 1
	nd := &node{id: id, kafka: ports[0], raft: ports[1], admin: ports[2],
		dataDir: filepath.Join(c.dir, fmt.Sprintf("node-%d", id))}
	if len(c.nodes) > 0 {
		nd.extraArgs = c.nodes[0].extraArgs
	}
	base, err := os.ReadFile(c.cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	entry := fmt.Sprintf("\n[[nodes]]\nid = %d\nkafka = %q\nraft = %q\nadmin = %q\n", nd.id, nd.kafka, nd.raft, nd.admin)
	nd.cfg = filepath.Join(c.dir, fmt.Sprintf("cluster-node-%d.toml", id))
	if err := os.WriteFile(nd.cfg, append(base, entry...), 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.nodes = append(c.nodes, nd)
	return nd
}

// wipe deletes node id's data directory (the node must not run).
func (c *cluster) wipe(id int) {
	c.t.Helper()
	if c.node(id).running() {
		c.t.Fatalf("wipe: node %d is running", id)
	}
	if err := os.RemoveAll(c.node(id).dataDir); err != nil {
		c.t.Fatal(err)
	}
}

// freeze stops node id's process with SIGSTOP (a node cut off without a
// closed connection); thaw resumes it.
func (c *cluster) freeze(id int) {
	c.t.Helper()
	if err := c.node(id).cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) thaw(id int) {
	c.t.Helper()
	if err := c.node(id).cmd.Process.Signal(syscall.SIGCONT); err != nil {
		c.t.Fatal(err)
	}
}

// nodesJSON is one entry of /nodes.
type nodesJSON struct {
	ID              int32  `json:"id"`
	Kafka           string `json:"kafka"`
	Connected       bool   `json:"connected"`
	State           string `json:"state"`
	Incarnation     string `json:"incarnation"`
	RejoiningGroups int    `json:"rejoining_groups"`
}

func (c *cluster) nodesOf(id int) ([]nodesJSON, error) {
	code, body, err := c.get(id, "/nodes")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("/nodes: %d %s", code, body)
	}
	var out []nodesJSON
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// incarnationOf is node id's registered incarnation as node from sees it.
func (c *cluster) incarnationOf(from, id int) string {
	c.t.Helper()
	ns, err := c.nodesOf(from)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range ns {
		if n.ID == int32(id) {
			return n.Incarnation
		}
	}
	return ""
}

// waitRejoined waits until node from's /nodes shows node id registered
// with an incarnation other than old and nothing left to rejoin, and
// every other node registered, and returns how long that took.
func (c *cluster) waitRejoined(from, id int, old string, d time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	var last []nodesJSON
	for time.Since(start) < d {
		ns, err := c.nodesOf(from)
		if err == nil {
			last = ns
			done := len(ns) > 0
			for _, n := range ns {
				if n.State == "" || n.RejoiningGroups > 0 || (n.ID == int32(id) && (n.Incarnation == old || n.Incarnation == "")) {
					done = false
				}
			}
			if done {
				return time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, nd := range c.nodes {
		for _, l := range nd.log.lines("") {
			if strings.Contains(l, "membership") || strings.Contains(l, "rejoin") || strings.Contains(l, "regist") || strings.Contains(l, "incarnation") {
				c.t.Logf("node %d: %s", nd.id, l)
			}
		}
	}
	c.t.Fatalf("node %d not rejoined after %v: %+v", id, d, last)
	return 0
}

// exitWithin waits for node id to exit on its own and returns its output.
func (c *cluster) exitWithin(id int, d time.Duration) (error, string) {
	c.t.Helper()
	nd := c.node(id)
	select {
	case <-nd.exited:
		return nd.exitErr, nd.log.String()
	case <-time.After(d):
		c.t.Fatalf("node %d still runs after %v\n%s", id, d, nd.log.tail(3000))
		return nil, ""
	}
}

// logHas reports whether node id printed a line containing all of subs.
func (c *cluster) logHas(id int, subs ...string) bool {
	for _, l := range c.node(id).log.lines(subs[0]) {
		ok := true
		for _, s := range subs[1:] {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			return true
		}
	}
	return false
}
