package compat

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Classic members joining KIP-848 consumer groups, and static classic
// members restarting, in classic and in mixed groups, across coordinator
// moves.

// upgradeSarama is the upgradeGroup's view of a sarama member: it owns
// its claims from Setup to Cleanup, which commits first.
type upgradeSarama struct {
	g  *upgradeGroup
	id int
}

func (h upgradeSarama) Setup(s sarama.ConsumerGroupSession) error {
	h.g.event(h.id, "assigned", s.Claims()[h.g.topic])
	return nil
}

func (h upgradeSarama) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	h.g.event(h.id, "revoked", s.Claims()[h.g.topic])
	return nil
}

func (h upgradeSarama) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			h.g.log.consumed(h.id, m.Partition, m.Offset, string(m.Value))
			s.MarkMessage(m, "")
		case <-s.Context().Done():
			return nil
		}
	}
}

// addSarama starts a sarama member (eager, range) of the group.
func (g *upgradeGroup) addSarama() int {
	g.mu.Lock()
	g.next++
	id := g.next
	g.mu.Unlock()
	cfg := saramaConfig()
	cfg.ClientID = fmt.Sprintf("upgrade-sarama-%d", id)
	cfg.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	cfg.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	cfg.Consumer.Group.Session.Timeout = 10 * time.Second
	cfg.Consumer.Group.Rebalance.Timeout = 20 * time.Second
	cfg.Consumer.Group.Rebalance.Retry.Backoff = 200 * time.Millisecond
	sg, err := sarama.NewConsumerGroup(g.c.bootstrap(), g.group, cfg)
	if err != nil {
		g.t.Fatalf("sarama consumer group: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &upgradeMember{stop: cancel, done: make(chan struct{})}
	m.close = func() {
		if err := sg.Close(); err != nil {
			g.log.fail(fmt.Errorf("sarama close: %w", err))
		}
	}
	g.mu.Lock()
	g.members[id] = m
	g.mu.Unlock()
	go func() {
		for err := range sg.Errors() {
			g.log.fail(fmt.Errorf("sarama: %w", err))
		}
	}()
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := sg.Consume(ctx, []string{g.topic}, upgradeSarama{g, id}); err != nil {
				if errors.Is(err, sarama.ErrClosedConsumerGroup) {
					return
				}
				g.log.fail(fmt.Errorf("sarama Consume: %w", err))
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
	g.t.Cleanup(func() {
		g.mu.Lock()
		_, live := g.members[id]
		g.mu.Unlock()
		if live {
			cancel()
			<-m.done
			m.close()
		}
	})
	return id
}

// balanced waits until the live members own every partition, their
// shares at most one apart, and returns how many each owns.
func (g *upgradeGroup) balanced(partitions int, d time.Duration) map[int]int {
	g.t.Helper()
	var own map[int]int
	waitFor(g.t, d, "the group's members to own even shares", func() bool {
		own = g.spread(partitions, d)
		lo, hi := partitions, 0
		for _, n := range own {
			lo, hi = min(lo, n), max(hi, n)
		}
		return hi-lo <= 1
	})
	return own
}

// ownedBy is the partitions member id owns, sorted.
func (g *upgradeGroup) ownedBy(id int) []int32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []int32
	for p, o := range g.owner {
		if o == id {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// eventsSince is the assignment events since event number n of the
// members other than those in skip.
func (g *upgradeGroup) eventsSince(n int, skip ...int) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, e := range g.events[n:] {
		if !slices.ContainsFunc(skip, func(id int) bool { return strings.Contains(e, fmt.Sprintf(" member %d ", id)) }) {
			out = append(out, e)
		}
	}
	return out
}

// quiet waits until the members have had no assignment callbacks for
// d: a rebalance in flight (a cooperative one's second round, say) has
// ended.
func (g *upgradeGroup) quiet(d time.Duration) {
	g.t.Helper()
	n, since := g.eventCount(), time.Now()
	waitFor(g.t, 30*time.Second, "the group's assignment callbacks to settle", func() bool {
		if m := g.eventCount(); m != n {
			n, since = m, time.Now()
		}
		return time.Since(since) >= d
	})
}

func (g *upgradeGroup) eventCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.events)
}

// verify checks the whole run: every acknowledged record consumed, none
// again below a committed offset, no partition owned twice.
func (g *upgradeGroup) verify(load *loader, start time.Time) {
	t := g.t
	t.Helper()
	load.halt()
	acked := load.ackedValues()
	waitFor(t, 60*time.Second, "every acknowledged record consumed", func() bool { return g.log.consumedAll(acked) })
	v := g.log.judge(acked, start, time.Now())
	t.Logf("%d records acknowledged, %d consumptions, %d redelivered, %d missing; client errors: %s",
		len(acked), v.consumed, v.redelivered, v.missing, g.log.errors())
	if v.missing > 0 {
		t.Errorf("%d acknowledged records never consumed", v.missing)
	}
	for _, s := range v.badRedeliv {
		t.Errorf("redelivered below the committed offset: %s", s)
	}
	g.mu.Lock()
	for _, s := range g.overlaps {
		t.Errorf("double ownership: %s", s)
	}
	g.mu.Unlock()
}

func newUpgradeGroup(t *testing.T, c *cluster, topic, group string) *upgradeGroup {
	g := &upgradeGroup{t: t, c: c, topic: topic, group: group, log: newConsumeLog(),
		owner: map[int32]int{}, owned: map[int]int{}, members: map[int]*upgradeMember{},
		classicOpts: []kgo.Opt{kgo.Balancers(kgo.CooperativeStickyBalancer())}}
	watchCommits(t, c, group, g.log)
	t.Cleanup(func() {
		if t.Failed() {
			g.mu.Lock()
			t.Logf("assignment events:\n%s", strings.Join(g.events, "\n"))
			g.mu.Unlock()
		}
	})
	return g
}

// moveCoordinator restarts the node coordinating group, so that another
// node loads the group, and waits for the cluster to be whole again.
func moveCoordinator(t *testing.T, c *cluster, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorKey = group
	resp, err := req.RequestWith(ctx, newFranz(t, c))
	if err != nil || resp.ErrorCode != 0 {
		t.Fatalf("FindCoordinator %s: %v %v", group, err, resp)
	}
	start := time.Now()
	c.stop(int(resp.NodeID), 30*time.Second)
	c.start(int(resp.NodeID))
	c.waitReady(30 * time.Second)
	c.waitAllHealthy(30 * time.Second)
	t.Logf("restarted node %d, the coordinator of %s, in %v", resp.NodeID, group, time.Since(start).Round(time.Millisecond))
}

// consumerEpoch is the group's epoch by ConsumerGroupDescribe.
func consumerEpoch(t *testing.T, adm *kadm.Client, group string, members int) int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dg, err := adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if d := dg[group]; d.Err != nil || len(d.Members) != members {
		t.Fatalf("ConsumerGroupDescribe %s: %v, %d members, want %d", group, d.Err, len(d.Members), members)
	}
	return dg[group].Epoch
}

// TestKIP848ClassicJoinsConsumerGroup: two franz-go KIP-848 consumers
// share 6 partitions under load; the node coordinating their group
// restarts; then a classic franz-go consumer (cooperative-sticky) joins
// the consumer group, takes a share, and leaves; then a sarama consumer
// (eager, range) does the same. Every record produced is consumed, none
// again below a committed offset, and no partition is ever assigned to a
// member while another owns it.
func TestKIP848ClassicJoinsConsumerGroup(t *testing.T) {
	c := startCluster(t, 3)
	const topic, group, partitions = "classic-joins", "classic-joins-group", 6
	createTopic(t, c, topic, partitions, 3, nil)
	load := startLoader(t, c, topic, 200)
	g := newUpgradeGroup(t, c, topic, group)
	adm := kadm.NewClient(newFranz(t, c))
	start := time.Now()

	n1, n2 := g.add(true), g.add(true)
	t.Logf("KIP-848 members: %v", g.spread(partitions, 60*time.Second))
	moveCoordinator(t, c, group)

	for _, kind := range []string{"franz-go classic", "sarama"} {
		at := time.Now()
		var id int
		if kind == "sarama" {
			id = g.addSarama()
		} else {
			id = g.add(false)
		}
		own := g.spread(partitions, 60*time.Second)
		t.Logf("%s member %d joined the consumer group: %v after %v (epoch %d)", kind, id, own,
			time.Since(at).Round(time.Millisecond), consumerEpoch(t, adm, group, 3))
		if own[id] < 1 || own[n1] < 1 || own[n2] < 1 {
			t.Fatalf("after the %s member joined: %v", kind, own)
		}
		time.Sleep(2 * time.Second) // consuming, mixed
		at = time.Now()
		g.remove(id)
		t.Logf("%s member %d left: %v after %v", kind, id, g.spread(partitions, 60*time.Second), time.Since(at).Round(time.Millisecond))
	}
	consumerEpoch(t, adm, group, 2)
	g.verify(load, start)
	g.remove(n1)
	g.remove(n2)
}

// TestKIP848StaticMembers: static franz-go classic members
// (InstanceID) that restart within their session timeout get their old
// partitions back and nobody else's assignment moves, in a classic group
// and then in the same group upgraded by a static KIP-848 member, which
// restarts the same way; each time once more after the group's
// coordinator has moved. Every record is
// consumed, none again below a committed offset, no partition owned
// twice.
func TestKIP848StaticMembers(t *testing.T) {
	c := startCluster(t, 3)
	const topic, group, partitions = "static-classic", "static-classic-group", 6
	createTopic(t, c, topic, partitions, 3, nil)
	load := startLoader(t, c, topic, 200)
	g := newUpgradeGroup(t, c, topic, group)
	adm := kadm.NewClient(newFranz(t, c))
	start := time.Now()

	instance, kip848 := map[int]string{}, map[int]bool{}
	addStatic := func(name string, is848 bool) int {
		id := g.add(is848, kgo.InstanceID(name))
		instance[id], kip848[id] = name, is848
		return id
	}
	// static-a joins first, so it leads the classic group.
	ids := []int{addStatic("static-a", false)}
	g.spread(partitions, 60*time.Second)
	ids = append(ids, addStatic("static-b", false))
	t.Logf("static classic members: %v", g.balanced(partitions, 60*time.Second))

	// restart stops the static member at ids[i] (it does not leave) and
	// starts it again with the same instance id: it must own what it
	// owned, and no other member's assignment changes. With strict, no
	// other member sees a rebalance at all; a restarted franz-go leader
	// of a classic group forces one itself (KIP-814: it recomputes the
	// plan and rejoins when the bytes differ from its old assignment),
	// in which no partition may move.
	restart := func(i int, where string, strict bool) {
		t.Helper()
		g.quiet(2 * time.Second)
		old := ids[i]
		want := g.ownedBy(old)
		n := g.eventCount()
		at := time.Now()
		g.remove(old)
		ids[i] = addStatic(instance[old], kip848[old])
		waitFor(t, 30*time.Second, fmt.Sprintf("%s: the restarted static member to own %v", where, want), func() bool {
			return slices.Equal(g.ownedBy(ids[i]), want)
		})
		t.Logf("%s: static member %s restarted as %d and owns %v again after %v", where, instance[old], ids[i], want,
			time.Since(at).Round(time.Millisecond))
		// A rebalance it caused would show within a heartbeat interval.
		time.Sleep(4 * time.Second)
		var moved []string
		others := g.eventsSince(n, old, ids[i])
		for _, e := range others {
			if strict || !strings.HasSuffix(e, " []") {
				moved = append(moved, e)
			}
		}
		if len(moved) > 0 {
			t.Errorf("%s: the static restart moved other members' partitions:\n%s", where, strings.Join(moved, "\n"))
		} else if len(others) > 0 {
			t.Logf("%s: the restarted leader rebalanced, moving nothing: %d callbacks of other members", where, len(others))
		}
		if got := g.ownedBy(ids[i]); !slices.Equal(got, want) {
			t.Errorf("%s: the restarted static member owns %v, then %v", where, want, got)
		}
	}

	restart(1, "classic group, follower", true)
	moveCoordinator(t, c, group)
	restart(0, "classic group, leader, new coordinator", false)

	// A static KIP-848 member upgrades the group; it leaves with epoch
	// -2 when it stops, which keeps its place for its restart.
	ids = append(ids, addStatic("static-n", true))
	own := g.balanced(partitions, 60*time.Second)
	epoch := consumerEpoch(t, adm, group, 3)
	t.Logf("static KIP-848 member %d upgraded the group: %v, epoch %d", ids[2], own, epoch)
	restart(0, "mixed group, classic", true)
	restart(2, "mixed group, KIP-848", true)
	moveCoordinator(t, c, group)
	restart(1, "mixed group, classic, new coordinator", true)
	restart(2, "mixed group, KIP-848, new coordinator", true)
	if e := consumerEpoch(t, adm, group, 3); e != epoch {
		t.Errorf("the mixed group's epoch moved from %d to %d across static restarts", epoch, e)
	}
	g.verify(load, start)
	g.mu.Lock()
	live := slices.Sorted(maps.Keys(g.members))
	g.mu.Unlock()
	for _, id := range live {
		g.remove(id)
	}
}
