package raft

import (
	"fmt"
	"testing"
	"time"
)

// TestMembershipVoteMoveSurvivesRestarts is the metadata group's vote
// move: voters 1,2,3 with learner 4 become voters 2,3,4 with 1 demoted to
// learner. Node 1 then stops for good and 2, 3, 4 restart one at a time,
// each with the original voters as ReplicaConfig.Peers: each starts from
// the configuration its own log holds, so the group keeps committing
// without 1, and a node that joins afterwards from the original voters
// reaches the same configuration.
func TestMembershipVoteMoveSurvivesRestarts(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	c.leader(5 * time.Second)
	c.start(4, true)
	c.reconfigure(Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}, 10*time.Second)
	ld := startLoad(c, "v")
	ld.waitAcked(t, 10)
	steps := c.reconfigure(Membership{Voters: []uint64{2, 3, 4}, Learners: []uint64{1}}, 20*time.Second)
	t.Logf("vote move 1 -> 4: steps %v", steps)
	c.configIs([]uint64{1, 2, 3, 4}, []uint64{2, 3, 4}, []uint64{1}, 5*time.Second)
	if c.node(4).rep.Status().Gagged {
		t.Fatal("node 4 is still gagged after its promotion")
	}
	ld.waitAcked(t, ld.count()+10)
	acked := ld.finish()
	c.stop(1)
	for _, id := range []uint64{2, 3, 4} {
		c.stop(id)
		c.start(id, false)
		c.configIs([]uint64{id}, []uint64{2, 3, 4}, []uint64{1}, 5*time.Second)
		c.propose([]byte(fmt.Sprint("after-restart-", id)), 10*time.Second)
		acked = append(acked, fmt.Sprint("after-restart-", id))
	}
	c.start(5, true)
	c.reconfigure(Membership{Voters: []uint64{2, 3, 4}, Learners: []uint64{5}}, 20*time.Second)
	c.configIs([]uint64{2, 3, 4, 5}, []uint64{2, 3, 4}, []uint64{5}, 5*time.Second)
	c.holdsAll([]uint64{2, 3, 4, 5}, acked, 10*time.Second)
}
