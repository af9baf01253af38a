package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/chronik-dev/chronik/raft"
)

// clusterCLI runs `chronik-server cluster ARGS` against c (seeds and admin
// addresses from its cluster.toml) and returns its output and exit code.
func clusterCLI(t *testing.T, c *cluster, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, serverBin, cliArgs(c, args)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("cluster %v: %v\n%s", args, err, out.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("cluster %v did not finish within %v:\n%s", args, timeout, out.String())
	}
	return out.String(), code
}

func cliArgs(c *cluster, args []string) []string {
	return append([]string{"cluster", args[0], "--cluster-config", c.cfg}, args[1:]...)
}

// brokerLoads counts each broker's replicas and preferred leaderships
// (first replica) of topic.
func brokerLoads(t *testing.T, adm *kadm.Client, topic string) (replicas, preferred map[int32]int) {
	t.Helper()
	replicas, preferred = map[int32]int{}, map[int32]int{}
	for _, reps := range topicReplicasOf(t, adm, topic) {
		for _, r := range reps {
			replicas[r]++
		}
		preferred[reps[0]]++
	}
	return replicas, preferred
}

func topicReplicasOf(t *testing.T, adm *kadm.Client, topic string) map[int32][]int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	out := map[int32][]int32{}
	for _, p := range md.Topics[topic].Partitions {
		out[p.Partition] = p.Replicas
	}
	return out
}

// servesMoves skips the test when the cluster does not serve
// AlterPartitionReassignments and ListPartitionReassignments.
func servesMoves(t *testing.T, adm *kadm.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs.Sorted() {
		_, _, a := v.KeyVersions(45)
		_, _, l := v.KeyVersions(46)
		if v.Err == nil && (!a || !l) {
			t.Skip("this build does not serve AlterPartitionReassignments / ListPartitionReassignments")
		}
	}
}

// TestClusterCLIPlanAndRefusals: status, the rebalance plan for a fourth
// broker that holds nothing, and the refusals (RF above the brokers left,
// the metadata quorum, add-node without an entry). None needs a move.
func TestClusterCLIPlanAndRefusals(t *testing.T) {
	c := startCluster(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := newFranz(t, c)
	assign := map[int32][]int32{}
	for p := 0; p < 6; p++ {
		assign[int32(p)] = rotateIDs([]int32{1, 2, 3}, p)
	}
	if err := createWithAssignment(ctx, cl, "spread", assign); err != nil {
		t.Fatal(err)
	}
	if err := createWithAssignment(ctx, cl, "wide", map[int32][]int32{0: {1, 2, 3, 4}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "leaders", func() bool {
		ps, err := c.partitions(1)
		if err != nil {
			return false
		}
		for _, p := range ps {
			if p.Leader == 0 {
				return false
			}
		}
		return true
	})

	out, code := clusterCLI(t, c, 30*time.Second, "status")
	if code != 0 || !strings.Contains(out, "cluster compat") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	for id := 1; id <= 4; id++ {
		if !strings.Contains(out, fmt.Sprintf("\n%d  ", id)) {
			t.Errorf("status does not list broker %d:\n%s", id, out)
		}
	}
	t.Logf("status:\n%s", out)

	out, code = clusterCLI(t, c, 30*time.Second, "plan-rebalance")
	m := regexp.MustCompile(`(?m)^4\s+(\d+) -> (\d+)\s`).FindStringSubmatch(out)
	if code != 0 || m == nil || atoi(m[2]) <= atoi(m[1]) || !strings.Contains(out, "[4]") {
		t.Fatalf("plan-rebalance: exit %d, want a plan giving broker 4 replicas:\n%s", code, out)
	}
	t.Logf("plan-rebalance:\n%s", out)

	out, code = clusterCLI(t, c, 30*time.Second, "decommission", "1", "--dry-run")
	if code == 0 || !strings.Contains(out, "topic wide has replication factor 4 but there would be only 3 active brokers once 1 is gone") {
		t.Fatalf("decommission 1 with an RF 4 topic: exit %d, want a refusal naming the topic:\n%s", code, out)
	}

	out, code = clusterCLI(t, c, 30*time.Second, "add-node", "5")
	if code == 0 || !strings.Contains(out, "no [[nodes]] entry for 5") || !strings.Contains(out, "id = 5") {
		t.Fatalf("add-node 5 without an entry: exit %d\n%s", code, out)
	}
	out, code = clusterCLI(t, c, 30*time.Second, "add-node", "4", "--timeout", "20s")
	if code != 0 || !strings.Contains(out, "node 4 has joined") {
		t.Fatalf("add-node 4 (running): exit %d\n%s", code, out)
	}

	// With node 3 down, the metadata group (nodes 1-4) keeps only 2 of 4
	// voters without node 1: refused before anything moves.
	c.kill(3)
	out, code = clusterCLI(t, c, 30*time.Second, "decommission", "1", "--dry-run")
	if code == 0 || !strings.Contains(out, "quorum needs 3") || !strings.Contains(out, "down: 3") {
		t.Fatalf("decommission 1 with node 3 down: exit %d, want the metadata quorum refusal:\n%s", code, out)
	}
	t.Logf("refusal: %s", strings.TrimSpace(out))
}

func rotateIDs(reps []int32, i int) []int32 {
	out := make([]int32, len(reps))
	for j := range reps {
		out[j] = reps[(i+j)%len(reps)]
	}
	return out
}

// TestClusterCLIRebalanceAndDecommissionUnderLoad: 4 nodes, a topic on
// nodes 1-3 under acks=all load. `rebalance` spreads it over all four,
// `decommission 1` empties node 1; nothing acknowledged is lost.
func TestClusterCLIRebalanceAndDecommissionUnderLoad(t *testing.T) {
	c := startCluster(t, 4, withArgs("--rebalance-delay", "500ms"))
	adm := kadm.NewClient(newFranz(t, c))
	servesMoves(t, adm)
	const topic = "grow"
	parts := 8
	if n, err := strconv.Atoi(os.Getenv("CHRONIK_TEST_CLI_PARTITIONS")); err == nil && n > 0 {
		parts = n
	}
	assign := map[int32][]int32{}
	for p := 0; p < parts; p++ {
		assign[int32(p)] = rotateIDs([]int32{1, 2, 3}, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := createWithAssignment(ctx, newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	l := startLoader(t, c, topic, 300)
	l.waitAcks(300, 30*time.Second)

	start := time.Now()
	out, code := clusterCLI(t, c, 3*time.Minute, "rebalance", "--batch", "3", "--no-progress-bar", "--poll", "200ms")
	rebalanceTook := time.Since(start)
	if code != 0 || !strings.Contains(out, "rebalance complete") {
		t.Fatalf("rebalance: exit %d\n%s", code, out)
	}
	t.Logf("rebalance output:\n%s", out)
	reps, pref := brokerLoads(t, adm, topic)
	total := parts * 3
	for id := int32(1); id <= 4; id++ {
		if reps[id] < total/4 || reps[id] > (total+3)/4 {
			t.Errorf("after rebalance broker %d holds %d replicas of %d, want %d-%d: %v", id, reps[id], total, total/4, (total+3)/4, reps)
		}
		if pref[id] < parts/4 || pref[id] > (parts+3)/4 {
			t.Errorf("after rebalance broker %d is preferred leader of %d of %d: %v", id, pref[id], parts, pref)
		}
	}
	rebalanceStalls := l.stallsBetween(start, time.Now())

	start = time.Now()
	out, code = clusterCLI(t, c, 3*time.Minute, "decommission", "1", "--batch", "3", "--no-progress-bar", "--poll", "200ms")
	decomTook := time.Since(start)
	// Every node of this cluster votes in the metadata group: node 1 is
	// emptied, its vote dropped (3 voters stay) and it is marked removed.
	emptied := strings.Contains(out, "broker 1 holds no replicas")
	if !emptied || code != 0 || !strings.Contains(out, "broker 1 marked removed") || !strings.Contains(out, "metadata voters now [2 3 4]") {
		t.Fatalf("decommission 1: exit %d\n%s", code, out)
	}
	t.Logf("decommission output:\n%s", out)
	// Every node's view (node 1's too: it stays up) lists nothing on 1.
	for id := 1; id <= 4; id++ {
		ps, err := c.partitions(id)
		if err != nil {
			t.Fatalf("node %d /partitions: %v", id, err)
		}
		for _, p := range ps {
			if p.Topic != "__cluster_metadata" && slices.Contains(p.Replicas, 1) {
				t.Errorf("node %d lists %s-%d on broker 1: %v", id, p.Topic, p.Partition, p.Replicas)
			}
		}
	}
	decomStalls := l.stallsBetween(start, time.Now())
	l.waitAcks(l.ackedCount()+300, 30*time.Second)
	l.halt()
	l.checkDelivered(t, c, "rebalance and decommission")
	checkStalls(t, rebalanceStalls, 5*time.Second, " during the rebalance")
	checkStalls(t, decomStalls, 5*time.Second, " during the decommission")
	t.Logf("rebalance of %d partitions onto 4 brokers took %v (ack gaps %s); decommission 1 took %v (ack gaps %s); %s",
		parts, rebalanceTook.Round(time.Millisecond), stallSummary(rebalanceStalls),
		decomTook.Round(time.Millisecond), stallSummary(decomStalls), l.report())
}

// TestClusterCLIResumeAfterKill: the rebalance command is killed (SIGKILL)
// after its first move finished; run again, it follows the moves left in
// flight and finishes the job, and a third run finds nothing to do.
func TestClusterCLIResumeAfterKill(t *testing.T) {
	c := startCluster(t, 4, withArgs("--rebalance-delay", "500ms"))
	adm := kadm.NewClient(newFranz(t, c))
	servesMoves(t, adm)
	const topic = "resume"
	parts := 8
	assign := map[int32][]int32{}
	for p := 0; p < parts; p++ {
		assign[int32(p)] = rotateIDs([]int32{1, 2, 3}, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := createWithAssignment(ctx, newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	l := startLoader(t, c, topic, 300)
	l.waitAcks(300, 30*time.Second)

	cmd := exec.Command(serverBin, cliArgs(c, []string{"rebalance", "--batch", "2", "--no-progress-bar", "--poll", "200ms"})...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	wait := func() { once.Do(func() { cmd.Wait() }) }
	t.Cleanup(func() { cmd.Process.Kill(); wait() })
	waitFor(t, 90*time.Second, "the first move to finish", func() bool { return len(out.lines("done     ")) > 0 })
	cmd.Process.Signal(syscall.SIGKILL)
	wait()
	t.Logf("killed after:\n%s", out.String())

	again, code := clusterCLI(t, c, 3*time.Minute, "rebalance", "--batch", "2", "--no-progress-bar", "--poll", "200ms")
	// Killed with moves left (batch 2 of 6, right after the first
	// finished), the second run has work: moves still in flight, or moves
	// not started.
	if code != 0 || !strings.Contains(again, "rebalance complete") && !strings.Contains(again, "already in progress") {
		t.Fatalf("rebalance after the kill: exit %d\n%s", code, again)
	}
	t.Logf("second run:\n%s", again)
	third, code := clusterCLI(t, c, time.Minute, "rebalance", "--no-progress-bar")
	if code != 0 || !strings.Contains(third, "nothing to move") {
		t.Fatalf("third run: exit %d, want nothing to move\n%s", code, third)
	}
	reps, _ := brokerLoads(t, adm, topic)
	if reps[4] < parts*3/4 {
		t.Errorf("broker 4 holds %d replicas after the resumed rebalance: %v", reps[4], reps)
	}
	l.halt()
	l.checkDelivered(t, c, "the killed and resumed rebalance")
	t.Logf("%s", l.report())
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestClusterCLIAddNode: `add-node 4 --rebalance` is started before node 4,
// waits for it to join the running cluster and gives it its share, under
// acks=all load. Node 4 is new to the cluster (its own [[nodes]] entry,
// the others' files unchanged) when the raft transport admits unregistered
// nodes; until then it is listed in cluster.toml and is down until now.
func TestClusterCLIAddNode(t *testing.T) {
	_, guests := any(&raft.TCPTransport{}).(interface{ AdmitGuests(...uint16) })
	var c *cluster
	var cfg string
	if guests {
		c = startCluster(t, 3, withArgs("--rebalance-delay", "500ms"))
		cfg = c.addNode().cfg
	} else {
		// Not wiped: a wiped node's rejoin is the membership tests' subject
		// (and its metadata replica sometimes waits for a leader change
		// first, see the report); what add-node does is the same.
		c = startCluster(t, 4, withArgs("--rebalance-delay", "500ms"))
		c.kill(4)
		cfg = c.cfg
	}
	adm := kadm.NewClient(newFranz(t, c))
	servesMoves(t, adm)
	const topic = "grown"
	if err := createWithAssignment(context.Background(), newFranz(t, c), topic, map[int32][]int32{
		0: {1, 2, 3}, 1: {2, 3, 1}, 2: {3, 1, 2}, 3: {1, 2, 3}, 4: {2, 3, 1}, 5: {3, 1, 2}}); err != nil {
		t.Fatal(err)
	}
	l := startLoader(t, c, topic, 300)
	l.waitAcks(300, 30*time.Second)

	cmd := exec.Command(serverBin, "cluster", "add-node", "4", "--cluster-config", cfg, "--rebalance",
		"--batch", "3", "--no-progress-bar", "--poll", "200ms", "--timeout", "2m")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitFor(t, 30*time.Second, "add-node to wait for node 4", func() bool {
		return len(out.lines("node 4 to register")) > 0 || len(out.lines("node 4 is registered but does not answer")) > 0
	})
	start := time.Now()
	c.start(4)
	select {
	case err := <-exited:
		if err != nil || !strings.Contains(out.String(), "node 4 has joined") || !strings.Contains(out.String(), "rebalance complete") {
			t.Fatalf("add-node 4 --rebalance: %v\n%s", err, out.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("add-node 4 --rebalance did not finish:\n%s", out.String())
	}
	took := time.Since(start)
	t.Logf("add-node output (new node: %v):\n%s", guests, out.String())
	if reps, _ := brokerLoads(t, adm, topic); reps[4] < 4 {
		t.Errorf("node 4 holds %d replicas of %s after add-node --rebalance: %v", reps[4], topic, reps)
	}
	l.waitAcks(l.ackedCount()+300, 30*time.Second)
	l.halt()
	l.checkDelivered(t, c, "add-node")
	t.Logf("node 4 joined and took its share in %v; %s", took.Round(time.Millisecond), l.report())
}

// TestClusterCLIReplaceDeadNode: node 3 dies (SIGKILL) under acks=all load
// and `replace 3 --with 4` gives its replicas to node 4: every partition is
// back to three replicas, none on 3, nothing lost.
func TestClusterCLIReplaceDeadNode(t *testing.T) {
	c := startCluster(t, 4, withArgs("--rebalance-delay", "500ms"))
	adm := kadm.NewClient(newFranz(t, c))
	servesMoves(t, adm)
	const topic = "repair"
	assign := map[int32][]int32{}
	for p := 0; p < 6; p++ {
		assign[int32(p)] = rotateIDs([]int32{1, 2, 3}, p)
	}
	if err := createWithAssignment(context.Background(), newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	l := startLoader(t, c, topic, 300)
	l.waitAcks(300, 30*time.Second)

	c.kill(3)
	start := time.Now()
	got, code := clusterCLI(t, c, 3*time.Minute, "replace", "3", "--with", "4", "--batch", "3", "--no-progress-bar", "--poll", "200ms")
	replaced := time.Since(start)
	if code != 0 || !strings.Contains(got, "replicas are on 4 now") {
		t.Fatalf("replace 3 --with 4: exit %d\n%s", code, got)
	}
	t.Logf("replace output:\n%s", got)
	for p, r := range topicReplicasOf(t, adm, topic) {
		if slices.Contains(r, 3) || !slices.Contains(r, 4) || len(r) != 3 {
			t.Errorf("partition %d on %v after replacing 3 with 4", p, r)
		}
	}
	stalls := l.stallsBetween(start, time.Now())
	l.waitAcks(l.ackedCount()+300, 30*time.Second)
	l.halt()
	l.checkDelivered(t, c, "the replace")
	t.Logf("node 3 replaced by 4 in %v (ack gaps %s); %s", replaced.Round(time.Millisecond), stallSummary(stalls), l.report())
}

// TestClusterCLIInterruptAndCancel: a throttled rebalance is interrupted
// (SIGINT, as Ctrl-C) while it copies; the command says the moves go on,
// `status` lists them, and `cancel` rolls them back: the partitions are on
// their old replicas again, with nothing moving.
func TestClusterCLIInterruptAndCancel(t *testing.T) {
	c := startCluster(t, 4, withArgs("--rebalance-delay", "500ms", "--replication-throttle", "65536"))
	adm := kadm.NewClient(newFranz(t, c))
	servesMoves(t, adm)
	const topic = "slow"
	assign := map[int32][]int32{0: {1, 2, 3}, 1: {2, 3, 1}, 2: {3, 1, 2}}
	if err := createWithAssignment(context.Background(), newFranz(t, c), topic, assign); err != nil {
		t.Fatal(err)
	}
	preload(t, c, topic, 600, 4096) // ~0.8 MiB a partition: ~12 s a copy at 64 KiB/s
	before := topicReplicasOf(t, adm, topic)

	cmd := exec.Command(serverBin, cliArgs(c, []string{"rebalance", "--batch", "2", "--no-progress-bar", "--poll", "200ms"})...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitFor(t, 30*time.Second, "a move of a slow partition to start", func() bool { return len(out.lines("started  slow-")) > 0 })
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(out.String(), "interrupted") || !strings.Contains(out.String(), "the moves in flight go on") {
			t.Fatalf("rebalance after SIGINT: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("rebalance did not stop on SIGINT:\n%s", out.String())
	}
	t.Logf("interrupted run:\n%s", out.String())

	st, code := clusterCLI(t, c, 30*time.Second, "status")
	if code != 0 || !strings.Contains(st, "moves in progress: ") || strings.Contains(st, "moves in progress: none") {
		t.Fatalf("status after the interrupt: exit %d, want moves listed\n%s", code, st)
	}
	t.Logf("status:\n%s", st)
	got, code := clusterCLI(t, c, 2*time.Minute, "cancel")
	if code != 0 || !strings.Contains(got, "cancelled: no move in progress") {
		t.Fatalf("cancel: exit %d\n%s", code, got)
	}
	t.Logf("cancel:\n%s", got)
	after := topicReplicasOf(t, adm, topic)
	for p, r := range before {
		if !slices.Equal(after[p], r) {
			// A move that finished before the cancel stays; one cancelled
			// goes back. Only the slow topic's moves were copying.
			if !strings.Contains(out.String(), fmt.Sprintf("done     slow-%d ", p)) {
				t.Errorf("partition %d on %v after cancel, was %v", p, after[p], r)
			}
		}
	}
	if st, _ := clusterCLI(t, c, 30*time.Second, "status"); !strings.Contains(st, "moves in progress: none") {
		t.Errorf("status after cancel:\n%s", st)
	}
}
