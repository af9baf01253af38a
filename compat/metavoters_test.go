package compat

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metaVotersOf is the metadata group's voters and move target as node id
// lists them in /partitions (nil, nil when it does not answer).
func (c *cluster) metaVotersOf(id int) (voters, target []int32, leader int32) {
	code, body, err := c.get(id, "/partitions")
	if err != nil || code != 200 {
		return nil, nil, 0
	}
	var rows []struct {
		Topic    string  `json:"topic"`
		Leader   int32   `json:"leader"`
		Replicas []int32 `json:"replicas"`
		Target   []int32 `json:"target"`
	}
	if json.Unmarshal([]byte(body), &rows) != nil {
		return nil, nil, 0
	}
	for _, r := range rows {
		if r.Topic == "__cluster_metadata" {
			return r.Replicas, r.Target, r.Leader
		}
	}
	return nil, nil, 0
}

// waitMetaVoters waits until every node of ids lists want (sorted) as the
// metadata voters with no move under way.
func (c *cluster) waitMetaVoters(t *testing.T, ids []int, want []int32, d time.Duration) {
	t.Helper()
	waitFor(t, d, fmt.Sprintf("metadata voters %v on nodes %v", want, ids), func() bool {
		for _, id := range ids {
			vs, target, _ := c.metaVotersOf(id)
			vs = slices.Clone(vs)
			slices.Sort(vs)
			if target != nil || !slices.Equal(vs, want) {
				return false
			}
		}
		return true
	})
}

// joinFourth starts node 4 in a running 3-node cluster and waits until
// every node lists it.
func joinFourth(t *testing.T, c *cluster) {
	t.Helper()
	nd := c.addNode()
	c.start(nd.id)
	waitFor(t, 30*time.Second, "nodes 1-3 to list node 4 active and connected", func() bool {
		for id := 1; id <= 3; id++ {
			ns, err := c.nodesOf(id)
			if err != nil || !slices.ContainsFunc(ns, func(n nodesJSON) bool { return n.ID == 4 && n.State == "active" && n.Connected }) {
				return false
			}
		}
		return true
	})
}

// TestDecommissionBootstrapNodeMovesMetadataVote: a 3-node cluster gains
// node 4 (a metadata learner), and `cluster decommission 1` under acks=all
// load empties node 1, moves its metadata vote to 4 and marks it removed.
// Node 1 is stopped and the others restarted one at a time: the cluster
// keeps serving from voters {2,3,4}, and nothing acknowledged is lost.
func TestDecommissionBootstrapNodeMovesMetadataVote(t *testing.T) {
	c := startCluster(t, 3, withArgs("--rebalance-delay", "500ms"))
	adm := kadm.NewClient(newFranz(t, c))
	servesMoves(t, adm)
	const topic = "meta-move"
	assign := map[int32][]int32{}
	for p := 0; p < 6; p++ {
		assign[int32(p)] = rotateIDs([]int32{1, 2, 3}, p)
	}
	if err := createWithAssignment(context.Background(), newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	joinFourth(t, c)
	l := startLoader(t, c, topic, 300)
	l.waitAcks(300, 30*time.Second)

	start := time.Now()
	out, code := clusterCLI(t, c, 3*time.Minute, "decommission", "1", "--batch", "3", "--no-progress-bar", "--poll", "200ms")
	took := time.Since(start)
	if code != 0 || !strings.Contains(out, "broker 1 marked removed") {
		t.Fatalf("decommission 1: exit %d\n%s", code, out)
	}
	t.Logf("decommission output:\n%s", out)
	stalls := l.stallsBetween(start, time.Now())
	c.waitMetaVoters(t, []int{2, 3, 4}, []int32{2, 3, 4}, 20*time.Second)
	nodes, err := c.nodesOf(2)
	if err != nil {
		t.Fatal(err)
	}
	var listed []int32
	for _, n := range nodes {
		listed = append(listed, n.ID)
	}
	if !slices.Equal(listed, []int32{2, 3, 4}) {
		t.Errorf("node 2 lists brokers %v after the decommission, want [2 3 4]", listed)
	}
	if _, body, _ := c.get(2, "/nodes"); strings.Count(body, `"metadata_voter":true`) != 3 {
		t.Errorf("/nodes does not mark 3 metadata voters: %s", body)
	}
	if st, code := clusterCLI(t, c, 30*time.Second, "status"); code != 0 || !strings.Contains(st, "metadata voters: [2 3 4]") {
		t.Errorf("status: exit %d\n%s", code, st)
	}
	c.stop(1, 20*time.Second)

	// Each survivor restarts from the voters its own log holds, not the
	// bootstrap list in node.json.
	for _, id := range []int{2, 3, 4} {
		c.stop(id, 20*time.Second)
		c.start(id)
		for _, o := range []int{2, 3, 4} {
			c.waitHealthy(o, 30*time.Second)
		}
		l.waitAcks(l.ackedCount()+100, 30*time.Second)
	}
	c.waitMetaVoters(t, []int{2, 3, 4}, []int32{2, 3, 4}, 20*time.Second)
	checkControllerValid(t, c, []int32{2, 3, 4})
	l.waitAcks(l.ackedCount()+300, 30*time.Second)
	l.halt()
	l.checkDelivered(t, c, "the decommission and restarts")
	checkStalls(t, stalls, 5*time.Second, " during the decommission")
	t.Logf("decommission of bootstrap node 1 (6 partitions, metadata vote to 4) took %v (longest ack gap per partition %s); %s",
		took.Round(time.Millisecond), stallSummary(stalls), l.report())
}

// checkControllerValid asks each node of ids for DescribeCluster: the
// controller must be one of ids.
func checkControllerValid(t *testing.T, c *cluster, ids []int32) {
	t.Helper()
	cl := newFranz(t, c)
	for _, id := range ids {
		waitFor(t, 10*time.Second, "a valid controller", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			dc, err := kmsg.NewPtrDescribeClusterRequest().RequestWith(ctx, cl.Broker(int(id)))
			return err == nil && slices.Contains(ids, dc.ControllerID)
		})
	}
}

// TestMetadataVoteMoveSurvivesLeaderKill: node 1 holds no replica and is
// unregistered while node 4, the vote's destination, is frozen, so the
// move waits for it to catch up; the metadata leader is killed (SIGKILL)
// then, node 4 thawed, and the next leader finishes the move from the
// target in the metadata. Load runs throughout; nothing is lost.
func TestMetadataVoteMoveSurvivesLeaderKill(t *testing.T) {
	// A short lag time, so that node 4 frozen for a moment is out of sync
	// while its peers still count it as up (they give up after 1 s).
	c := startCluster(t, 3, withArgs("--isr-lag-time", "300ms"))
	joinFourth(t, c)
	adm := kadm.NewClient(newFranz(t, c))
	// Node 1 gives its consumer offsets replicas to 4 first.
	offs := map[int32][]int32{}
	for p, reps := range topicReplicas(t, newFranz(t, c), "__consumer_offsets") {
		offs[p] = slices.Replace(slices.Clone(reps), slices.Index(reps, 1), slices.Index(reps, 1)+1, 4)
	}
	reassign(t, adm, "__consumer_offsets", offs)
	waitMovesDone(t, adm, "__consumer_offsets", 60*time.Second)
	const topic = "meta-kill"
	assign := map[int32][]int32{}
	for p := 0; p < 6; p++ {
		assign[int32(p)] = rotateIDs([]int32{2, 3, 4}, p)
	}
	if err := createWithAssignment(context.Background(), newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	l := startLoader(t, c, topic, 200)
	l.waitAcks(200, 30*time.Second)

	c.freeze(4)
	start := time.Now()
	t.Cleanup(func() { c.thaw(4) })
	// A metadata entry node 4 does not get (asked of node 2: a client
	// may pick the frozen node), and the lag time after it.
	cl2, err := kgo.NewClient(kgo.SeedBrokers(c.node(2).kafka))
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	alter := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeTopic, topic
	cfg := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	cfg.Name, cfg.Value = "retention.ms", kmsg.StringPtr("86400000")
	res.Configs = append(res.Configs, cfg)
	alter.Resources = append(alter.Resources, res)
	actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
	aresp, err := alter.RequestWith(actx, cl2.SeedBrokers()[0])
	acancel()
	if err != nil || aresp.Resources[0].ErrorCode != 0 {
		t.Fatalf("alter configs at node 2: %v %+v", err, aresp)
	}
	time.Sleep(500 * time.Millisecond)
	unreg := make(chan *kmsg.UnregisterBrokerResponse, 1)
	go func() {
		req := kmsg.NewPtrUnregisterBrokerRequest()
		req.BrokerID = 1
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		resp, _ := req.RequestWith(ctx, cl2.SeedBrokers()[0])
		unreg <- resp
	}()
	var leader int32
	waitFor(t, 10*time.Second, "the metadata vote move to start", func() bool {
		select {
		case resp := <-unreg:
			if resp != nil && resp.ErrorMessage != nil {
				t.Fatalf("UnregisterBroker 1 answered %d: %s", resp.ErrorCode, *resp.ErrorMessage)
			}
			unreg <- resp
		default:
		}
		_, target, lead := c.metaVotersOf(2)
		leader = lead
		return slices.Contains(target, 4) && lead != 0
	})
	c.kill(int(leader))
	c.thaw(4)
	t.Logf("killed metadata leader %d while the move waited for node 4", leader)
	<-unreg
	alive := []int{}
	for _, id := range []int{1, 2, 3, 4} {
		if id != int(leader) {
			alive = append(alive, id)
		}
	}
	c.waitMetaVoters(t, slices.DeleteFunc(slices.Clone(alive), func(id int) bool { return id == 1 }), []int32{2, 3, 4}, 30*time.Second)
	moved := time.Since(start)
	if leader != 1 {
		c.start(int(leader))
	}
	// The removal itself, now that node 1 no longer votes.
	cl := newFranz(t, c)
	waitFor(t, 30*time.Second, "UnregisterBroker 1 to succeed", func() bool {
		req := kmsg.NewPtrUnregisterBrokerRequest()
		req.BrokerID = 1
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := req.RequestWith(ctx, cl.Broker(2))
		return err == nil && (resp.ErrorCode == 0 || resp.ErrorCode == kerr.BrokerIDNotRegistered.Code) // removed already
	})
	c.waitMetaVoters(t, []int{2, 3, 4}, []int32{2, 3, 4}, 30*time.Second)
	checkControllerValid(t, c, []int32{2, 3, 4})
	stalls := l.stallsBetween(start, time.Now())
	l.waitAcks(l.ackedCount()+200, 30*time.Second)
	l.halt()
	l.checkDelivered(t, c, "the vote move and leader kill")
	t.Logf("vote move with the metadata leader killed finished after %v (ack gaps %s); %s",
		moved.Round(time.Millisecond), stallSummary(stalls), l.report())
}

// TestReplaceDeadBootstrapNodeMovesMetadataVote: bootstrap node 3 dies
// (SIGKILL) in a 3-node cluster that node 4 joined; `replace 3 --with 4`
// gives 4 its replicas and its metadata vote (voters {1,2,4} again), and
// `decommission 3` then marks it removed. Load runs throughout.
func TestReplaceDeadBootstrapNodeMovesMetadataVote(t *testing.T) {
	c := startCluster(t, 3, withArgs("--rebalance-delay", "500ms"))
	const topic = "meta-replace"
	assign := map[int32][]int32{}
	for p := 0; p < 6; p++ {
		assign[int32(p)] = rotateIDs([]int32{1, 2, 3}, p)
	}
	if err := createWithAssignment(context.Background(), newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	joinFourth(t, c)
	l := startLoader(t, c, topic, 300)
	l.waitAcks(300, 30*time.Second)

	c.kill(3)
	start := time.Now()
	out, code := clusterCLI(t, c, 3*time.Minute, "replace", "3", "--with", "4", "--batch", "3", "--no-progress-bar", "--poll", "200ms")
	took := time.Since(start)
	if code != 0 || !strings.Contains(out, "metadata voters now") {
		t.Fatalf("replace 3 --with 4: exit %d\n%s", code, out)
	}
	t.Logf("replace output:\n%s", out)
	c.waitMetaVoters(t, []int{1, 2, 4}, []int32{1, 2, 4}, 20*time.Second)
	out, code = clusterCLI(t, c, time.Minute, "decommission", "3", "--no-progress-bar", "--poll", "200ms")
	if code != 0 || !strings.Contains(out, "broker 3 marked removed") {
		t.Fatalf("decommission 3: exit %d\n%s", code, out)
	}
	checkControllerValid(t, c, []int32{1, 2, 4})
	stalls := l.stallsBetween(start, time.Now())
	l.waitAcks(l.ackedCount()+300, 30*time.Second)
	l.halt()
	l.checkDelivered(t, c, "the replace")
	t.Logf("dead node 3 replaced by 4, metadata vote included, in %v (ack gaps %s); %s", took.Round(time.Millisecond), stallSummary(stalls), l.report())
}
