package compat

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// feed produces to every partition of a topic in turn, paced, until
// stopped, and remembers every acknowledged value.
type feed struct {
	cl    *kgo.Client
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	acked map[string]bool
	errs  int
}

func startFeed(t *testing.T, c *cluster, topic string, partitions int32, every time.Duration) *feed {
	f := &feed{cl: newFranz(t, c, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner())),
		stop: make(chan struct{}), done: make(chan struct{}), acked: map[string]bool{}}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-f.stop:
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				f.cl.Flush(ctx)
				cancel()
				return
			case <-tick.C:
			}
			v := fmt.Sprintf("%s-%08d", topic, i)
			f.cl.Produce(context.Background(), &kgo.Record{Value: []byte(v), Partition: int32(i) % partitions}, func(r *kgo.Record, err error) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if err != nil {
					f.errs++
					return
				}
				f.acked[string(r.Value)] = true
			})
		}
	}()
	t.Cleanup(f.halt)
	return f
}

func (f *feed) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
}

// fleet is a consumer group's members and what they consumed.
type fleet struct {
	t       *testing.T
	c       *cluster
	topic   string
	group   string
	next848 bool

	mu       sync.Mutex
	seen     map[string]bool
	last     map[int32]time.Time
	gapFrom  time.Time
	maxGap   map[int32]time.Duration // longest gap between records of a partition since gapFrom
	mark     time.Time
	resumed  map[int32]map[int]time.Time // per partition and member, its first consume after mark
	owned    map[int]map[int32]bool
	revokes  map[int]int // partitions revoked or lost per member since markRevokes
	events   []string
	members  map[int]*member848
	memberID int
}

type member848 struct {
	cl   *kgo.Client
	stop chan struct{}
	done chan struct{}
}

func newFleet(t *testing.T, c *cluster, topic, group string, next848 bool) *fleet {
	return &fleet{t: t, c: c, topic: topic, group: group, next848: next848, seen: map[string]bool{},
		last: map[int32]time.Time{}, maxGap: map[int32]time.Duration{}, resumed: map[int32]map[int]time.Time{},
		owned: map[int]map[int32]bool{}, revokes: map[int]int{}, members: map[int]*member848{}}
}

func (f *fleet) event(id int, what string, ps map[string][]int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.owned[id] == nil {
		f.owned[id] = map[int32]bool{}
	}
	for _, p := range ps[f.topic] {
		if what == "assigned" {
			f.owned[id][p] = true
		} else {
			delete(f.owned[id], p)
			f.revokes[id]++
		}
	}
	f.events = append(f.events, fmt.Sprintf("%s member %d %s %v", time.Now().Format("15:04:05.000"), id, what, ps[f.topic]))
}

// add starts a member that polls, records and commits until removed.
func (f *fleet) add() int {
	f.mu.Lock()
	f.memberID++
	id := f.memberID
	f.mu.Unlock()
	opts := []kgo.Opt{kgo.ConsumeTopics(f.topic), kgo.ConsumerGroup(f.group), kgo.ClientID(fmt.Sprintf("%s-%d", f.group, id)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { f.event(id, "assigned", ps) }),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, ps map[string][]int32) {
			cl.CommitUncommittedOffsets(ctx)
			f.event(id, "revoked", ps)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { f.event(id, "lost", ps) }),
	}
	if f.next848 {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	m := &member848{cl: newFranz(f.t, f.c, opts...), stop: make(chan struct{}), done: make(chan struct{})}
	f.mu.Lock()
	f.members[id] = m
	f.mu.Unlock()
	go func() {
		defer close(m.done)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-m.stop:
			case <-m.done:
			}
			cancel()
		}()
		for ctx.Err() == nil {
			fs := m.cl.PollRecords(ctx, 500)
			now := time.Now()
			f.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				f.seen[string(r.Value)] = true
				p := r.Partition
				if l, ok := f.last[p]; ok && !f.gapFrom.IsZero() && now.After(f.gapFrom) {
					// Only the part of a gap inside the measured window.
					if g := now.Sub(maxTime(l, f.gapFrom)); g > f.maxGap[p] {
						f.maxGap[p] = g
					}
				}
				f.last[p] = now
				if !f.mark.IsZero() {
					if f.resumed[p] == nil {
						f.resumed[p] = map[int]time.Time{}
					}
					if _, ok := f.resumed[p][id]; !ok {
						f.resumed[p][id] = now
					}
				}
			})
			f.mu.Unlock()
			cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
			m.cl.CommitUncommittedOffsets(cctx)
			ccancel()
		}
	}()
	return id
}

// remove stops a member: it commits and leaves the group.
func (f *fleet) remove(id int) {
	f.mu.Lock()
	m := f.members[id]
	delete(f.members, id)
	f.mu.Unlock()
	close(m.stop)
	<-m.done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	m.cl.CommitUncommittedOffsets(ctx)
	cancel()
	m.cl.Close() // leaves the group
	f.mu.Lock()
	delete(f.owned, id)
	f.mu.Unlock()
}

func (f *fleet) halt() {
	f.mu.Lock()
	ids := make([]int, 0, len(f.members))
	for id := range f.members {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	for _, id := range ids {
		f.remove(id)
	}
}

// setMark starts a rebalance measurement.
func (f *fleet) setMark() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mark = time.Now()
	f.resumed = map[int32]map[int]time.Time{}
}

// resumedAfter waits until the members own every partition and each has
// consumed from its owner since the mark; it returns how long after the
// mark the last partition did: the rebalance time.
func (f *fleet) resumedAfter(partitions int32, members int, d time.Duration) time.Duration {
	f.t.Helper()
	var worst time.Duration
	waitFor(f.t, d, "every partition consumed again by its owner", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.settled(partitions, members) {
			return false
		}
		worst = 0
		for id, ps := range f.assignmentLocked() {
			for _, p := range ps {
				at, ok := f.resumed[p][id]
				if !ok {
					return false
				}
				worst = max(worst, at.Sub(f.mark))
			}
		}
		return true
	})
	return worst
}

// assignment is each member's partitions, sorted.
func (f *fleet) assignment() map[int][]int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.assignmentLocked()
}

func (f *fleet) assignmentLocked() map[int][]int32 {
	out := map[int][]int32{}
	for id, ps := range f.owned {
		for p := range ps {
			out[id] = append(out[id], p)
		}
		slices.Sort(out[id])
	}
	return out
}

// settled reports whether the members own every partition exactly once,
// evenly spread; f.mu is held.
func (f *fleet) settled(partitions int32, members int) bool {
	a := f.assignmentLocked()
	n, seen := 0, map[int32]bool{}
	for id, ps := range a {
		if _, live := f.members[id]; !live {
			continue
		}
		if len(ps) == 0 {
			return false
		}
		for _, p := range ps {
			if seen[p] {
				return false
			}
			seen[p] = true
			n++
		}
	}
	lo, hi := int(partitions), 0
	for _, ps := range a {
		lo, hi = min(lo, len(ps)), max(hi, len(ps))
	}
	return n == int(partitions) && len(a) == members && hi-lo <= 1
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// startGaps starts measuring the longest gap per partition.
func (f *fleet) startGaps() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gapFrom = time.Now()
	f.maxGap = map[int32]time.Duration{}
}

func (f *fleet) worstGap() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var worst time.Duration
	for _, g := range f.maxGap {
		worst = max(worst, g)
	}
	return worst
}

func (f *fleet) resetRevokes() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revokes = map[int]int{}
}

// TestKIP848GroupRollingRestart runs a franz-go consumer group with the
// KIP-848 protocol (kgo.ServerSideBalancer) on a 12-partition topic of a
// 3-node cluster under a steady produce load: three members, a fourth
// joins, the first leaves, then every node is restarted in turn. Every
// acknowledged record is consumed; during the roll (the coordinator moves
// twice or more) the members keep their partitions (none revoked or lost);
// the longest consumption gap per partition during the roll and the time
// from the join to every partition flowing again are reported.
func TestKIP848GroupRollingRestart(t *testing.T) {
	c := startCluster(t, 3)
	const topic, partitions = "g848", 12
	createTopic(t, c, topic, partitions, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	prod := startFeed(t, c, topic, partitions, 2*time.Millisecond)
	f := newFleet(t, c, topic, "g848-readers", true)
	defer f.halt()
	for i := 0; i < 3; i++ {
		f.add()
	}
	waitFor(t, 60*time.Second, "three members owning all partitions", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.settled(partitions, 3) })
	t.Logf("three members: %v", f.assignment())

	f.setMark()
	joined := f.add()
	rebalance := f.resumedAfter(partitions, 4, 60*time.Second)
	t.Logf("member %d joined: every partition consumed again after %v; assignment %v", joined, rebalance.Round(time.Millisecond), f.assignment())

	before := f.assignment()
	f.resetRevokes()
	f.setMark()
	f.remove(1)
	left := f.resumedAfter(partitions, 3, 60*time.Second)
	after := f.assignment()
	for id, ps := range before {
		if id == 1 {
			continue
		}
		for _, p := range ps {
			if !slices.Contains(after[id], p) {
				t.Errorf("member %d lost partition %d when member 1 left: %v -> %v", id, p, ps, after[id])
			}
		}
	}
	t.Logf("member 1 left: every partition consumed again after %v; assignment %v", left.Round(time.Millisecond), after)

	adm := kadm.NewClient(newFranz(t, c))
	describe := func() kadm.DescribedConsumerGroup {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ds, err := adm.DescribeConsumerGroups(ctx, "g848-readers")
		if err != nil {
			t.Fatalf("kadm DescribeConsumerGroups: %v", err)
		}
		d := ds["g848-readers"]
		if d.Err != nil {
			t.Fatalf("kadm DescribeConsumerGroups: %v", d.Err)
		}
		return d
	}
	waitFor(t, 30*time.Second, "the group Stable", func() bool { return describe().State == "Stable" })
	d0 := describe()
	n := 0
	for _, m := range d0.Members {
		n += len(m.Assignment[topic])
	}
	if len(d0.Members) != 3 || n != partitions || d0.AssignorName != "uniform" {
		t.Errorf("ConsumerGroupDescribe: %d members owning %d partitions, assignor %q", len(d0.Members), n, d0.AssignorName)
	}

	// The roll.
	stable := f.assignment()
	f.resetRevokes()
	f.startGaps()
	rollStart := time.Now()
	for _, nd := range c.nodes {
		c.stop(nd.id, 30*time.Second)
		c.start(nd.id)
		c.waitReady(30 * time.Second)
		c.waitAllHealthy(30 * time.Second)
	}
	t.Logf("rolled 3 nodes in %v", time.Since(rollStart).Round(time.Millisecond))
	loads := 0
	for _, nd := range c.nodes {
		for _, l := range nd.log.lines(`msg="consumer group loaded"`) {
			if strings.Contains(l, "group=g848-readers") {
				loads++
			}
		}
	}
	if loads == 0 {
		t.Errorf("no node loaded the group's saved state: the coordinator never moved")
	}
	t.Logf("the group's state was loaded by a new coordinator %d times during the test", loads)
	if d1 := describe(); d1.Epoch != d0.Epoch || d1.State != "Stable" {
		t.Errorf("group epoch %d (%s) before the roll, %d (%s) after: it rebalanced", d0.Epoch, d0.State, d1.Epoch, d1.State)
	} else {
		t.Logf("group epoch %d before and after the roll, state %s", d1.Epoch, d1.State)
	}
	time.Sleep(2 * time.Second)
	prod.halt()
	prod.mu.Lock()
	acked := make([]string, 0, len(prod.acked))
	for v := range prod.acked {
		acked = append(acked, v)
	}
	prodErrs := prod.errs
	prod.mu.Unlock()
	waitFor(t, 60*time.Second, "every acknowledged record consumed", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, v := range acked {
			if !f.seen[v] {
				return false
			}
		}
		return true
	})
	f.mu.Lock()
	gaps := make([]time.Duration, 0, len(f.maxGap))
	var lines []string
	for p := int32(0); p < partitions; p++ {
		gaps = append(gaps, f.maxGap[p])
		lines = append(lines, fmt.Sprintf("p%d %v", p, f.maxGap[p].Round(time.Millisecond)))
	}
	revokes := f.revokes
	events := slices.Clone(f.events)
	f.mu.Unlock()
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	t.Logf("%d records acknowledged (%d produce errors), all consumed; longest consumption gap per partition during the roll: %s; max %v",
		len(acked), prodErrs, strings.Join(lines, ", "), gaps[len(gaps)-1].Round(time.Millisecond))
	if got := f.assignment(); fmt.Sprint(got) != fmt.Sprint(stable) {
		t.Errorf("assignment changed during the roll: %v -> %v", stable, got)
	}
	for id, n := range revokes {
		if n > 0 {
			t.Errorf("member %d had %d partitions revoked or lost during the roll", id, n)
		}
	}
	if t.Failed() {
		t.Logf("assignment events:\n%s", strings.Join(events, "\n"))
	}
}

// TestKIP848RebalanceVsClassic measures, for a KIP-848 group and a classic
// franz-go group (cooperative-sticky) side by side, the time from a fourth
// member joining three to every one of 12 partitions being consumed again.
func TestKIP848RebalanceVsClassic(t *testing.T) {
	c := startCluster(t, 1)
	const partitions = 12
	for _, next := range []bool{true, false} {
		name := map[bool]string{true: "kip848", false: "classic"}[next]
		topic := "rb-" + name
		createTopic(t, c, topic, partitions, 1, nil)
		prod := startFeed(t, c, topic, partitions, 2*time.Millisecond)
		f := newFleet(t, c, topic, topic+"-readers", next)
		for i := 0; i < 3; i++ {
			f.add()
		}
		waitFor(t, 60*time.Second, name+": three members owning all partitions", func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.settled(partitions, 3)
		})
		f.startGaps()
		f.setMark()
		f.add()
		d := f.resumedAfter(partitions, 4, 60*time.Second)
		t.Logf("%s group: member join to every partition consumed again by its new owner: %v; longest gap of any partition %v; assignment %v",
			name, d.Round(time.Millisecond), f.worstGap().Round(time.Millisecond), f.assignment())
		f.halt()
		prod.halt()
	}
}
