// Package placement plans where partition replicas should live: it spreads
// replicas and preferred leaders evenly over a set of brokers, empties a
// broker being decommissioned, or hands a dead broker's replicas to a new
// one. It is pure: brokers and replica lists in, moves out, no I/O, and
// the same input always gives the same plan.
//
// The rules every plan keeps:
//   - a partition never has two replicas on one broker;
//   - replicas go only to the eligible brokers passed in;
//   - when brokers have racks, a move never lowers the number of racks a
//     partition spans, and Rebalance raises it to min(RF, racks) where it
//     can;
//   - moves are few: a replica moves only to fix one of the rules above or
//     to bring a broker's replica count within one of the others'. Leader
//     balance is reached by reordering replica lists (the preferred leader
//     is Replicas[0]), which copies no data.
package placement

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Broker is a broker that may be given replicas.
type Broker struct {
	ID   int32
	Rack string // "" = no rack
}

// Partition is one partition's current replica list; Replicas[0] is its
// preferred leader.
type Partition struct {
	Topic     string
	Partition int32
	Replicas  []int32
}

// Move changes one partition's replica list from From to To (which may
// only reorder it: see LeaderOnly).
type Move struct {
	Topic     string
	Partition int32
	From, To  []int32
}

// Added is To minus From: the brokers that must copy the partition.
func (m Move) Added() []int32 { return minus(m.To, m.From) }

// Removed is From minus To.
func (m Move) Removed() []int32 { return minus(m.From, m.To) }

// LeaderOnly reports whether the move only reorders the replicas (a new
// preferred leader, no data copied).
func (m Move) LeaderOnly() bool { return len(m.Added()) == 0 && len(m.Removed()) == 0 }

// Load is how many replicas, and how many preferred leaderships, a broker
// holds.
type Load struct {
	Replicas, Leaders int
}

// Plan is the outcome of a planner call.
type Plan struct {
	Moves []Move // sorted by topic, then partition
	// Before and After give every broker's load (eligible brokers and any
	// broker holding a replica before).
	Before, After map[int32]Load
	// Warnings say where a rule could be kept only in part (racks).
	Warnings []string
}

// ReplicaMoves counts the replicas copied to a new broker.
func (p Plan) ReplicaMoves() int {
	n := 0
	for _, m := range p.Moves {
		n += len(m.Added())
	}
	return n
}

// RefusedError says why a plan cannot be made; nothing should be moved.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "refused: " + e.Reason }

func refuse(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// Rebalance spreads every partition over brokers: replicas on brokers not
// listed are moved onto listed ones, rack spread is raised where it can be,
// replica counts are evened out (within one), then preferred leaders are
// evened out by reordering.
func Rebalance(brokers []Broker, parts []Partition) (Plan, error) {
	s, err := newState(brokers, parts, nil)
	if err != nil {
		return Plan{}, err
	}
	if err := s.checkRF("active brokers"); err != nil {
		return Plan{}, err
	}
	for i := range s.parts {
		for pos, b := range s.parts[i].Replicas {
			if !s.eligible(b) {
				if err := s.replaceAt(i, pos); err != nil {
					return Plan{}, err
				}
			}
		}
	}
	s.spreadRacks()
	s.balanceReplicas()
	s.balanceLeaders(nil)
	return s.plan(), nil
}

// Decommission moves every replica off node: in each partition holding it,
// node is replaced (at its place in the list) by the least loaded eligible
// broker not already there. brokers are the active brokers; node may be
// among them. Only partitions holding node change.
func Decommission(brokers []Broker, parts []Partition, node int32) (Plan, error) {
	s, err := newState(brokers, parts, []int32{node})
	if err != nil {
		return Plan{}, err
	}
	if !s.known(node) {
		return Plan{}, refuse("broker %d holds no replica and is not an active broker", node)
	}
	if err := s.checkRFFor(func(p Partition) bool { return slices.Contains(p.Replicas, node) },
		fmt.Sprintf("active brokers once %d is gone", node)); err != nil {
		return Plan{}, err
	}
	touched := map[int]bool{}
	for i := range s.parts {
		if pos := slices.Index(s.parts[i].Replicas, node); pos >= 0 {
			if err := s.replaceAt(i, pos); err != nil {
				return Plan{}, err
			}
			touched[i] = true
		}
	}
	s.balanceLeaders(touched)
	return s.plan(), nil
}

// Replace gives the replicas of old (a dead broker) to with. A partition
// that already has a replica on with gets the least loaded other eligible
// broker instead (reported in Warnings).
func Replace(brokers []Broker, parts []Partition, old, with int32) (Plan, error) {
	if old == with {
		return Plan{}, refuse("replace %d with itself", old)
	}
	s, err := newState(brokers, parts, []int32{old})
	if err != nil {
		return Plan{}, err
	}
	if !s.eligible(with) {
		return Plan{}, refuse("broker %d is not an active broker", with)
	}
	if err := s.checkRFFor(func(p Partition) bool { return slices.Contains(p.Replicas, old) },
		fmt.Sprintf("active brokers without %d", old)); err != nil {
		return Plan{}, err
	}
	for i := range s.parts {
		p := &s.parts[i]
		pos := slices.Index(p.Replicas, old)
		if pos < 0 {
			continue
		}
		if !slices.Contains(p.Replicas, with) {
			s.put(i, pos, with)
			continue
		}
		if err := s.replaceAt(i, pos); err != nil {
			return Plan{}, err
		}
		s.warn("%s-%d already has a replica on %d: broker %d's replica goes to %d", p.Topic, p.Partition, with, old, p.Replicas[pos])
	}
	return s.plan(), nil
}

// MetadataQuorumAfter checks that the metadata group keeps a quorum when
// removing leaves it: voters are its members, live the brokers up now. The
// remaining live voters must be a majority of the voters.
func MetadataQuorumAfter(voters, live []int32, removing int32) error {
	if !slices.Contains(voters, removing) {
		return nil
	}
	up := 0
	var down []string
	for _, v := range voters {
		switch {
		case v == removing:
		case slices.Contains(live, v):
			up++
		default:
			down = append(down, fmt.Sprint(v))
		}
	}
	if need := len(voters)/2 + 1; up < need {
		msg := fmt.Sprintf("the metadata group has voters %v; without %d only %d are up, and a quorum needs %d", voters, removing, up, need)
		if len(down) > 0 {
			msg += " (down: " + strings.Join(down, ", ") + "; bring them back or replace them first)"
		}
		return &RefusedError{Reason: msg}
	}
	return nil
}

func minus(a, b []int32) []int32 {
	var out []int32
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func sortedIDs[V any](m map[int32]V) []int32 {
	ids := make([]int32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}
