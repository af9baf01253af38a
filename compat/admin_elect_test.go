package compat

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// moveLeadershipOff restarts node id with SIGTERM, so that it hands its
// leaderships away, and returns the partitions of topic that it prefers
// and no longer leads: with the automatic rebalance off, a restarted node
// does not take them back.
func moveLeadershipOff(t *testing.T, c *cluster, id int, topic string) []int32 {
	t.Helper()
	c.stop(id, 20*time.Second)
	c.start(id)
	c.waitHealthy(id, 30*time.Second)
	var moved []int32
	waitFor(t, 20*time.Second, "every node to agree on the leaders", func() bool {
		moved = nil
		var leaders []int32
		for _, nd := range c.nodes {
			ps, err := c.partitions(nd.id)
			if err != nil {
				return false
			}
			var ls []int32
			for _, p := range ps {
				if p.Topic == topic {
					ls = append(ls, p.Leader)
					if nd.id == id && p.Replicas[0] == int32(id) && p.Leader != int32(id) {
						moved = append(moved, p.Partition)
					}
				}
			}
			if leaders != nil && !slices.Equal(ls, leaders) {
				return false
			}
			leaders = ls
		}
		return true
	})
	if len(moved) == 0 {
		t.Fatalf("node %d leads every partition it prefers after its restart", id)
	}
	return moved
}

// awaitLeaders waits until every node sees node lead each partition.
func awaitLeaders(t *testing.T, c *cluster, topic string, parts []int32, node int32, d time.Duration) {
	t.Helper()
	waitFor(t, d, "preferred leaders on every node", func() bool {
		for _, nd := range c.nodes {
			if !nd.running() {
				continue
			}
			for _, p := range parts {
				if c.leaderOf(nd.id, topic, p) != node {
					return false
				}
			}
		}
		return true
	})
}

// electResult is one partition's answer to an election.
type electResult struct {
	code int16
	msg  string
}

// electUntilServed runs an election of parts and runs it again for the
// partitions refused with PREFERRED_LEADER_NOT_AVAILABLE, which a thawed
// preferred replica gets until its peers hear that it serves clients
// again, for up to d. It returns every partition's last answer.
func electUntilServed(t *testing.T, d time.Duration, parts []int32, elect func([]int32) map[int32]electResult) map[int32]electResult {
	t.Helper()
	deadline := time.Now().Add(d)
	out := map[int32]electResult{}
	for {
		var again []int32
		for p, r := range elect(parts) {
			out[p] = r
			if r.code == kerr.PreferredLeaderNotAvailable.Code {
				again = append(again, p)
			}
		}
		if len(again) == 0 || time.Now().After(deadline) {
			return out
		}
		t.Logf("elect again %v: %s", again, out[again[0]].msg)
		parts = again
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAdminElectLeaders: on a 3-node cluster without the automatic
// rebalance, node 1 restarts and its preferred partitions stay led by the
// others. A preferred election sent to node 1 itself (which must ask each
// leader), then one through sarama's ClusterAdmin, hand them back; the
// partitions already led by their preferred replica answer
// ELECTION_NOT_NEEDED, and an election over every partition lists none of
// them. Unclean elections are refused with the reason. With node 1 down,
// its partitions answer PREFERRED_LEADER_NOT_AVAILABLE.
func TestAdminElectLeaders(t *testing.T) {
	c := startCluster(t, 3, withArgs("--auto-leader-rebalance=false"))
	const topic = "elect"
	createTopic(t, c, topic, 6, 3, nil)
	c.waitHealthy(1, 30*time.Second)
	cl := newFranz(t, c)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	moved := moveLeadershipOff(t, c, 1, topic)
	isMoved := map[int32]bool{}
	for _, p := range moved {
		isMoved[p] = true
	}
	start := time.Now()
	got := electUntilServed(t, 10*time.Second, []int32{0, 1, 2, 3, 4, 5}, func(parts []int32) map[int32]electResult {
		req := kmsg.NewPtrElectLeadersRequest()
		req.TimeoutMillis = 20000
		rt := kmsg.NewElectLeadersRequestTopic()
		rt.Topic, rt.Partitions = topic, parts
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(1))
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("ElectLeaders on node 1: %v (code %d)", err, resp.ErrorCode)
		}
		out := map[int32]electResult{}
		for _, rt := range resp.Topics {
			for _, p := range rt.Partitions {
				r := electResult{code: p.ErrorCode}
				if p.ErrorMessage != nil {
					r.msg = *p.ErrorMessage
				}
				out[p.Partition] = r
			}
		}
		return out
	})
	took := time.Since(start)
	for p := int32(0); p < 6; p++ {
		want := kerr.ElectionNotNeeded.Code
		if isMoved[p] {
			want = 0
		}
		if got[p].code != want {
			t.Errorf("partition %d: error %d (%v) %q, want %d", p, got[p].code, kerr.ErrorForCode(got[p].code), got[p].msg, want)
		}
	}
	awaitLeaders(t, c, topic, moved, 1, 10*time.Second)
	t.Logf("preferred election of %d partitions through node 1 (a follower of each): %v", len(moved), took.Round(time.Millisecond))

	all, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, nil)
	if err != nil {
		t.Fatalf("kadm ElectLeaders over every partition: %v", err)
	}
	for tp, ps := range all {
		for p, r := range ps {
			if tp == topic || r.Err != nil {
				t.Errorf("election over every partition lists %s-%d (%v %s); every preferred replica leads already", tp, p, r.Err, r.ErrMessage)
			}
		}
	}
	unclean, err := adm.ElectLeaders(ctx, kadm.ElectLiveReplica, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		t.Fatalf("kadm unclean ElectLeaders: %v", err)
	}
	if r := unclean[topic][0]; r.Err != kerr.ElectionNotNeeded || !strings.Contains(r.ErrMessage, "out-of-sync") {
		t.Errorf("unclean election of a led partition: %v %q, want ELECTION_NOT_NEEDED and the reason", r.Err, r.ErrMessage)
	}

	moved = moveLeadershipOff(t, c, 1, topic)
	sc := saramaConfig()
	sadm, err := sarama.NewClusterAdminFromClient(newSaramaClient(t, c, sc))
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	got = electUntilServed(t, 10*time.Second, moved, func(parts []int32) map[int32]electResult {
		res, err := sadm.ElectLeaders(sarama.PreferredElection, map[string][]int32{topic: parts})
		if err != nil {
			t.Fatalf("sarama ElectLeaders: %v", err)
		}
		out := map[int32]electResult{}
		for p, r := range res[topic] {
			out[p] = electResult{code: int16(r.ErrorCode)}
			if r.ErrorMessage != nil {
				out[p] = electResult{int16(r.ErrorCode), *r.ErrorMessage}
			}
		}
		return out
	})
	took = time.Since(start)
	for _, p := range moved {
		if r, ok := got[p]; !ok || r.code != 0 {
			t.Errorf("sarama: partition %d: error %d %q (listed %v)", p, r.code, r.msg, ok)
		}
	}
	awaitLeaders(t, c, topic, moved, 1, 10*time.Second)
	t.Logf("sarama ClusterAdmin preferred election of %d partitions: %v", len(moved), took.Round(time.Millisecond))

	// chronik-server elect-leaders, for a topic.
	moved = moveLeadershipOff(t, c, 1, topic)
	var out []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err = exec.CommandContext(ctx, serverBin, "elect-leaders", "--bootstrap", c.node(2).kafka, topic).CombinedOutput()
		if err == nil || time.Now().After(deadline) || !strings.Contains(string(out), "does not serve clients yet") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("chronik-server elect-leaders %s:\n%s", topic, out)
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("%d partitions moved to their preferred replica, 0 failed", len(moved))) {
		t.Errorf("chronik-server elect-leaders: %v\n%s", err, out)
	}
	awaitLeaders(t, c, topic, moved, 1, 10*time.Second)

	c.kill(1)
	waitFor(t, 20*time.Second, "new leaders after node 1 was killed", func() bool {
		for _, p := range moved {
			if l := c.leaderOf(2, topic, p); l <= 1 {
				return false
			}
		}
		return true
	})
	down, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, kadm.TopicsSet{topic: {moved[0]: {}}})
	if err != nil {
		t.Fatalf("kadm ElectLeaders with the preferred replica down: %v", err)
	}
	if r := down[topic][moved[0]]; r.Err != kerr.PreferredLeaderNotAvailable {
		t.Errorf("preferred replica down: %v %q, want PREFERRED_LEADER_NOT_AVAILABLE", r.Err, r.ErrMessage)
	}
}
