package compat

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// upgradeGroup runs franz-go members of one group, classic or KIP-848,
// and checks on every assignment that no other member still owns the
// partition (a member owns it from its assigned callback to the end of
// its revoked or lost callback, which commits first).
type upgradeGroup struct {
	t     *testing.T
	c     *cluster
	topic string
	group string
	log   *consumeLog
	// classicOpts apply to the classic members (a balancer, say).
	classicOpts []kgo.Opt

	mu       sync.Mutex
	owner    map[int32]int // partition -> member owning it
	owned    map[int]int   // member -> partitions owned
	overlaps []string
	events   []string
	members  map[int]*upgradeMember
	next     int
}

type upgradeMember struct {
	cl   *kgo.Client // nil for a sarama member
	stop context.CancelFunc
	done chan struct{}
	// close, for a sarama member, commits and closes it.
	close func()
}

func (g *upgradeGroup) event(id int, what string, ps []int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range ps {
		o, held := g.owner[p]
		switch {
		case what == "assigned" && held && o != id:
			g.overlaps = append(g.overlaps, fmt.Sprintf("%s: partition %d assigned to member %d while member %d owns it",
				time.Now().Format("15:04:05.000"), p, id, o))
			g.owned[o]--
			g.owner[p] = id
			g.owned[id]++
		case what == "assigned" && !held:
			g.owner[p] = id
			g.owned[id]++
		case what != "assigned" && held && o == id:
			delete(g.owner, p)
			g.owned[id]--
		}
	}
	g.events = append(g.events, fmt.Sprintf("%s member %d %s %v", time.Now().Format("15:04:05.000"), id, what, ps))
}

// add starts a member that polls, logs and commits until removed; extra
// options apply to it last.
func (g *upgradeGroup) add(kip848 bool, extra ...kgo.Opt) int {
	g.mu.Lock()
	g.next++
	id := g.next
	g.mu.Unlock()
	opts := []kgo.Opt{kgo.ConsumeTopics(g.topic), kgo.ConsumerGroup(g.group), kgo.ClientID(fmt.Sprintf("upgrade-%d", id)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { g.event(id, "assigned", ps[g.topic]) }),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				g.log.fail(fmt.Errorf("commit on revoke: %w", err))
			}
			g.event(id, "revoked", ps[g.topic])
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { g.event(id, "lost", ps[g.topic]) }),
	}
	if kip848 {
		opts = append(opts, kgo.ServerSideBalancer())
	} else {
		opts = append(opts, g.classicOpts...)
	}
	opts = append(opts, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	m := &upgradeMember{cl: newFranz(g.t, g.c, opts...), stop: cancel, done: make(chan struct{})}
	g.mu.Lock()
	g.members[id] = m
	g.mu.Unlock()
	// Stops the poller before newFranz's cleanup closes the client (a
	// test that fails before remove).
	g.t.Cleanup(func() { cancel(); <-m.done })
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			fs := m.cl.PollRecords(ctx, 500)
			fs.EachRecord(func(r *kgo.Record) { g.log.consumed(id, r.Partition, r.Offset, string(r.Value)) })
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := m.cl.CommitUncommittedOffsets(cctx); err != nil && ctx.Err() == nil {
				g.log.fail(fmt.Errorf("commit: %w", err))
			}
			ccancel()
		}
	}()
	return id
}

// remove stops a member: it commits, revokes and leaves the group.
func (g *upgradeGroup) remove(id int) {
	g.mu.Lock()
	m := g.members[id]
	delete(g.members, id)
	g.mu.Unlock()
	m.stop()
	<-m.done
	if m.close != nil {
		m.close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := m.cl.CommitUncommittedOffsets(ctx); err != nil {
		g.log.fail(fmt.Errorf("final commit: %w", err))
	}
	cancel()
	m.cl.Close()
}

// spread waits until the live members own every partition, each at
// least one, and returns how many each owns.
func (g *upgradeGroup) spread(partitions int, d time.Duration) map[int]int {
	g.t.Helper()
	var out map[int]int
	waitFor(g.t, d, fmt.Sprintf("the group's members to own the %d partitions", partitions), func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		out = map[int]int{}
		for id := range g.members {
			if g.owned[id] == 0 {
				return false
			}
			out[id] = g.owned[id]
		}
		n := 0
		for _, o := range g.owner {
			if _, live := g.members[o]; live {
				n++
			}
		}
		return n == partitions
	})
	return out
}

// TestKIP848OnlineUpgrade: under the default migration policy
// (bidirectional), a KIP-848 franz-go consumer joins a classic franz-go
// group of 2 members (cooperative-sticky, and eager range) consuming 6
// partitions under load; the classic members keep consuming, now assigned by the
// coordinator, and share the partitions with it; the 3 nodes restart one
// by one, moving the coordinator, with no rebalance; then the classic
// members leave one at a time. Every record produced is consumed, none again below a committed
// offset, no partition is ever assigned to a member while another owns
// it, and the group ends as a consumer group of the KIP-848 member.
func TestKIP848OnlineUpgrade(t *testing.T) {
	t.Run("cooperative-sticky", func(t *testing.T) { testOnlineUpgrade(t, kgo.CooperativeStickyBalancer()) })
	t.Run("range", func(t *testing.T) { testOnlineUpgrade(t, kgo.RangeBalancer()) })
}

func testOnlineUpgrade(t *testing.T, balancer kgo.GroupBalancer) {
	c := startCluster(t, 3)
	const topic, group, partitions = "upgrade", "upgrade-group", 6
	createTopic(t, c, topic, partitions, 3, nil)
	load := startLoader(t, c, topic, 200)
	g := &upgradeGroup{t: t, c: c, topic: topic, group: group, log: newConsumeLog(),
		owner: map[int32]int{}, owned: map[int]int{}, members: map[int]*upgradeMember{},
		classicOpts: []kgo.Opt{kgo.Balancers(balancer)}}
	watchCommits(t, c, group, g.log)
	defer func() {
		if t.Failed() {
			g.mu.Lock()
			t.Logf("assignment events:\n%s", strings.Join(g.events, "\n"))
			g.mu.Unlock()
		}
	}()

	a, b := g.add(false), g.add(false)
	t.Logf("classic members: %v", g.spread(partitions, 60*time.Second))
	adm := kadm.NewClient(newFranz(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	start := time.Now()
	n := g.add(true)
	own := g.spread(partitions, 60*time.Second)
	t.Logf("KIP-848 member %d joined the classic group: %v after %v", n, own, time.Since(start).Round(time.Millisecond))
	dg, err := adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if d := dg[group]; d.Err != nil || len(d.Members) != 3 {
		t.Fatalf("ConsumerGroupDescribe of the migrating group: %v, %d members, want 3", d.Err, len(d.Members))
	}
	epoch := dg[group].Epoch

	// A rolling restart moves the coordinator of the mixed group: the
	// next one loads its state, classic members included, and nothing
	// rebalances.
	rollStart := time.Now()
	for _, nd := range c.nodes {
		c.stop(nd.id, 30*time.Second)
		c.start(nd.id)
		c.waitReady(30 * time.Second)
		c.waitAllHealthy(30 * time.Second)
	}
	loads := 0
	for _, nd := range c.nodes {
		for _, l := range nd.log.lines(`msg="consumer group loaded"`) {
			if strings.Contains(l, "group="+group) {
				loads++
			}
		}
	}
	dg, err = adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rolled 3 nodes in %v; the mixed group was loaded by a new coordinator %d times; epoch %d before, %d after, %s, %d members",
		time.Since(rollStart).Round(time.Millisecond), loads, epoch, dg[group].Epoch, dg[group].State, len(dg[group].Members))
	if loads == 0 {
		t.Errorf("no node loaded the mixed group's state: the coordinator never moved")
	}
	if d := dg[group]; d.Err != nil || d.Epoch != epoch || len(d.Members) != 3 {
		t.Errorf("after the roll: %v, epoch %d (was %d), %d members: the mixed group rebalanced", d.Err, d.Epoch, epoch, len(d.Members))
	}

	for _, id := range []int{a, b} {
		start := time.Now()
		g.remove(id)
		t.Logf("classic member %d left: %v after %v", id, g.spread(partitions, 60*time.Second), time.Since(start).Round(time.Millisecond))
	}
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

	dg, err = adm.DescribeConsumerGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	if d := dg[group]; d.Err != nil || len(d.Members) != 1 {
		t.Errorf("ConsumerGroupDescribe at the end: %v, %d members, want the KIP-848 member alone", d.Err, len(d.Members))
	}
	lg, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, l := range lg.Sorted() {
		if l.Group == group {
			types = append(types, l.ProtocolType+"/"+l.State)
		}
	}
	sort.Strings(types)
	if len(types) != 1 || types[0] != "consumer/Stable" {
		t.Errorf("ListGroups at the end: %v, want consumer/Stable", types)
	}
	g.remove(n)
}

// TestKIP848OnlineDowngrade: a KIP-848 franz-go consumer joins a classic
// group of 2 members consuming 6 partitions under load, then leaves; the
// group, left with classic members only, becomes a classic group again
// (the default policy allows downgrades) and they share every partition.
// Every record is consumed, none again below a committed offset, and no
// partition is assigned while another member owns it.
func TestKIP848OnlineDowngrade(t *testing.T) {
	c := startCluster(t, 1)
	const topic, group, partitions = "downgrade", "downgrade-group", 6
	createTopic(t, c, topic, partitions, 1, nil)
	load := startLoader(t, c, topic, 200)
	g := &upgradeGroup{t: t, c: c, topic: topic, group: group, log: newConsumeLog(),
		owner: map[int32]int{}, owned: map[int]int{}, members: map[int]*upgradeMember{}}
	watchCommits(t, c, group, g.log)
	defer func() {
		if t.Failed() {
			g.mu.Lock()
			t.Logf("assignment events:\n%s", strings.Join(g.events, "\n"))
			g.mu.Unlock()
		}
	}()
	start := time.Now()
	a, b := g.add(false), g.add(false)
	g.spread(partitions, 60*time.Second)
	n := g.add(true)
	t.Logf("KIP-848 member joined: %v", g.spread(partitions, 60*time.Second))
	time.Sleep(2 * time.Second) // consuming, mixed
	at := time.Now()
	g.remove(n)
	t.Logf("KIP-848 member left: %v after %v", g.spread(partitions, 60*time.Second), time.Since(at).Round(time.Millisecond))

	adm := kadm.NewClient(newFranz(t, c))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor(t, 30*time.Second, "a Stable classic group of the 2 members", func() bool {
		dg, err := adm.DescribeGroups(ctx, group)
		return err == nil && dg[group].State == "Stable" && len(dg[group].Members) == 2
	})
	time.Sleep(2 * time.Second) // consuming, classic again
	lg, err := adm.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lg.Sorted() {
		if l.Group == group && l.ProtocolType != "consumer" {
			t.Errorf("ListGroups: protocol type %q", l.ProtocolType)
		}
	}
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
	g.remove(a)
	g.remove(b)
}
