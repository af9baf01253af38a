package coordinator

import (
	"bytes"
	"slices"
	"sort"
)

// Server-side assignment for KIP-848 consumer groups. An assignor maps each
// member to the partitions it should own (the target assignment); members
// then move to it one heartbeat at a time (see reconcile).

// TopicMeta describes a topic for assignment.
type TopicMeta struct {
	ID         [16]byte
	Partitions int32
}

// tp is one partition, named by topic id.
type tp struct {
	topic [16]byte
	part  int32
}

func tpLess(a, b tp) bool {
	if c := bytes.Compare(a.topic[:], b.topic[:]); c != 0 {
		return c < 0
	}
	return a.part < b.part
}

// tpSet is a set of partitions.
type tpSet map[tp]struct{}

func (s tpSet) sorted() []tp {
	out := make([]tp, 0, len(s))
	for p := range s {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return tpLess(out[i], out[j]) })
	return out
}

func (s tpSet) equal(o tpSet) bool {
	if len(s) != len(o) {
		return false
	}
	for p := range s {
		if _, ok := o[p]; !ok {
			return false
		}
	}
	return true
}

func (s tpSet) clone() tpSet {
	out := make(tpSet, len(s))
	for p := range s {
		out[p] = struct{}{}
	}
	return out
}

// assignInput is what an assignor sees: each member's subscribed topics
// (resolved to metadata) and its current target, for stickiness.
type assignInput struct {
	members []string // sorted
	subs    map[string][]TopicMeta
	prev    map[string]tpSet
}

// Assignor names the clients may ask for (ServerAssignor).
const (
	assignorUniform = "uniform"
	assignorRange   = "range"
)

func assign(name string, in assignInput) map[string]tpSet {
	if name == assignorRange {
		return assignRange(in)
	}
	return assignUniform(in)
}

// assignRange gives each member of a topic's subscribers a contiguous
// range of its partitions, the first ones one more when they do not
// divide evenly, as Kafka's range assignor does.
func assignRange(in assignInput) map[string]tpSet {
	out := make(map[string]tpSet, len(in.members))
	byTopic := map[[16]byte][]string{}
	parts := map[[16]byte]int32{}
	for _, m := range in.members {
		out[m] = tpSet{}
		for _, t := range in.subs[m] {
			byTopic[t.ID] = append(byTopic[t.ID], m)
			parts[t.ID] = t.Partitions
		}
	}
	for id, ms := range byTopic {
		n := int(parts[id])
		per, extra := n/len(ms), n%len(ms)
		p := 0
		for i, m := range ms {
			k := per
			if i < extra {
				k++
			}
			for j := 0; j < k; j++ {
				out[m][tp{id, int32(p)}] = struct{}{}
				p++
			}
		}
	}
	return out
}

// assignUniform spreads partitions evenly and keeps each member's previous
// partitions where it can: members keep what they had up to an even
// share, the rest goes to the least loaded eligible member, and then
// partitions move from the most to the least loaded until no move helps.
func assignUniform(in assignInput) map[string]tpSet {
	out := make(map[string]tpSet, len(in.members))
	eligible := map[tp][]string{}
	for _, m := range in.members {
		out[m] = tpSet{}
		for _, t := range in.subs[m] {
			for p := int32(0); p < t.Partitions; p++ {
				k := tp{t.ID, p}
				eligible[k] = append(eligible[k], m)
			}
		}
	}
	active := 0
	for _, m := range in.members {
		if len(in.subs[m]) > 0 {
			active++
		}
	}
	if active == 0 {
		return out
	}
	share := (len(eligible) + active - 1) / active
	taken := map[tp]bool{}
	for _, m := range in.members {
		for _, p := range in.prev[m].sorted() {
			if len(out[m]) < share && !taken[p] && slices.Contains(eligible[p], m) {
				out[m][p] = struct{}{}
				taken[p] = true
			}
		}
	}
	all := make(tpSet, len(eligible))
	for p := range eligible {
		all[p] = struct{}{}
	}
	for _, p := range all.sorted() {
		if taken[p] {
			continue
		}
		best := ""
		for _, m := range eligible[p] {
			if best == "" || len(out[m]) < len(out[best]) {
				best = m
			}
		}
		out[best][p] = struct{}{}
	}
	balance(out, eligible)
	return out
}

// balance moves partitions from the most to the least loaded member while
// the difference is above one and some partition of the former may go to
// the latter. Bounded: each move lowers the sum of squared loads.
func balance(out map[string]tpSet, eligible map[tp][]string) {
	members := make([]string, 0, len(out))
	for m := range out {
		members = append(members, m)
	}
	sort.Strings(members)
	for moves := 0; moves < len(eligible)*len(members)+1; moves++ {
		moved := false
		sort.SliceStable(members, func(i, j int) bool { return len(out[members[i]]) > len(out[members[j]]) })
		for i := 0; i < len(members) && !moved; i++ {
			from := members[i]
			for j := len(members) - 1; j > i && !moved; j-- {
				to := members[j]
				if len(out[from])-len(out[to]) <= 1 {
					continue
				}
				for _, p := range out[from].sorted() {
					if slices.Contains(eligible[p], to) {
						delete(out[from], p)
						out[to][p] = struct{}{}
						moved = true
						break
					}
				}
			}
		}
		if !moved {
			return
		}
	}
}
