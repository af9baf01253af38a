package placement

import (
	"fmt"
	"slices"
	"sort"
)

// state is a plan being made: the replica lists as they will be, and every
// broker's load kept in step with them.
type state struct {
	elig     map[int32]Broker // brokers that may be given replicas
	eligIDs  []int32          // sorted
	rackOf   map[int32]string // eligible brokers only
	racks    int              // distinct racks among the eligible brokers (0 = racks unused)
	orig     []Partition      // sorted by topic, partition; lists copied
	parts    []Partition      // the same partitions, being changed
	replicas map[int32]int
	leaders  map[int32]int
	perTopic map[string]map[int32]int // replicas of each topic on each broker
	warnings []string
}

// newState validates the input and copies it; brokers in exclude are not
// eligible even when listed.
func newState(brokers []Broker, parts []Partition, exclude []int32) (*state, error) {
	s := &state{elig: map[int32]Broker{}, rackOf: map[int32]string{}, replicas: map[int32]int{}, leaders: map[int32]int{},
		perTopic: map[string]map[int32]int{}}
	seenRack := map[string]bool{}
	anyRack := false
	for _, b := range brokers {
		if _, dup := s.elig[b.ID]; dup {
			return nil, fmt.Errorf("placement: broker %d listed twice", b.ID)
		}
		if slices.Contains(exclude, b.ID) {
			continue
		}
		s.elig[b.ID] = b
		s.rackOf[b.ID] = b.Rack
		seenRack[b.Rack] = true
		anyRack = anyRack || b.Rack != ""
		s.replicas[b.ID] += 0
		s.leaders[b.ID] += 0
	}
	if anyRack {
		s.racks = len(seenRack)
	}
	s.eligIDs = sortedIDs(s.elig)
	seen := map[string]bool{}
	for _, p := range parts {
		key := fmt.Sprintf("%s\x00%d", p.Topic, p.Partition)
		if seen[key] {
			return nil, fmt.Errorf("placement: partition %s-%d listed twice", p.Topic, p.Partition)
		}
		seen[key] = true
		if len(p.Replicas) == 0 {
			return nil, fmt.Errorf("placement: partition %s-%d has no replicas", p.Topic, p.Partition)
		}
		if s.perTopic[p.Topic] == nil {
			s.perTopic[p.Topic] = map[int32]int{}
		}
		for i, r := range p.Replicas {
			if slices.Contains(p.Replicas[:i], r) {
				return nil, fmt.Errorf("placement: partition %s-%d lists broker %d twice", p.Topic, p.Partition, r)
			}
			s.replicas[r]++
			s.perTopic[p.Topic][r]++
		}
		s.leaders[p.Replicas[0]]++
		p.Replicas = slices.Clone(p.Replicas)
		s.orig = append(s.orig, p)
	}
	sort.Slice(s.orig, func(i, j int) bool {
		a, b := s.orig[i], s.orig[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Partition < b.Partition
	})
	for _, p := range s.orig {
		p.Replicas = slices.Clone(p.Replicas)
		s.parts = append(s.parts, p)
	}
	return s, nil
}

func (s *state) eligible(id int32) bool { _, ok := s.elig[id]; return ok }

// known: eligible or holding a replica now.
func (s *state) known(id int32) bool { _, ok := s.replicas[id]; return ok }

func (s *state) warn(format string, args ...any) {
	s.warnings = append(s.warnings, fmt.Sprintf(format, args...))
}

// checkRF refuses when a partition has more replicas than there are
// eligible brokers to hold them.
func (s *state) checkRF(what string) error {
	return s.checkRFFor(func(Partition) bool { return true }, what)
}

func (s *state) checkRFFor(which func(Partition) bool, what string) error {
	for _, p := range s.orig {
		if which(p) && len(p.Replicas) > len(s.eligIDs) {
			return refuse("topic %s has replication factor %d but there would be only %d %s %v",
				p.Topic, len(p.Replicas), len(s.eligIDs), what, s.eligIDs)
		}
	}
	return nil
}

// put sets replica pos of partition i to b, keeping the loads in step.
func (s *state) put(i, pos int, b int32) {
	p := &s.parts[i]
	old := p.Replicas[pos]
	s.replicas[old]--
	s.replicas[b]++
	s.perTopic[p.Topic][old]--
	s.perTopic[p.Topic][b]++
	if pos == 0 {
		s.leaders[old]--
		s.leaders[b]++
	}
	p.Replicas[pos] = b
}

// sameRack counts the replicas of partition i, other than the one at pos,
// on rack (0 when racks are unused).
func (s *state) sameRack(i, pos int, rack string) int {
	if s.racks == 0 {
		return 0
	}
	n := 0
	for j, r := range s.parts[i].Replicas {
		if j != pos {
			if rr, ok := s.rackOf[r]; ok && rr == rack {
				n++
			}
		}
	}
	return n
}

// rackCount is the number of distinct racks partition i spans (brokers
// that are not eligible count as racks of their own).
func (s *state) rackCount(i int) int {
	seen := map[string]bool{}
	for _, r := range s.parts[i].Replicas {
		rack, ok := s.rackOf[r]
		if !ok {
			rack = fmt.Sprintf("\x00%d", r)
		}
		seen[rack] = true
	}
	return len(seen)
}

// pick chooses the broker for replica pos of partition i: eligible, not in
// the list, then fewest replicas of the partition on its rack, fewest
// replicas, fewest leaders, lowest id. allow, when set, filters.
func (s *state) pick(i, pos int, allow func(int32) bool) (int32, bool) {
	best, found := int32(0), false
	var bestKey [3]int
	for _, id := range s.eligIDs {
		if slices.Contains(s.parts[i].Replicas, id) || (allow != nil && !allow(id)) {
			continue
		}
		key := [3]int{s.sameRack(i, pos, s.rackOf[id]), s.replicas[id], s.leaders[id]}
		if !found || less(key, bestKey) {
			best, bestKey, found = id, key, true
		}
	}
	return best, found
}

func less(a, b [3]int) bool {
	for k := range a {
		if a[k] != b[k] {
			return a[k] < b[k]
		}
	}
	return false
}

// replaceAt moves replica pos of partition i to the best other broker.
func (s *state) replaceAt(i, pos int) error {
	b, ok := s.pick(i, pos, nil)
	if !ok {
		p := s.parts[i]
		return refuse("%s-%d: no active broker left for the replica on %d (replicas %v, active %v)",
			p.Topic, p.Partition, p.Replicas[pos], p.Replicas, s.eligIDs)
	}
	s.put(i, pos, b)
	return nil
}

// spreadRacks moves replicas that share a rack onto racks the partition
// does not use yet, until it spans min(RF, racks) racks.
func (s *state) spreadRacks() {
	if s.racks == 0 {
		return
	}
	for i := range s.parts {
		for s.rackCount(i) < min(len(s.parts[i].Replicas), s.racks) {
			used := map[string]bool{}
			for _, r := range s.parts[i].Replicas {
				used[s.rackOf[r]] = true
			}
			// The replica to move: one sharing its rack, on the most loaded
			// broker, a follower before the preferred leader.
			pos := -1
			for j, r := range s.parts[i].Replicas {
				if s.sameRack(i, j, s.rackOf[r]) == 0 {
					continue
				}
				if pos < 0 || s.betterToMove(i, j, pos) {
					pos = j
				}
			}
			b, ok := s.pick(i, pos, func(id int32) bool { return !used[s.rackOf[id]] })
			if pos < 0 || !ok {
				p := s.parts[i]
				s.warn("%s-%d spans %d racks; no broker on another rack can take a replica", p.Topic, p.Partition, s.rackCount(i))
				break
			}
			s.put(i, pos, b)
		}
	}
}

// betterToMove: replica j of partition i is a better one to move than
// replica k (a more loaded broker; then a follower; then the later one).
func (s *state) betterToMove(i, j, k int) bool {
	a, b := s.parts[i].Replicas[j], s.parts[i].Replicas[k]
	if s.replicas[a] != s.replicas[b] {
		return s.replicas[a] > s.replicas[b]
	}
	return k == 0
}

// balanceReplicas moves one replica at a time from the most loaded broker
// to the least loaded one that can take it, while they differ by two or
// more. Each move lowers the sum of squared loads, so it ends.
func (s *state) balanceReplicas() {
	for s.moveOneReplica() {
	}
}

func (s *state) moveOneReplica() bool {
	srcs := slices.Clone(s.eligIDs)
	sort.SliceStable(srcs, func(a, b int) bool { return s.replicas[srcs[a]] > s.replicas[srcs[b]] })
	dsts := slices.Clone(s.eligIDs)
	sort.SliceStable(dsts, func(a, b int) bool { return s.replicas[dsts[a]] < s.replicas[dsts[b]] })
	for _, src := range srcs {
		for _, dst := range dsts {
			if s.replicas[src]-s.replicas[dst] < 2 {
				break
			}
			if i, pos, ok := s.movable(src, dst); ok {
				s.put(i, pos, dst)
				return true
			}
		}
	}
	return false
}

// movable finds a partition whose replica on src can go to dst without
// doubling up or losing a rack. Among those it takes the one whose topic
// src holds most more of than dst (so each topic spreads too, at no extra
// move), then a follower before a preferred leader, then the first.
func (s *state) movable(src, dst int32) (int, int, bool) {
	bi, bpos := -1, 0
	var bkey [2]int
	for i, p := range s.parts {
		pos := slices.Index(p.Replicas, src)
		if pos < 0 || slices.Contains(p.Replicas, dst) {
			continue
		}
		lead := 0
		if pos == 0 {
			lead = 1
		}
		key := [2]int{s.perTopic[p.Topic][dst] - s.perTopic[p.Topic][src], lead}
		if bi >= 0 && !(key[0] < bkey[0] || key[0] == bkey[0] && key[1] < bkey[1]) {
			continue
		}
		before := s.rackCount(i)
		p.Replicas[pos] = dst
		after := s.rackCount(i)
		p.Replicas[pos] = src
		if after >= before {
			bi, bpos, bkey = i, pos, key
		}
	}
	return bi, bpos, bi >= 0
}

// balanceLeaders reorders replica lists (of the partitions in only, or of
// all when only is nil) so that preferred leaderships are even, first
// within each topic (a busy topic's leaders should not pile up on one
// broker), then over all topics without undoing the first. Each step
// makes the replica with the biggest deficit the preferred one; each
// lowers a sum of squared counts, so it ends.
func (s *state) balanceLeaders(only map[int]bool) {
	tl := map[string]map[int32]int{} // preferred leaderships per topic
	for _, p := range s.parts {
		if tl[p.Topic] == nil {
			tl[p.Topic] = map[int32]int{}
		}
		tl[p.Topic][p.Replicas[0]]++
	}
	swap := func(i, pos int) {
		r := s.parts[i].Replicas
		t := tl[s.parts[i].Topic]
		s.leaders[r[0]]--
		t[r[0]]--
		s.leaders[r[pos]]++
		t[r[pos]]++
		r[0], r[pos] = r[pos], r[0]
	}
	// best finds the swap with the largest key; ok says whether the swap
	// of a leader l for replica b may be made at all.
	best := func(key func(t map[int32]int, l, b int32) (int, int, bool)) (int, int, bool) {
		bi, bpos := -1, 0
		var bk [2]int
		for i, p := range s.parts {
			if only != nil && !only[i] {
				continue
			}
			for pos := 1; pos < len(p.Replicas); pos++ {
				b := p.Replicas[pos]
				if !s.eligible(b) {
					continue
				}
				k1, k2, ok := key(tl[p.Topic], p.Replicas[0], b)
				if ok && (bi < 0 || k1 > bk[0] || k1 == bk[0] && k2 > bk[1]) {
					bi, bpos, bk = i, pos, [2]int{k1, k2}
				}
			}
		}
		return bi, bpos, bi >= 0
	}
	for {
		i, pos, ok := best(func(t map[int32]int, l, b int32) (int, int, bool) {
			return t[l] - t[b], s.leaders[l] - s.leaders[b], t[l]-t[b] >= 2
		})
		if !ok {
			break
		}
		swap(i, pos)
	}
	for {
		// Over all topics: only swaps that leave the topic's own spread
		// within one, or no wider than it is.
		i, pos, ok := best(func(t map[int32]int, l, b int32) (int, int, bool) {
			d := s.leaders[l] - s.leaders[b]
			if d < 2 {
				return 0, 0, false
			}
			before := s.spreadOf(t)
			t[l]--
			t[b]++
			after := s.spreadOf(t)
			t[l]++
			t[b]--
			return d, 0, after <= max(before, 1)
		})
		if !ok {
			return
		}
		swap(i, pos)
	}
}

// spreadOf is max - min of counts over the eligible brokers.
func (s *state) spreadOf(counts map[int32]int) int {
	lo, hi := 1<<30, -1<<30
	for _, id := range s.eligIDs {
		lo, hi = min(lo, counts[id]), max(hi, counts[id])
	}
	return hi - lo
}

// plan lists the partitions whose replica lists changed.
func (s *state) plan() Plan {
	pl := Plan{Before: loads(s.orig, s.eligIDs), After: loads(s.parts, s.eligIDs), Warnings: s.warnings}
	for i, p := range s.parts {
		if !slices.Equal(p.Replicas, s.orig[i].Replicas) {
			pl.Moves = append(pl.Moves, Move{Topic: p.Topic, Partition: p.Partition, From: s.orig[i].Replicas, To: p.Replicas})
		}
	}
	for id := range pl.Before {
		if _, ok := pl.After[id]; !ok {
			pl.After[id] = Load{}
		}
	}
	return pl
}

func loads(parts []Partition, ids []int32) map[int32]Load {
	out := map[int32]Load{}
	for _, id := range ids {
		out[id] = Load{}
	}
	for _, p := range parts {
		for i, r := range p.Replicas {
			l := out[r]
			l.Replicas++
			if i == 0 {
				l.Leaders++
			}
			out[r] = l
		}
	}
	return out
}
