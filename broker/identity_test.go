package broker

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func identityConfig(t *testing.T, cluster string, node int32, nodes ...int32) *Config {
	t.Helper()
	cf := &ClusterFile{ClusterID: cluster}
	for _, n := range nodes {
		cf.Nodes = append(cf.Nodes, NodeSpec{ID: n, Kafka: "127.0.0.1:1", Raft: "127.0.0.1:2"})
	}
	return &Config{NodeID: node, Cluster: cf, DataDir: t.TempDir()}
}

func TestIdentityFreshThenReloaded(t *testing.T) {
	cfg := identityConfig(t, "c1", 2, 1, 2, 3)
	id, err := loadIdentity(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if id.Mode != modeUndecided || id.incarnation() == 0 || id.NodeID != 2 || id.ClusterID != "c1" {
		t.Fatalf("fresh identity %+v", id)
	}
	fi, err := os.Stat(filepath.Join(cfg.DataDir, identityFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.json mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := loadIdentity(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if again.Incarnation != id.Incarnation {
		t.Fatalf("incarnation changed across a restart: %s then %s", id.Incarnation, again.Incarnation)
	}
}

func TestIdentitySingleNodeBootstrapsAtOnce(t *testing.T) {
	cfg := identityConfig(t, "c1", 1, 1)
	id, err := loadIdentity(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if id.Mode != modeBootstrap || len(id.MetaVoters) != 1 {
		t.Fatalf("single node identity %+v", id)
	}
}

func TestIdentityUpgradeFromDirWithoutFile(t *testing.T) {
	cfg := identityConfig(t, "c1", 3, 1, 2, 3)
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, metaName), 0o700); err != nil {
		t.Fatal(err)
	}
	id, err := loadIdentity(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if id.Mode != modeExisting {
		t.Fatalf("mode %q, want %q", id.Mode, modeExisting)
	}
}

func TestIdentityOfAnotherClusterOrNodeRefused(t *testing.T) {
	cfg := identityConfig(t, "c1", 2, 1, 2, 3)
	if _, err := loadIdentity(cfg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cluster string
		node    int32
	}{{"c2", 2}, {"c1", 3}} {
		other := *cfg
		other.Cluster = &ClusterFile{ClusterID: tc.cluster, Nodes: cfg.Cluster.Nodes}
		other.NodeID = tc.node
		_, err := loadIdentity(&other)
		var mm *IdentityMismatchError
		if !errors.As(err, &mm) {
			t.Fatalf("cluster %s node %d: err %v, want a mismatch", tc.cluster, tc.node, err)
		}
		msg := err.Error()
		for _, want := range []string{cfg.DataDir, `"c1" node 2`, `"` + tc.cluster + `" node `, "refusing to start"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
		}
	}
}

func TestIdentityDamagedFileIsAClearError(t *testing.T) {
	good := `{"version":1,"cluster_id":"c1","node_id":2,"incarnation":"00000000000000ab","created":"2026-01-01T00:00:00Z","mode":"bootstrap"}`
	cases := map[string]string{
		"empty":        "",
		"torn":         good[:len(good)/2],
		"garbage":      "\x00\xff\x13garbage",
		"wrong type":   `{"version":"one"}`,
		"bad version":  strings.Replace(good, `"version":1`, `"version":9`, 1),
		"bad inc":      strings.Replace(good, "00000000000000ab", "xyz", 1),
		"zero inc":     strings.Replace(good, "00000000000000ab", "0000000000000000", 1),
		"bad mode":     strings.Replace(good, "bootstrap", "sideways", 1),
		"bad node":     strings.Replace(good, `"node_id":2`, `"node_id":-4`, 1),
		"huge":         strings.Repeat(" ", maxIdentityBytes+10) + good,
		"json array":   "[1,2,3]",
		"json null":    "null",
		"trailing bad": good + "}",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := identityConfig(t, "c1", 2, 1, 2, 3)
			path := filepath.Join(cfg.DataDir, identityFile)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadIdentity(cfg)
			if err == nil {
				t.Fatalf("no error for a %s file", name)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name %s", err, path)
			}
		})
	}
	cfg := identityConfig(t, "c1", 2, 1, 2, 3)
	if err := os.WriteFile(filepath.Join(cfg.DataDir, identityFile), []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadIdentity(cfg); err != nil {
		t.Fatalf("the intact file: %v", err)
	}
}

func TestJoinDecisionRule(t *testing.T) {
	me := identity{Incarnation: "00000000000000aa"}
	all := []int32{1, 2, 3}
	fresh := identityMsg{State: stateFresh, Inc: "1"}
	exists := identityMsg{State: stateExists, Inc: "2"}
	counted := identityMsg{State: stateExists, Inc: "3", Counted: me.Incarnation}
	for _, tc := range []struct {
		name    string
		answers map[uint64]identityMsg
		want    string
	}{
		{"nobody answered", nil, modeUndecided},
		{"one fresh peer makes a majority", map[uint64]identityMsg{2: fresh}, modeBootstrap},
		{"a peer with state", map[uint64]identityMsg{2: exists}, modeJoin},
		{"state beats fresh", map[uint64]identityMsg{2: fresh, 3: exists}, modeJoin},
		{"counted by a bootstrapper", map[uint64]identityMsg{2: counted, 3: exists}, modeBootstrap},
	} {
		if got, _ := decide(me, all, 2, tc.answers); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if got, _ := decide(me, []int32{1, 2, 3, 4, 5}, 3, map[uint64]identityMsg{2: fresh}); got != modeUndecided {
		t.Errorf("2 of 5 fresh: %q, want undecided", got)
	}
}

// TestComposeGrowConfig: chronik-4's config is the compose cluster's plus
// node 4, so the running nodes need no change to let it join.
func TestComposeGrowConfig(t *testing.T) {
	base, err := LoadClusterFile("../deploy/docker/cluster.toml")
	if err != nil {
		t.Fatal(err)
	}
	grow, err := LoadClusterFile("../deploy/docker/cluster-grow.toml")
	if err != nil {
		t.Fatal(err)
	}
	if grow.ClusterID != base.ClusterID || len(grow.Nodes) != len(base.Nodes)+1 {
		t.Fatalf("cluster-grow.toml: cluster %q with %d nodes, want %q with %d", grow.ClusterID, len(grow.Nodes), base.ClusterID, len(base.Nodes)+1)
	}
	for i, n := range base.Nodes {
		if !reflect.DeepEqual(grow.Nodes[i], n) {
			t.Errorf("node %d differs: %+v, base %+v", n.ID, grow.Nodes[i], n)
		}
	}
	if grow.Nodes[len(base.Nodes)].ID != 4 {
		t.Errorf("the added node is %d, want 4", grow.Nodes[len(base.Nodes)].ID)
	}
}
