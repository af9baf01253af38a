package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func brokers(ids ...int32) []Broker {
	out := make([]Broker, len(ids))
	for i, id := range ids {
		out[i] = Broker{ID: id}
	}
	return out
}

// topic makes n partitions of topic whose replica lists rotate through on
// (as CreateTopics spreads them), rf replicas each.
func topic(name string, n, rf int, on ...int32) []Partition {
	var out []Partition
	for p := 0; p < n; p++ {
		var reps []int32
		for r := 0; r < rf; r++ {
			reps = append(reps, on[(p+r)%len(on)])
		}
		out = append(out, Partition{Topic: name, Partition: int32(p), Replicas: reps})
	}
	return out
}

// apply returns parts with the plan's moves applied.
func apply(parts []Partition, pl Plan) []Partition {
	out := slices.Clone(parts)
	for i, p := range out {
		for _, m := range pl.Moves {
			if m.Topic == p.Topic && m.Partition == p.Partition {
				if !slices.Equal(m.From, p.Replicas) {
					panic(fmt.Sprintf("move of %s-%d is from %v, partition has %v", p.Topic, p.Partition, m.From, p.Replicas))
				}
				out[i].Replicas = m.To
			}
		}
	}
	return out
}

// checkInvariants: no broker twice in a list, RF kept, only eligible
// brokers given new replicas.
func checkInvariants(t *testing.T, bs []Broker, before []Partition, pl Plan) {
	t.Helper()
	elig := map[int32]bool{}
	for _, b := range bs {
		elig[b.ID] = true
	}
	for _, m := range pl.Moves {
		if len(m.To) != len(m.From) {
			t.Errorf("%s-%d: RF changed %v -> %v", m.Topic, m.Partition, m.From, m.To)
		}
		for i, r := range m.To {
			if slices.Contains(m.To[:i], r) {
				t.Errorf("%s-%d: broker %d twice in %v", m.Topic, m.Partition, r, m.To)
			}
		}
		for _, r := range m.Added() {
			if !elig[r] {
				t.Errorf("%s-%d: replica given to broker %d, not eligible", m.Topic, m.Partition, r)
			}
		}
	}
	after := apply(before, pl)
	if got := loads(after, nil); !reflect.DeepEqual(nonzero(got), nonzero(pl.After)) {
		t.Errorf("plan's After %v does not match its moves %v", pl.After, got)
	}
}

func nonzero(m map[int32]Load) map[int32]Load {
	out := map[int32]Load{}
	for k, v := range m {
		if v != (Load{}) {
			out[k] = v
		}
	}
	return out
}

// spread returns the max-min of replica counts and of leader counts over ids.
func spread(pl Plan, ids []int32) (replicas, leaders int) {
	minR, maxR, minL, maxL := 1<<30, -1, 1<<30, -1
	for _, id := range ids {
		l := pl.After[id]
		minR, maxR = min(minR, l.Replicas), max(maxR, l.Replicas)
		minL, maxL = min(minL, l.Leaders), max(maxL, l.Leaders)
	}
	return maxR - minR, maxL - minL
}

func TestRebalanceThreeToFive(t *testing.T) {
	bs := brokers(1, 2, 3, 4, 5)
	parts := topic("orders", 30, 3, 1, 2, 3)
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	for _, id := range []int32{1, 2, 3, 4, 5} {
		if got := pl.After[id]; got != (Load{Replicas: 18, Leaders: 6}) {
			t.Errorf("broker %d after: %+v, want 18 replicas, 6 leaders", id, got)
		}
	}
	// 90 replicas, 30 on each of 3: 12 too many on each, so 36 must move
	// and no more.
	if got := pl.ReplicaMoves(); got != 36 {
		t.Errorf("%d replicas moved, want exactly 36", got)
	}
	t.Logf("3 -> 5 brokers: %d partitions changed, %d replicas copied", len(pl.Moves), pl.ReplicaMoves())
}

func TestRebalanceBalancedIsNoop(t *testing.T) {
	bs := brokers(1, 2, 3)
	parts := append(topic("a", 9, 3, 1, 2, 3), topic("b", 6, 2, 1, 2, 3)...)
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Moves) != 0 {
		t.Errorf("balanced cluster: want no moves, got %+v", pl.Moves)
	}
	// Applying a plan and planning again changes nothing either: the
	// command can be re-run.
	parts = topic("c", 12, 3, 1, 2, 3)
	pl, _ = Rebalance(brokers(1, 2, 3, 4), parts)
	again, err := Rebalance(brokers(1, 2, 3, 4), apply(parts, pl))
	if err != nil || len(again.Moves) != 0 {
		t.Errorf("re-planning an applied plan: %v, moves %+v", err, again.Moves)
	}
}

func TestRebalanceLeadersOnlyReorders(t *testing.T) {
	bs := brokers(1, 2, 3)
	var parts []Partition
	for p := int32(0); p < 9; p++ {
		parts = append(parts, Partition{Topic: "t", Partition: p, Replicas: []int32{1, 2, 3}})
	}
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	if pl.ReplicaMoves() != 0 {
		t.Errorf("copied %d replicas; leaders need only a reorder", pl.ReplicaMoves())
	}
	for _, m := range pl.Moves {
		if !m.LeaderOnly() {
			t.Errorf("move %+v copies data", m)
		}
	}
	for _, id := range []int32{1, 2, 3} {
		if pl.After[id].Leaders != 3 {
			t.Errorf("broker %d leads %d, want 3", id, pl.After[id].Leaders)
		}
	}
	if len(pl.Moves) != 6 {
		t.Errorf("%d partitions reordered, want 6 (3 stay on broker 1)", len(pl.Moves))
	}
}

func TestRebalanceUnevenRF(t *testing.T) {
	bs := brokers(1, 2, 3, 4)
	parts := append(append(topic("rf1", 7, 1, 1), topic("rf2", 5, 2, 1, 2)...), topic("rf3", 6, 3, 1, 2, 3)...)
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	// Replicas even; leaders even within each topic that can reorder
	// (RF > 1; an RF 1 partition leads where its replica is), and over
	// all topics as far as that allows.
	r, l := spread(pl, []int32{1, 2, 3, 4})
	if r > 1 || l > 2 {
		t.Errorf("after: replicas spread %d (want <= 1), leaders spread %d (want <= 2): %v", r, l, pl.After)
	}
	for _, name := range []string{"rf2", "rf3"} {
		per := map[int32]int{}
		for _, p := range apply(parts, pl) {
			if p.Topic == name {
				per[p.Replicas[0]]++
			}
		}
		lo, hi := 1<<30, 0
		for _, id := range []int32{1, 2, 3, 4} {
			lo, hi = min(lo, per[id]), max(hi, per[id])
		}
		if hi-lo > 1 {
			t.Errorf("topic %s: preferred leaders %v, want within one", name, per)
		}
	}
}

func TestRebalanceMovesOffBrokersNotListed(t *testing.T) {
	parts := topic("t", 8, 3, 1, 2, 3, 4)
	bs := brokers(1, 2, 3) // 4 is gone
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	if pl.After[4] != (Load{}) {
		t.Errorf("broker 4 still holds %+v", pl.After[4])
	}
}

func TestRebalanceRefusesRFAboveBrokers(t *testing.T) {
	_, err := Rebalance(brokers(1, 2), topic("wide", 3, 3, 1, 2, 3))
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "topic wide has replication factor 3") {
		t.Fatalf("want a refusal naming the topic and RF, got %v", err)
	}
}

func TestRebalanceRacks(t *testing.T) {
	bs := []Broker{{1, "a"}, {2, "a"}, {3, "b"}, {4, "b"}, {5, "c"}, {6, "c"}}
	// Every partition on racks a and b only, and unbalanced.
	var parts []Partition
	for p := int32(0); p < 12; p++ {
		parts = append(parts, Partition{Topic: "t", Partition: p, Replicas: []int32{1 + p%2, 2 - p%2, 3}})
	}
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	rack := map[int32]string{}
	for _, b := range bs {
		rack[b.ID] = b.Rack
	}
	for _, p := range apply(parts, pl) {
		seen := map[string]bool{}
		for _, r := range p.Replicas {
			seen[rack[r]] = true
		}
		if len(seen) != 3 {
			t.Errorf("%s-%d on %v spans %d racks, want 3", p.Topic, p.Partition, p.Replicas, len(seen))
		}
	}
	if r, _ := spread(pl, []int32{1, 2, 3, 4, 5, 6}); r > 1 {
		t.Errorf("replica spread %d with racks: %v", r, pl.After)
	}
}

func TestRebalanceNeverLosesARack(t *testing.T) {
	// Two racks of unequal size: balancing counts must not put a
	// partition's two replicas on one rack.
	bs := []Broker{{1, "a"}, {2, "a"}, {3, "a"}, {4, "b"}}
	parts := []Partition{}
	for p := int32(0); p < 8; p++ {
		parts = append(parts, Partition{Topic: "t", Partition: p, Replicas: []int32{1 + p%3, 4}})
	}
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	for _, p := range apply(parts, pl) {
		if !slices.Contains(p.Replicas, 4) {
			t.Errorf("%s-%d on %v: lost rack b", p.Topic, p.Partition, p.Replicas)
		}
	}
}

func TestDecommission(t *testing.T) {
	bs := brokers(1, 2, 3, 4)
	parts := append(topic("orders", 6, 3, 1, 2, 3), topic("solo", 3, 1, 2)...)
	pl, err := Decommission(bs, parts, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	if pl.After[1] != (Load{}) {
		t.Errorf("broker 1 keeps %+v", pl.After[1])
	}
	if pl.ReplicaMoves() != 6 {
		t.Errorf("%d replicas copied, want 6 (one per partition on 1)", pl.ReplicaMoves())
	}
	for _, m := range pl.Moves {
		if m.Topic == "solo" {
			t.Errorf("partition without broker 1 moved: %+v", m)
		}
		if got := m.Added(); len(got) != 1 || got[0] != 4 {
			t.Errorf("%s-%d: added %v, want [4] (the only broker not in the list)", m.Topic, m.Partition, got)
		}
	}
	// Broker 1 listed or not, the plan is the same.
	pl2, err := Decommission(brokers(2, 3, 4), parts, 1)
	if err != nil || !reflect.DeepEqual(pl.Moves, pl2.Moves) {
		t.Errorf("decommission with 1 unlisted differs: %v %+v", err, pl2.Moves)
	}
}

func TestDecommissionSpreadsOverLeastLoaded(t *testing.T) {
	bs := brokers(1, 2, 3, 4, 5)
	parts := topic("t", 20, 2, 1, 2, 3)
	pl, err := Decommission(bs, parts, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	// Only partitions on 1 change, so 2 and 3 keep theirs; the empty
	// brokers 4 and 5 take all of 1's, evenly.
	on1 := pl.Before[1].Replicas
	if a, b := pl.After[4].Replicas, pl.After[5].Replicas; a+b != on1 || a-b > 1 || b-a > 1 {
		t.Errorf("brokers 4 and 5 should share 1's %d replicas evenly: %v", on1, pl.After)
	}
}

func TestDecommissionRefuses(t *testing.T) {
	_, err := Decommission(brokers(1, 2, 3), topic("orders", 3, 3, 1, 2, 3), 2)
	if err == nil || !strings.Contains(err.Error(), "topic orders has replication factor 3 but there would be only 2 active brokers once 2 is gone [1 3]") {
		t.Fatalf("got %v", err)
	}
	_, err = Decommission(brokers(1, 2, 3), topic("orders", 3, 2, 1, 2, 3), 9)
	if err == nil || !strings.Contains(err.Error(), "broker 9") {
		t.Fatalf("unknown broker: got %v", err)
	}
	// RF 3 topics elsewhere do not matter when broker 4 holds none of them.
	parts := append(topic("wide", 3, 3, 1, 2, 3), topic("narrow", 2, 1, 4)...)
	if _, err := Decommission(brokers(1, 2, 3, 4), parts, 4); err != nil {
		t.Fatalf("decommission of a broker with only RF 1 partitions: %v", err)
	}
}

func TestReplace(t *testing.T) {
	bs := brokers(1, 2, 3, 4, 5)
	parts := append(topic("a", 6, 3, 1, 2, 3), topic("b", 2, 2, 3, 4)...)
	pl, err := Replace(bs, parts, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	for _, m := range pl.Moves {
		if !slices.Equal(m.Removed(), []int32{3}) {
			t.Errorf("%+v: removed %v, want [3]", m, m.Removed())
		}
		want := int32(4)
		if m.Topic == "b" {
			want = 5 // 4 is in the list already
		}
		if !slices.Equal(m.Added(), []int32{want}) {
			t.Errorf("%+v: added %v, want [%d]", m, m.Added(), want)
		}
		if i := slices.Index(m.From, 3); m.To[i] != m.Added()[0] {
			t.Errorf("%+v: the new replica should take 3's place", m)
		}
	}
	if len(pl.Warnings) != 2 {
		t.Errorf("want a warning per partition already on 4, got %q", pl.Warnings)
	}
	if _, err := Replace(brokers(1, 2, 3), parts, 3, 7); err == nil {
		t.Error("replace with a broker that is not active: want a refusal")
	}
	if _, err := Replace(bs, parts, 3, 3); err == nil {
		t.Error("replace with itself: want a refusal")
	}
}

func TestMetadataQuorumAfter(t *testing.T) {
	v := []int32{1, 2, 3}
	if err := MetadataQuorumAfter(v, []int32{1, 2, 3}, 1); err != nil {
		t.Errorf("all up: %v", err)
	}
	err := MetadataQuorumAfter(v, []int32{1, 2}, 1)
	if err == nil || !strings.Contains(err.Error(), "only 1 are up, and a quorum needs 2") || !strings.Contains(err.Error(), "down: 3") {
		t.Errorf("3 down, removing 1: got %v", err)
	}
	if err := MetadataQuorumAfter(v, []int32{1, 2}, 4); err != nil {
		t.Errorf("not a voter: %v", err)
	}
}

func TestInputValidation(t *testing.T) {
	for name, parts := range map[string][]Partition{
		"dup replica":   {{Topic: "t", Partition: 0, Replicas: []int32{1, 1}}},
		"no replicas":   {{Topic: "t", Partition: 0}},
		"dup partition": {{Topic: "t", Replicas: []int32{1}}, {Topic: "t", Replicas: []int32{2}}},
	} {
		if _, err := Rebalance(brokers(1, 2, 3), parts); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	if _, err := Rebalance([]Broker{{ID: 1}, {ID: 1}}, nil); err == nil {
		t.Error("broker twice: want an error")
	}
}

// randomCluster makes a cluster whose replicas sit on the first few of n
// brokers, as after growing it.
func randomCluster(rng *rand.Rand) ([]Broker, []Partition) {
	n := 2 + rng.IntN(7)
	var bs []Broker
	for i := 1; i <= n; i++ {
		bs = append(bs, Broker{ID: int32(i * 10)})
	}
	var parts []Partition
	for ti := 0; ti < 1+rng.IntN(4); ti++ {
		rf := 1 + rng.IntN(min(n, 4))
		np := 1 + rng.IntN(20)
		old := 1 + rng.IntN(n)
		if old < rf {
			old = rf
		}
		for p := 0; p < np; p++ {
			perm := rng.Perm(old)[:rf]
			reps := make([]int32, rf)
			for i, x := range perm {
				reps[i] = bs[x].ID
			}
			parts = append(parts, Partition{Topic: fmt.Sprintf("t%d", ti), Partition: int32(p), Replicas: reps})
		}
	}
	return bs, parts
}

func TestRebalanceRandom(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		bs, parts := randomCluster(rng)
		pl, err := Rebalance(bs, parts)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		checkInvariants(t, bs, parts, pl)
		ids := make([]int32, len(bs))
		for i, b := range bs {
			ids[i] = b.ID
		}
		if r, _ := spread(pl, ids); r > 1 {
			t.Errorf("seed %d: replica spread %d: %v", seed, r, pl.After)
		}
		// Fewest moves: every broker above ceil(total/n) must shed down to
		// it, and the plan copies exactly that many replicas.
		total := 0
		for _, p := range parts {
			total += len(p.Replicas)
		}
		ceil := (total + len(bs) - 1) / len(bs)
		floor := total / len(bs)
		over, under := 0, 0
		for _, id := range ids {
			over += max(0, pl.Before[id].Replicas-ceil)
			under += max(0, floor-pl.Before[id].Replicas)
		}
		if got, lb := pl.ReplicaMoves(), max(over, under); got != lb {
			t.Errorf("seed %d: %d replicas copied, lower bound %d", seed, got, lb)
		}
		// Deterministic, whatever the input order.
		shuffled := slices.Clone(parts)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		again, _ := Rebalance(bs, shuffled)
		if !reflect.DeepEqual(pl.Moves, again.Moves) {
			t.Fatalf("seed %d: plan depends on input order", seed)
		}
	}
}

func TestDecommissionRandom(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 2))
		bs, parts := randomCluster(rng)
		victim := bs[rng.IntN(len(bs))].ID
		pl, err := Decommission(bs, parts, victim)
		if err != nil {
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("seed %d: %v", seed, err)
			}
			continue
		}
		checkInvariants(t, bs, parts, pl)
		if pl.After[victim] != (Load{}) {
			t.Errorf("seed %d: %d keeps %+v", seed, victim, pl.After[victim])
		}
		want := pl.Before[victim].Replicas
		if pl.ReplicaMoves() != want {
			t.Errorf("seed %d: %d copies for %d replicas on %d", seed, pl.ReplicaMoves(), want, victim)
		}
	}
}

func TestRebalanceSpreadsEachTopic(t *testing.T) {
	bs := brokers(1, 2, 3, 4, 5)
	parts := append(topic("a", 10, 3, 1, 2, 3), topic("b", 10, 3, 1, 2, 3)...)
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	if pl.ReplicaMoves() != 24 {
		t.Errorf("%d copies, want 24 (60 replicas, 20 on each of 3, 12 each on 5)", pl.ReplicaMoves())
	}
	for _, name := range []string{"a", "b"} {
		per := map[int32]int{}
		for _, p := range apply(parts, pl) {
			if p.Topic == name {
				for _, r := range p.Replicas {
					per[r]++
				}
			}
		}
		lo, hi := 1<<30, 0
		for _, id := range []int32{1, 2, 3, 4, 5} {
			lo, hi = min(lo, per[id]), max(hi, per[id])
		}
		// Each topic's spread is a preference, not a rule (the counts over
		// all topics are): within two here, where moving partitions in
		// order would leave topic b on brokers 1-3 only.
		if hi-lo > 2 {
			t.Errorf("topic %s spread over brokers %v: want within two", name, per)
		}
	}
}

func TestRebalanceLeadersPerTopic(t *testing.T) {
	// Two topics whose leaders sit on broker 1 and broker 2 only: over
	// all topics 1 and 2 would look fine against 3, but each topic's
	// leaders must spread.
	bs := brokers(1, 2, 3)
	var parts []Partition
	for p := int32(0); p < 6; p++ {
		parts = append(parts, Partition{Topic: "a", Partition: p, Replicas: []int32{1, 2, 3}})
		parts = append(parts, Partition{Topic: "b", Partition: p, Replicas: []int32{2, 3, 1}})
	}
	pl, err := Rebalance(bs, parts)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, bs, parts, pl)
	for _, name := range []string{"a", "b"} {
		per := map[int32]int{}
		for _, p := range apply(parts, pl) {
			if p.Topic == name {
				per[p.Replicas[0]]++
			}
		}
		for _, id := range []int32{1, 2, 3} {
			if per[id] != 2 {
				t.Errorf("topic %s: preferred leaders %v, want 2 each", name, per)
				break
			}
		}
	}
	if _, l := spread(pl, []int32{1, 2, 3}); l > 1 {
		t.Errorf("leaders over all topics spread %d: %v", l, pl.After)
	}
}
