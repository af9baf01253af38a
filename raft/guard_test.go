package raft

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	clog "github.com/chronik-dev/chronik/log"
)

// deliver hands m to node to's host as if node from sent it.
func deliver(t *testing.T, to *testNode, from uint64, m *pb.Message) {
	t.Helper()
	data, err := encodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	to.host.Receive(from, []WireMsg{{Group: 7, Data: data}})
}

// TestHostileMessagesRejected: messages etcd raft would panic on, or that
// do not come from who sent them, never reach it; they are counted, and
// the group keeps working.
func TestHostileMessagesRejected(t *testing.T) {
	c := newTestCluster(t, 3, false)
	l := c.leader()
	lid := l.host.ID()
	var f *testNode
	for _, nd := range c.nodes {
		if nd != l {
			f = nd
			break
		}
	}
	fid := f.host.ID()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte("before"), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "every node to apply", func() bool {
		for _, nd := range c.nodes {
			if len(nd.sm.list()) != 1 {
				return false
			}
		}
		return true
	})
	term := l.rep.Status().Term
	u := func(v uint64) *uint64 { return &v }
	typ := func(t pb.MessageType) *pb.MessageType { return &t }
	data := encodeData(clog.KindCommand, 0, []byte("x"))
	hostile := []struct {
		to   *testNode
		from uint64
		m    *pb.Message
	}{
		// An empty proposal panics a leader.
		{l, fid, &pb.Message{Type: typ(pb.MsgProp), From: u(fid), To: u(lid)}},
		// A snapshot message without a snapshot panics a follower.
		{f, lid, &pb.Message{Type: typ(pb.MsgSnap), From: u(lid), To: u(fid), Term: u(term)}},
		// Claims to come from a node other than the connection's.
		{f, fid, &pb.Message{Type: typ(pb.MsgHeartbeat), From: u(lid), To: u(fid), Term: u(term)}},
		// Addressed to another node.
		{f, lid, &pb.Message{Type: typ(pb.MsgHeartbeat), From: u(lid), To: u(99), Term: u(term)}},
		// A local message type.
		{f, lid, &pb.Message{Type: typ(pb.MsgHup), From: u(lid), To: u(fid), Term: u(term)}},
		// Entries that do not follow the append's index.
		{f, lid, &pb.Message{Type: typ(pb.MsgApp), From: u(lid), To: u(fid), Term: u(term), Index: u(1), LogTerm: u(1),
			Entries: []*pb.Entry{{Index: u(5), Term: u(term), Data: data}}}},
		// No term: etcd raft would take it for a local message.
		{f, lid, &pb.Message{Type: typ(pb.MsgHeartbeat), From: u(lid), To: u(fid)}},
	}
	before := l.host.RejectedMessages() + f.host.RejectedMessages()
	for _, h := range hostile {
		deliver(t, h.to, h.from, h.m)
	}
	// A heartbeat committing far past the follower's log is clamped, not
	// dropped: the real leader sends one after a torn tail. The follower
	// reports it, and the leader probes it (refill.go) and keeps leading:
	// the follower holds its log, so the probe finds nothing to send.
	deliver(t, f, lid, &pb.Message{Type: typ(pb.MsgHeartbeat), From: u(lid), To: u(fid), Term: u(term), Commit: u(1 << 40)})
	if got := l.host.RejectedMessages() + f.host.RejectedMessages() - before; got != uint64(len(hostile)) {
		t.Fatalf("rejected %d messages, want %d", got, len(hostile))
	}
	waitFor(t, 5*time.Second, "the clamped heartbeat", func() bool { return f.host.ClampedCommits() == 1 })
	waitFor(t, 5*time.Second, "the lost-tail report to be answered", func() bool {
		return l.host.sentRefills.Load() > 0 && len(l.rep.Status().Refilling) == 0
	})
	if s := l.rep.Status(); !s.IsLeader() || s.Term != term {
		t.Fatalf("leadership moved after the lost-tail report: leader %v term %d, was %d", s.IsLeader(), s.Term, term)
	}
	if _, err := c.leader().rep.Propose(ctx, clog.KindCommand, []byte("after"), true); err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.nodes {
		if nd.rep.Status().Failed {
			t.Fatalf("node %d failed", nd.host.ID())
		}
	}
}

// TestPanicFailsOneGroup: a panic on a replica's worker fails that replica
// (as a storage error does), not the process; the group's quiet followers
// hear of it and elect a new leader although the node still answers pings.
func TestPanicFailsOneGroup(t *testing.T) {
	// No recovery during the test: the recovered replica's own messages
	// would wake the group.
	c := newTestClusterRecover(t, 3, false, time.Minute)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.rep.Propose(ctx, clog.KindCommand, []byte("a"), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the group to go quiet", func() bool {
		for _, nd := range c.nodes {
			if !nd.rep.quiesced.Load() {
				return false
			}
		}
		return true
	})
	l.rep.enqueue(func() { l.rep.inOps = append(l.rep.inOps, func() { panic("injected") }) })
	waitFor(t, 2*time.Second, "the panicked replica to fail", func() bool { return l.rep.Status().Failed })
	if s := l.rep.Status(); s.IsLeader() || s.Leader != 0 {
		t.Fatalf("failed replica still shows a leader: state %v leader %d", s.State, s.Leader)
	}
	waitFor(t, 2*time.Second, "a new leader", func() bool {
		for _, nd := range c.nodes {
			if s := nd.rep.Status(); nd != l && s.IsLeader() && s.LeaderReady {
				return true
			}
		}
		return false
	})
}
