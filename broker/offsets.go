package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"

	"github.com/chronik-dev/chronik/coordinator"
	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

// Committed offsets live in the partitions of the internal offsets topic,
// each a Raft group like any other partition. A group's offsets go to
// partition hash(group) mod N, and the leader of that partition is the
// group's coordinator. Every replica applies the commits, so a new
// coordinator has them all.

type offsetCmd struct {
	Op      string         `json:"op"` // "commit", "delete" or "group"
	Group   string         `json:"group"`
	Offsets []offsetRecord `json:"offsets,omitempty"`
	TPs     []tpRef        `json:"tps,omitempty"`
	Data    []byte         `json:"data,omitempty"` // "group": the coordinator's membership snapshot
}

type offsetRecord struct {
	Topic     string `json:"t"`
	Partition int32  `json:"p"`
	Offset    int64  `json:"o"`
	Epoch     int32  `json:"e"`
	Meta      string `json:"m,omitempty"`
	Time      int64  `json:"ts"`
}

type tpRef struct {
	Topic     string `json:"t"`
	Partition int32  `json:"p"`
}

// offsetsSM is the state of one offsets partition: committed offsets, and
// the coordinator's membership snapshot of each group, so a new
// coordinator carries on with the same members and generation.
type offsetsSM struct {
	mu      sync.RWMutex
	groups  map[string]map[coordinator.TopicPartition]coordinator.Offset
	members map[string][]byte
}

func newOffsetsSM() *offsetsSM {
	return &offsetsSM{groups: map[string]map[coordinator.TopicPartition]coordinator.Offset{}, members: map[string][]byte{}}
}

// Apply implements raft.StateMachine.
func (s *offsetsSM) Apply(ents []raft.Committed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range ents {
		if e.Kind != clog.KindCommand {
			continue
		}
		var cmd offsetCmd
		if err := json.Unmarshal(e.Payload, &cmd); err != nil {
			return fmt.Errorf("offsets entry %d: %w", e.Index, err)
		}
		switch cmd.Op {
		case "commit":
			g := s.groups[cmd.Group]
			if g == nil {
				g = map[coordinator.TopicPartition]coordinator.Offset{}
				s.groups[cmd.Group] = g
			}
			for _, o := range cmd.Offsets {
				g[coordinator.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = coordinator.Offset{
					Offset: o.Offset, LeaderEpoch: o.Epoch, Metadata: o.Meta, CommitTime: o.Time}
			}
		case "group":
			if len(cmd.Data) == 0 {
				delete(s.members, cmd.Group)
			} else {
				s.members[cmd.Group] = cmd.Data
			}
		case "delete":
			if len(cmd.TPs) == 0 {
				delete(s.groups, cmd.Group)
				delete(s.members, cmd.Group)
				continue
			}
			g := s.groups[cmd.Group]
			for _, tp := range cmd.TPs {
				delete(g, coordinator.TopicPartition{Topic: tp.Topic, Partition: tp.Partition})
			}
			if len(g) == 0 {
				delete(s.groups, cmd.Group)
			}
		}
	}
	return nil
}

type offsetsSnapshot struct {
	Groups  map[string][]offsetRecord `json:"groups"`
	Members map[string][]byte         `json:"members,omitempty"`
}

// Snapshot implements raft.StateMachine.
func (s *offsetsSM) Snapshot() ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := offsetsSnapshot{Groups: map[string][]offsetRecord{}, Members: s.members}
	for g, m := range s.groups {
		for tp, o := range m {
			snap.Groups[g] = append(snap.Groups[g], offsetRecord{Topic: tp.Topic, Partition: tp.Partition,
				Offset: o.Offset, Epoch: o.LeaderEpoch, Meta: o.Metadata, Time: o.CommitTime})
		}
	}
	return json.Marshal(&snap)
}

// Restore implements raft.StateMachine.
func (s *offsetsSM) Restore(_ uint64, data []byte) error {
	groups := map[string]map[coordinator.TopicPartition]coordinator.Offset{}
	members := map[string][]byte{}
	if len(data) > 0 {
		var snap offsetsSnapshot
		if err := json.Unmarshal(data, &snap); err != nil {
			return err
		}
		for g, recs := range snap.Groups {
			m := map[coordinator.TopicPartition]coordinator.Offset{}
			for _, o := range recs {
				m[coordinator.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = coordinator.Offset{
					Offset: o.Offset, LeaderEpoch: o.Epoch, Metadata: o.Meta, CommitTime: o.Time}
			}
			groups[g] = m
		}
		for g, d := range snap.Members {
			members[g] = d
		}
	}
	s.mu.Lock()
	s.groups = groups
	s.members = members
	s.mu.Unlock()
	return nil
}

// groupPartition maps a group to its offsets partition.
func groupPartition(group string, n int32) int32 {
	h := fnv.New32a()
	h.Write([]byte(group))
	return int32(h.Sum32() % uint32(n))
}

// offsetStore implements coordinator.OffsetStore over the offsets topic.
type offsetStore struct{ b *Broker }

var errNotCoordinator = errors.New("not the coordinator for this group")

func (o offsetStore) replica(group string) (*offsetsPartition, error) {
	op := o.b.offsetsPartitionFor(group)
	if op == nil {
		return nil, errNotCoordinator
	}
	return op, nil
}

func (o offsetStore) propose(ctx context.Context, group string, cmd offsetCmd) error {
	op, err := o.replica(group)
	if err != nil {
		return err
	}
	data, err := json.Marshal(&cmd)
	if err != nil {
		return err
	}
	_, err = op.rep.Propose(ctx, clog.KindCommand, data, true)
	return err
}

// Commit implements coordinator.OffsetStore.
func (o offsetStore) Commit(ctx context.Context, group string, offsets map[coordinator.TopicPartition]coordinator.Offset) error {
	cmd := offsetCmd{Op: "commit", Group: group}
	for tp, off := range offsets {
		cmd.Offsets = append(cmd.Offsets, offsetRecord{Topic: tp.Topic, Partition: tp.Partition, Offset: off.Offset,
			Epoch: off.LeaderEpoch, Meta: off.Metadata, Time: off.CommitTime})
	}
	sort.Slice(cmd.Offsets, func(i, j int) bool {
		a, b := cmd.Offsets[i], cmd.Offsets[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	return o.propose(ctx, group, cmd)
}

// Delete implements coordinator.OffsetStore.
func (o offsetStore) Delete(ctx context.Context, group string, tps []coordinator.TopicPartition) error {
	cmd := offsetCmd{Op: "delete", Group: group}
	for _, tp := range tps {
		cmd.TPs = append(cmd.TPs, tpRef{Topic: tp.Topic, Partition: tp.Partition})
	}
	return o.propose(ctx, group, cmd)
}

// SaveGroup implements coordinator.OffsetStore.
func (o offsetStore) SaveGroup(ctx context.Context, group string, data []byte) error {
	return o.propose(ctx, group, offsetCmd{Op: "group", Group: group, Data: data})
}

// LoadGroup implements coordinator.OffsetStore.
func (o offsetStore) LoadGroup(group string) []byte {
	op, err := o.replica(group)
	if err != nil {
		return nil
	}
	op.sm.mu.RLock()
	defer op.sm.mu.RUnlock()
	return op.sm.members[group]
}

// Offsets implements coordinator.OffsetStore.
func (o offsetStore) Offsets(group string) map[coordinator.TopicPartition]coordinator.Offset {
	op, err := o.replica(group)
	if err != nil {
		return nil
	}
	op.sm.mu.RLock()
	defer op.sm.mu.RUnlock()
	out := make(map[coordinator.TopicPartition]coordinator.Offset, len(op.sm.groups[group]))
	for tp, off := range op.sm.groups[group] {
		out[tp] = off
	}
	return out
}

// Groups implements coordinator.OffsetStore: groups of the offsets
// partitions this node leads.
func (o offsetStore) Groups() []string {
	var out []string
	for _, op := range o.b.offsetsPartitions() {
		if !op.rep.Status().IsLeader() {
			continue
		}
		op.sm.mu.RLock()
		for g := range op.sm.groups {
			out = append(out, g)
		}
		op.sm.mu.RUnlock()
	}
	sort.Strings(out)
	return out
}

// offsetsPartition is this node's replica of one offsets partition.
type offsetsPartition struct {
	index int32
	group uint64
	rep   *raft.Replica
	sm    *offsetsSM
}
