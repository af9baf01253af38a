package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	clog "github.com/chronik-dev/chronik/log"
)

// The configuration history. A snapshot must carry the configuration as
// of its own index, and a restarted replica must start Raft with the
// configuration as of its applied index: the configuration changes after
// it are applied again as the log replays, and applying one on top of the
// configuration it produced is wrong (entering a joint configuration
// twice panics in etcd raft). The raft-state file holds only the latest
// configuration, so each replica also keeps, in "confstates" in its
// directory, the configuration after every applied change since its log
// base, and which incarnation each node was last promoted at (gag.go):
//
//	[u32 magic "RCS1"][u32 CRC-32C of body][body]
//	body:  [u32 n] n × ([u64 index][u32 length][ConfState])
//	       [u32 m] m × ([u64 node][u64 incarnation])
//
// It is replaced whole (temporary file, fsync, rename, directory fsync)
// when a change is applied (before the raft-state file records it), when
// a snapshot is installed and when retention moves the log base (the
// latest entry at or before the base is kept). A directory without the
// file was written by a version that never changed configurations: its
// latest configuration holds since index 0.

const (
	confHistoryFile  = "confstates"
	confHistoryMagic = 0x52435331 // "RCS1"
	// maxConfHistory bounds what a loaded file may declare.
	maxConfHistory = 1 << 16
)

type confAt struct {
	index uint64
	cs    *pb.ConfState
}

// confHistory is a replica's configuration history; worker-owned.
type confHistory struct {
	path    string
	entries []confAt // ascending index
	// promoted is the incarnation each node was last promoted at by a
	// change whose context named it.
	promoted map[uint64]uint64
}

// loadConfHistory reads the history in dir; found is false when there is
// no file.
func loadConfHistory(dir string) (h *confHistory, found bool, err error) {
	h = &confHistory{path: filepath.Join(dir, confHistoryFile), promoted: map[uint64]uint64{}}
	b, err := os.ReadFile(h.path)
	if errors.Is(err, fs.ErrNotExist) {
		return h, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if err := h.decode(b); err != nil {
		return nil, false, fmt.Errorf("raft configuration history %s: %w", h.path, err)
	}
	return h, true, nil
}

func (h *confHistory) decode(b []byte) error {
	if len(b) < 8 || binary.BigEndian.Uint32(b) != confHistoryMagic {
		return errors.New("bad header")
	}
	body := b[8:]
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(b[4:]) {
		return errors.New("checksum mismatch")
	}
	u32 := func() (uint32, bool) {
		if len(body) < 4 {
			return 0, false
		}
		v := binary.BigEndian.Uint32(body)
		body = body[4:]
		return v, true
	}
	u64 := func() (uint64, bool) {
		if len(body) < 8 {
			return 0, false
		}
		v := binary.BigEndian.Uint64(body)
		body = body[8:]
		return v, true
	}
	n, ok := u32()
	if !ok || n > maxConfHistory {
		return errors.New("bad entry count")
	}
	for range n {
		idx, ok1 := u64()
		l, ok2 := u32()
		if !ok1 || !ok2 || uint32(len(body)) < l {
			return errors.New("truncated entry")
		}
		cs := &pb.ConfState{}
		if err := proto.Unmarshal(body[:l], cs); err != nil {
			return err
		}
		body = body[l:]
		if k := len(h.entries); k > 0 && h.entries[k-1].index >= idx {
			return errors.New("entries out of order")
		}
		h.entries = append(h.entries, confAt{index: idx, cs: cs})
	}
	m, ok := u32()
	if !ok || m > maxConfHistory {
		return errors.New("bad promotion count")
	}
	for range m {
		node, ok1 := u64()
		inc, ok2 := u64()
		if !ok1 || !ok2 {
			return errors.New("truncated promotion")
		}
		h.promoted[node] = inc
	}
	return nil
}

func (h *confHistory) encode() ([]byte, error) {
	body := binary.BigEndian.AppendUint32(nil, uint32(len(h.entries)))
	for _, e := range h.entries {
		cb, err := proto.Marshal(e.cs)
		if err != nil {
			return nil, err
		}
		body = binary.BigEndian.AppendUint64(body, e.index)
		body = binary.BigEndian.AppendUint32(body, uint32(len(cb)))
		body = append(body, cb...)
	}
	nodes := make([]uint64, 0, len(h.promoted))
	for n := range h.promoted {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	body = binary.BigEndian.AppendUint32(body, uint32(len(nodes)))
	for _, n := range nodes {
		body = binary.BigEndian.AppendUint64(body, n)
		body = binary.BigEndian.AppendUint64(body, h.promoted[n])
	}
	out := binary.BigEndian.AppendUint32(nil, confHistoryMagic)
	out = binary.BigEndian.AppendUint32(out, crc32.Checksum(body, crcTable))
	return append(out, body...), nil
}

// save writes the history durably.
func (h *confHistory) save() error {
	b, err := h.encode()
	if err != nil {
		return err
	}
	if err := clog.WriteFileSync(h.path, b); err != nil {
		return fmt.Errorf("raft configuration history %s: %w", h.path, err)
	}
	return nil
}

// at is the configuration in force at index (after applying it), or nil
// when the history does not reach back that far.
func (h *confHistory) at(index uint64) *pb.ConfState {
	for i := len(h.entries) - 1; i >= 0; i-- {
		if h.entries[i].index <= index {
			return h.entries[i].cs
		}
	}
	return nil
}

// lastIndex is the index of the latest recorded change.
func (h *confHistory) lastIndex() uint64 {
	if len(h.entries) == 0 {
		return 0
	}
	return h.entries[len(h.entries)-1].index
}

// record notes the configuration after the change at index. A change
// applied again (a restart replays the log) replaces its entry; the
// entries after it stay, as committed changes never change.
func (h *confHistory) record(index uint64, cs *pb.ConfState) {
	cs = proto.Clone(cs).(*pb.ConfState)
	i, found := slices.BinarySearchFunc(h.entries, index, func(e confAt, idx uint64) int {
		switch {
		case e.index < idx:
			return -1
		case e.index > idx:
			return 1
		}
		return 0
	})
	if found {
		h.entries[i].cs = cs
		return
	}
	h.entries = slices.Insert(h.entries, i, confAt{index: index, cs: cs})
}

// reset restarts the history at a snapshot.
func (h *confHistory) reset(index uint64, cs *pb.ConfState) {
	h.entries = []confAt{{index: index, cs: proto.Clone(cs).(*pb.ConfState)}}
	members := confMembers(cs)
	for n := range h.promoted {
		if !slices.Contains(members, n) {
			delete(h.promoted, n)
		}
	}
}

// trim drops the entries that no index at or after base needs; it
// reports whether anything was dropped.
func (h *confHistory) trim(base uint64) bool {
	keep := 0
	for keep+1 < len(h.entries) && h.entries[keep+1].index <= base {
		keep++
	}
	if keep == 0 {
		return false
	}
	h.entries = append(h.entries[:0], h.entries[keep:]...)
	return true
}

// confMembers lists every member of cs: voters of both halves of a joint
// configuration, learners and learners to be.
func confMembers(cs *pb.ConfState) []uint64 {
	var out []uint64
	for _, set := range [][]uint64{cs.GetVoters(), cs.GetVotersOutgoing(), cs.GetLearners(), cs.GetLearnersNext()} {
		for _, id := range set {
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out
}

// withLearners returns cs plus every member of current that cs lacks, as
// a learner. A snapshot's recipient must be in its configuration (etcd
// raft drops one that does not name it), but a snapshot at the log base
// predates the changes that added recent members. As a learner such a
// member cannot vote or count towards any quorum, and the changes it
// replays after the snapshot bring its configuration to the leader's:
// adding a learner that is one already changes nothing.
func withLearners(cs, current *pb.ConfState) *pb.ConfState {
	out := proto.Clone(cs).(*pb.ConfState)
	have := confMembers(cs)
	for _, id := range confMembers(current) {
		if !slices.Contains(have, id) {
			out.Learners = append(out.Learners, id)
		}
	}
	return out
}
