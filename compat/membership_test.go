package compat

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestRefusesDataDirOfAnotherCluster: a data directory written by a node of
// cluster "compat" is refused by a node configured for another cluster,
// with an error naming both, and the process exits non-zero.
func TestRefusesDataDirOfAnotherCluster(t *testing.T) {
	c := startCluster(t, 1)
	c.stop(1, 20*time.Second)
	data, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(string(data), `cluster_id = "compat"`, `cluster_id = "elsewhere"`, 1)
	if err := os.WriteFile(c.cfg, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	c.start(1)
	exitErr, out := c.exitWithin(1, 20*time.Second)
	if exitErr == nil {
		t.Fatalf("the node started on another cluster's data directory:\n%s", out)
	}
	for _, want := range []string{`cluster "compat" node 1`, `cluster "elsewhere" node 1`, c.node(1).dataDir, "refusing to start"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestUpgradeWithoutIdentityFile: data directories of a release without
// node.json (the file removed from this release's directories) start as a
// normal restart: every record is there, and node.json is written.
func TestUpgradeWithoutIdentityFile(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "upgrade-id", 3, 3, nil)
	acked := produceAll(t, newFranz(t, c, kgo.DefaultProduceTopic("upgrade-id")), "upgrade-id", 300, "u")
	for _, nd := range c.nodes {
		c.stop(nd.id, 20*time.Second)
	}
	for _, nd := range c.nodes {
		if err := os.Remove(filepath.Join(nd.dataDir, "node.json")); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range c.nodes {
		c.start(nd.id)
	}
	c.waitReady(30 * time.Second)
	recs := consumeAll(t, c, "upgrade-id", len(acked))
	for _, r := range recs {
		delete(acked, string(r.Value))
	}
	if len(acked) != 0 {
		t.Fatalf("%d acknowledged records missing after the upgrade", len(acked))
	}
	for _, nd := range c.nodes {
		var id struct {
			Mode string `json:"mode"`
		}
		data, err := os.ReadFile(filepath.Join(nd.dataDir, "node.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &id); err != nil || id.Mode != "existing" {
			t.Fatalf("node %d: node.json %s (%v), want mode existing", nd.id, data, err)
		}
	}
}

// TestWipedNodeRejoinsUnderLoad: a node is killed, its data directory
// deleted, and it starts again under acks=all idempotent load. It joins
// every group as a non-voter, is promoted back once caught up, and the
// cluster returns to full ISR with nothing lost.
func TestWipedNodeRejoinsUnderLoad(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "rejoin", 6, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	l := startLoader(t, c, "rejoin", 1000)
	l.waitAcks(2000, 30*time.Second)
	old := c.incarnationOf(1, 3)
	c.kill(3)
	c.wipe(3)
	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	restart := time.Now()
	c.start(3)
	took := c.waitRejoined(1, 3, old, 90*time.Second)
	for _, nd := range c.nodes {
		c.waitHealthy(nd.id, 60*time.Second)
	}
	full := time.Since(restart)
	if !c.logHas(3, "joining it") {
		t.Errorf("node 3 did not say it joins an existing cluster")
	}
	l.waitAcks(l.ackedCount()+1000, 30*time.Second)
	l.halt()
	t.Log(l.report())
	lost, dup := l.verify(c)
	t.Logf("wiped node 3 rejoined every group %v after its restart; full ISR everywhere after %v", took.Round(time.Millisecond), full.Round(time.Millisecond))
	if lost != 0 || dup != 0 {
		t.Fatalf("lost %d acknowledged records, %d duplicates", lost, dup)
	}
}

// TestWipedNodeCannotElectWithoutTheAckers is issue 11's scenario: node C
// cut off (SIGSTOP); records acknowledged (acks=all) by A and B; A killed;
// B's data directory deleted and B started again; C resumed. B, which
// lost its votes and acknowledgements, must not help C elect a leader that
// lacks the records: no leader until A is back. Then every acknowledged
// record is there, and B is promoted back to a voter.
func TestWipedNodeCannotElectWithoutTheAckers(t *testing.T) {
	setup := time.Now()
	c := startCluster(t, 3)
	createTopic(t, c, "scenario", 1, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	t.Logf("cluster up and healthy after %v", time.Since(setup).Round(time.Millisecond))
	a := int(c.leaderOf(1, "scenario", 0))
	if a == 0 {
		t.Fatal("no leader for scenario-0")
	}
	var others []int
	for _, nd := range c.nodes {
		if nd.id != a {
			others = append(others, nd.id)
		}
	}
	b, cNode := others[0], others[1]
	t.Logf("A=%d (leader), B=%d (wiped), C=%d (cut off)", a, b, cNode)

	oldB := c.incarnationOf(a, b)
	c.freeze(cNode)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.node(a).kafka, c.node(b).kafka), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DefaultProduceTopic("scenario"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	acked := produceAll(t, cl, "scenario", 500, "w")
	cl.Close()
	t.Logf("%d records acknowledged by A and B", len(acked))

	c.kill(a)
	c.kill(b)
	c.wipe(b)
	c.start(b)
	c.thaw(cNode)
	// For a while, no leader may appear: B is gagged, C alone is no
	// quorum, and a leader without A would lack the records.
	watchUntil := time.Now().Add(6 * time.Second)
	for time.Now().Before(watchUntil) {
		for _, id := range []int{b, cNode} {
			if l := c.leaderOf(id, "scenario", 0); l != 0 && int(l) != a {
				t.Fatalf("node %d reports leader %d for scenario-0 while A (%d) is down", id, l, a)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !c.logHas(b, "joining it") {
		t.Fatalf("B did not decide to join the existing cluster")
	}
	restart := time.Now()
	c.start(a)
	c.waitReady(60 * time.Second)
	t.Logf("A back: every node ready after %v", time.Since(restart).Round(time.Millisecond))
	took := c.waitRejoined(a, b, oldB, 60*time.Second)
	for _, nd := range c.nodes {
		c.waitHealthy(nd.id, 60*time.Second)
	}
	t.Logf("A back: B rejoined every group after %v; full ISR after %v", took.Round(time.Millisecond), time.Since(restart).Round(time.Millisecond))
	recs := consumeAll(t, c, "scenario", len(acked))
	seen := map[string]int{}
	for _, r := range recs {
		seen[string(r.Value)]++
	}
	lost, dup := 0, 0
	for v := range acked {
		if seen[v] == 0 {
			lost++
		}
	}
	for _, n := range seen {
		dup += n - 1
	}
	if lost != 0 || dup != 0 {
		t.Fatalf("lost %d acknowledged records, %d duplicates", lost, dup)
	}
	ps, err := c.partitions(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Topic == "scenario" && !slices.Contains(p.InSyncReplicas, int32(b)) {
			t.Fatalf("B (%d) is not in the ISR of scenario-0: %v", b, p.InSyncReplicas)
		}
	}
}

// TestFourthNodeJoinsRunningCluster: a node with the cluster's config plus
// its own [[nodes]] entry starts next to a running 3-node cluster whose
// files do not list it. It registers, and every node lists it in
// Metadata, DescribeCluster and /nodes.
func TestFourthNodeJoinsRunningCluster(t *testing.T) {
	c := startCluster(t, 3)
	createTopic(t, c, "grow", 3, 3, nil)
	nd := c.addNode()
	start := time.Now()
	c.start(nd.id)
	// Each old node is asked directly (a client's Metadata goes through
	// its cache): DescribeCluster and Metadata must list node 4.
	listed := map[int]time.Duration{}
	clients := map[int]*kgo.Client{}
	for _, old := range c.nodes[:3] {
		cl, err := kgo.NewClient(kgo.SeedBrokers(old.kafka))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		clients[old.id] = cl
	}
	has4 := func(ids []int32) bool { return slices.Contains(ids, int32(nd.id)) }
	waitFor(t, 30*time.Second, "every node to list node 4 in DescribeCluster and Metadata", func() bool {
		for id, cl := range clients {
			if _, ok := listed[id]; ok {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			dc, err := kmsg.NewPtrDescribeClusterRequest().RequestWith(ctx, cl.Broker(id))
			var md *kmsg.MetadataResponse
			if err == nil {
				md, err = kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl.Broker(id))
			}
			cancel()
			if err != nil {
				continue
			}
			var dcIDs, mdIDs []int32
			for _, b := range dc.Brokers {
				dcIDs = append(dcIDs, b.NodeID)
			}
			for _, b := range md.Brokers {
				mdIDs = append(mdIDs, b.NodeID)
			}
			if has4(dcIDs) && has4(mdIDs) {
				listed[id] = time.Since(start).Round(time.Millisecond)
			}
		}
		return len(listed) == len(clients)
	})
	c.waitReady(60 * time.Second)
	up := time.Since(start)
	t.Logf("node 4 listed by nodes 1-3 after %v (since its start); it was ready after %v", listed, up.Round(time.Millisecond))
	ns, err := c.nodesOf(1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ns, func(n nodesJSON) bool { return n.ID == int32(nd.id) && n.State == "active" && n.Connected }) {
		t.Fatalf("node 1's /nodes does not show node 4 active and connected: %+v", ns)
	}
	// Node 4 follows the metadata (a learner of the metadata group): it
	// sees the topic created before it joined.
	cl := newFranz(t, c, kgo.SeedBrokers(nd.kafka))
	adm := kadm.NewClient(cl)
	waitFor(t, 30*time.Second, "node 4 to know topic grow", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		md, err := adm.Metadata(ctx, "grow")
		return err == nil && md.Topics["grow"].Err == nil && len(md.Topics["grow"].Partitions) == 3
	})
}
