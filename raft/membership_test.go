package raft

import (
	"os"

	"context"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// TestMembershipGrowAndShrink adds a fourth member to a three-voter group
// under proposals (it joins gagged, catches up as a learner, is promoted
// and ungagged), then removes a follower, then the leader (which hands
// leadership over first): every acknowledged proposal is on every member.
func TestMembershipGrowAndShrink(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	c.leader(5 * time.Second)
	ld := startLoad(c, "a")
	ld.waitAcked(t, 10)
	n4 := c.start(4, true)
	if !n4.rep.Status().Gagged {
		t.Fatal("a joining replica is not gagged")
	}
	steps := c.reconfigure(Membership{Voters: []uint64{1, 2, 3, 4}}, 20*time.Second)
	t.Logf("grow 3 -> 4: steps %v", steps)
	c.configIs([]uint64{1, 2, 3, 4}, []uint64{1, 2, 3, 4}, nil, 5*time.Second)
	waitFor(t, 5*time.Second, "node 4 ungagged", func() bool { return !n4.rep.Status().Gagged })
	if _, err := os.Stat(joiningPath(n4.dir)); err == nil {
		t.Fatal("joining marker still there after the promotion")
	}

	l := c.leader(5 * time.Second)
	var follower uint64
	for _, id := range []uint64{1, 2, 3, 4} {
		if id != l.host.ID() {
			follower = id
			break
		}
	}
	keep := slices.DeleteFunc([]uint64{1, 2, 3, 4}, func(id uint64) bool { return id == follower })
	steps = c.reconfigure(Membership{Voters: keep}, 20*time.Second)
	t.Logf("remove follower %d: steps %v", follower, steps)
	c.configIs(keep, keep, nil, 5*time.Second)
	waitFor(t, 5*time.Second, "removal notice", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.removed[follower] > 0 })

	l = c.leader(5 * time.Second)
	lid := l.host.ID()
	keep2 := slices.DeleteFunc(slices.Clone(keep), func(id uint64) bool { return id == lid })
	steps = c.reconfigure(Membership{Voters: keep2}, 20*time.Second)
	t.Logf("remove leader %d: steps %v", lid, steps)
	if !slices.Contains(steps, "transfer") {
		t.Fatalf("leader removal did not hand over first: %v", steps)
	}
	c.configIs(keep2, keep2, nil, 5*time.Second)
	ld.waitAcked(t, ld.count()+10)
	acked := ld.finish()
	if len(acked) < 20 {
		t.Fatalf("only %d proposals acknowledged under the changes", len(acked))
	}
	c.holdsAll(keep2, acked, 10*time.Second)
	t.Logf("%d proposals acknowledged during the changes, all on %v", len(acked), keep2)
}

// TestMembershipMoveGroup moves a group of three entirely to three other
// nodes (1,2,3 -> 4,5,6) under proposals; the old members are told they
// were removed.
func TestMembershipMoveGroup(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	c.leader(5 * time.Second)
	ld := startLoad(c, "m")
	ld.waitAcked(t, 10)
	for _, id := range []uint64{4, 5, 6} {
		c.start(id, true)
	}
	start := time.Now()
	steps := c.reconfigure(Membership{Voters: []uint64{4, 5, 6}}, 30*time.Second)
	t.Logf("move 1,2,3 -> 4,5,6 took %v: steps %v", time.Since(start).Round(time.Millisecond), steps)
	c.configIs([]uint64{4, 5, 6}, []uint64{4, 5, 6}, nil, 5*time.Second)
	ld.waitAcked(t, ld.count()+10)
	acked := ld.finish()
	c.holdsAll([]uint64{4, 5, 6}, acked, 10*time.Second)
	for _, id := range []uint64{4, 5, 6} {
		if c.node(id).rep.Status().Gagged {
			t.Fatalf("node %d still gagged", id)
		}
	}
	waitFor(t, 5*time.Second, "removal notices", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.removed[1] > 0 && c.removed[2] > 0 && c.removed[3] > 0
	})
	t.Logf("%d proposals acknowledged during the move, all on 4,5,6", len(acked))
}

// TestMembershipJointCrash kills the leader while the group is in joint
// consensus: a new leader finishes the change through Reconfigure, and
// nothing acknowledged is lost. The joint configuration is entered with
// an explicit leave, so it stays joint until someone leaves it; the
// killed leader restarts and replays the joint change over the
// configuration as of its applied index.
func TestMembershipJointCrash(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	for _, id := range []uint64{1, 2, 3, 4} {
		c.start(id, id == 4)
	}
	ld := startLoad(c, "j")
	c.reconfigure(Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}, 10*time.Second)
	waitFor(t, 5*time.Second, "learner 4 caught up", func() bool {
		l := c.leader(5 * time.Second)
		s := l.rep.Status()
		return s.Match[4] >= s.Commit
	})
	l := c.leader(5 * time.Second)
	lid := l.host.ID()
	var drop uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != lid {
			drop = id
			break
		}
	}
	// Promote 4 and remove another voter in one joint change left
	// explicitly.
	cc := &pb.ConfChangeV2{Transition: pb.ConfChangeTransitionJointExplicit.Enum(), Changes: []*pb.ConfChangeSingle{
		change(pb.ConfChangeAddNode, 4), change(pb.ConfChangeRemoveNode, drop)},
		Context: encodeConfContext(0, map[uint64]uint64{4: c.incs[4]})}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.rep.Wait(ctx, l.rep.submitConfChange(cc), true); err != nil {
		t.Fatal(err)
	}
	// Wait returns once the change is applied; the status showing it is
	// published right after, from the replica's own goroutine.
	waitFor(t, 2*time.Second, "joint configuration in the leader's status", func() bool {
		return len(l.rep.Status().Outgoing) > 0
	})
	c.stop(lid)
	want := slices.DeleteFunc([]uint64{1, 2, 3, 4}, func(id uint64) bool { return id == drop })
	steps := c.reconfigure(Membership{Voters: want}, 20*time.Second)
	t.Logf("new leader finished the joint change: steps %v", steps)
	if !slices.Contains(steps, "leave joint") {
		t.Fatalf("steps %v did not leave the joint configuration", steps)
	}
	live := slices.DeleteFunc(slices.Clone(want), func(id uint64) bool { return id == lid })
	c.configIs(live, want, nil, 5*time.Second)
	c.start(lid, false)
	c.configIs(want, want, nil, 10*time.Second)
	if s := c.node(lid).rep.Status(); s.Failed {
		t.Fatal("the restarted leader failed replaying the joint change")
	}
	acked := ld.finish()
	c.holdsAll(want, acked, 10*time.Second)
	t.Logf("%d acknowledged proposals on %v", len(acked), want)
}

// TestMembershipJointAutoLeaveCrash kills the leader right after it
// applied a joint change that leaves automatically: the new leader
// leaves it (or it was left already) and Reconfigure ends where wanted.
func TestMembershipJointAutoLeaveCrash(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	for _, id := range []uint64{4, 5} {
		c.start(id, true)
	}
	ld := startLoad(c, "k")
	want := Membership{Voters: []uint64{1, 2, 3, 4, 5}}
	for {
		l := c.leader(5 * time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, err := l.rep.Reconfigure(ctx, want)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if p.Step == "joint" {
			c.stop(l.host.ID())
			break
		}
		select {
		case <-l.rep.Changed():
		case <-time.After(50 * time.Millisecond):
		}
	}
	want.Voters = []uint64{1, 2, 3, 4, 5}
	steps := c.reconfigure(want, 20*time.Second)
	t.Logf("after the crash: steps %v", steps)
	var live []uint64
	for _, nd := range c.running() {
		live = append(live, nd.host.ID())
	}
	c.configIs(live, want.Voters, nil, 5*time.Second)
	acked := ld.finish()
	c.holdsAll(live, acked, 10*time.Second)
}

// TestMembershipSnapshotAfterRetention has a follower catch up by
// snapshot after retention moved the log base, while the group is in a
// joint configuration entered after that base: the snapshot carries the
// configuration as of its index and the follower replays the joint
// change on it (with the current configuration it would enter the joint
// configuration twice, which panics in etcd raft). A member restarted in
// the joint configuration replays it the same way from its applied index.
func TestMembershipSnapshotAfterRetention(t *testing.T) {
	c := newMemberCluster(t, 1, 2, 3)
	c.host = func(cfg *Config) { cfg.RetentionInterval = 20 * time.Millisecond }
	c.replica = func(rc *ReplicaConfig) {
		rc.Retention = func() (int64, time.Duration) { return 16 << 10, 0 }
	}
	for _, id := range []uint64{1, 2, 3} {
		c.start(id, false)
	}
	l := c.leader(5 * time.Second)
	var down uint64
	var others []uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != l.host.ID() && down == 0 {
			down = id
		} else {
			others = append(others, id)
		}
	}
	c.stop(down)
	pad := make([]byte, 400)
	for i := 0; i < 300; i++ {
		c.propose(pad, 20*time.Second)
	}
	waitFor(t, 5*time.Second, "retention to move the log base", func() bool { return c.leader(5*time.Second).rep.Log().FirstIndex() > 100 })
	c.start(4, true)
	c.reconfigure(Membership{Voters: []uint64{others[0], others[1], down}, Learners: []uint64{4}}, 10*time.Second)
	waitFor(t, 5*time.Second, "learner 4 caught up", func() bool {
		s := c.leader(5 * time.Second).rep.Status()
		return s.Match[4] >= s.Commit
	})
	// Promote 4 and demote others[1] in one joint change left explicitly.
	cc := &pb.ConfChangeV2{Transition: pb.ConfChangeTransitionJointExplicit.Enum(), Changes: []*pb.ConfChangeSingle{
		change(pb.ConfChangeAddNode, 4), change(pb.ConfChangeAddLearnerNode, others[1])},
		Context: encodeConfContext(0, map[uint64]uint64{4: c.incs[4]})}
	l = c.leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.rep.Wait(ctx, l.rep.submitConfChange(cc), true); err != nil {
		t.Fatal(err)
	}
	jointAt := l.rep.Status().Applied
	base := l.rep.Log().FirstIndex()
	if base > jointAt {
		t.Fatalf("the joint change at %d is not in the retained log (base %d)", jointAt, base)
	}
	for i := 0; i < 5; i++ {
		c.propose(pad, 5*time.Second)
	}
	c.start(down, false)
	nd := c.node(down)
	waitFor(t, 10*time.Second, "the restarted follower to catch up", func() bool {
		s := nd.rep.Status()
		return s.Failed || (s.Applied >= c.leader(5*time.Second).rep.Status().Commit && len(s.Outgoing) > 0)
	})
	if nd.rep.Status().Failed {
		t.Fatal("the follower failed catching up by snapshot")
	}
	if first := nd.rep.Log().FirstIndex(); first < base || first > jointAt {
		t.Fatalf("follower log starts at %d: want a snapshot at the leader's base %d, before the joint change at %d", first, base, jointAt)
	}
	t.Logf("follower restarted its log at %d by snapshot and replayed the joint change at %d", nd.rep.Log().FirstIndex(), jointAt)
	// A member restarted in the joint configuration.
	c.stop(4)
	c.start(4, false)
	waitFor(t, 10*time.Second, "restarted member 4 to catch up", func() bool {
		s := c.node(4).rep.Status()
		return s.Failed || (s.Applied >= c.leader(5*time.Second).rep.Status().Commit && len(s.Outgoing) > 0)
	})
	if c.node(4).rep.Status().Failed {
		t.Fatal("member 4 failed replaying the joint change after a restart")
	}
	want := Membership{Voters: []uint64{others[0], down, 4}, Learners: []uint64{others[1]}}
	steps := c.reconfigure(want, 20*time.Second)
	t.Logf("finish: steps %v", steps)
	c.configIs([]uint64{1, 2, 3, 4}, want.Voters, want.Learners, 5*time.Second)
}
