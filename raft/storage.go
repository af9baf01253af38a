package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	clog "github.com/chronik-dev/chronik/log"
)

// Entry data as proposed: one kind byte, an 8-byte proposal id (zero once
// stored), then the payload. The id lets the proposing node match its
// entries in Ready; followers and the stored log do not need it.
const dataHeader = 9

func encodeData(kind clog.Kind, id uint64, payload []byte) []byte {
	b := make([]byte, dataHeader+len(payload))
	b[0] = byte(kind)
	binary.BigEndian.PutUint64(b[1:], id)
	copy(b[dataHeader:], payload)
	return b
}

// decodeData splits entry data; ok is false for data Chronik did not write.
func decodeData(e *pb.Entry) (kind clog.Kind, id uint64, payload []byte, ok bool) {
	switch e.GetType() {
	case pb.EntryConfChange:
		return clog.KindConfChange, 0, e.GetData(), true
	case pb.EntryConfChangeV2:
		return clog.KindConfChangeV2, 0, e.GetData(), true
	}
	d := e.GetData()
	if len(d) == 0 {
		return clog.KindNoop, 0, nil, true
	}
	if len(d) < dataHeader {
		return 0, 0, nil, false
	}
	return clog.Kind(d[0]), binary.BigEndian.Uint64(d[1:]), d[dataHeader:], true
}

func toRaftEntry(e *clog.Entry) *pb.Entry {
	re := &pb.Entry{Index: new(e.Index), Term: new(e.Term)}
	switch e.Kind {
	case clog.KindConfChange:
		re.Type = pb.EntryConfChange.Enum()
		re.Data = e.Payload
	case clog.KindConfChangeV2:
		re.Type = pb.EntryConfChangeV2.Enum()
		re.Data = e.Payload
	case clog.KindNoop:
		re.Type = pb.EntryNormal.Enum()
	default:
		re.Type = pb.EntryNormal.Enum()
		re.Data = encodeData(e.Kind, 0, e.Payload)
	}
	return re
}

// entryMeta is what the replica needs of an entry between appending it and
// applying it.
type entryMeta struct {
	index      uint64
	term       uint64
	baseOffset int64
	count      int32
}

// storage implements etcd raft's Storage over a clog.Log plus a small state
// file holding the HardState and ConfState (or, with Config.StateDir, the
// node's hard-state file, hardstate.go), and a snapshot file.
//
// Durability: entries are durable once the log is synced; the state file is
// fsynced whenever term, vote or the configuration change (raft requires
// those on disk before any message that depends on them is sent). Commit
// index updates are written without fsync: raft recovers a lost commit index
// from the leader, and the applied index can never pass the written one
// because the replica writes the state before applying. The written commit
// can pass the log that survives a crash; loading clamps it (fitToLog).
type storage struct {
	dir  string
	log  *clog.Log
	hs   *pb.HardState
	cs   *pb.ConfState
	snap *pb.Snapshot // latest local snapshot (metadata and data)
	// compactToSnap: the log is compacted to local snapshots (state-machine
	// groups) rather than by retention (data partitions).
	compactToSnap bool

	stateF *os.File
	seq    uint64
	closed bool
	// node, when set, holds the hard state instead of stateF (one file
	// for every replica of the host, hardstate.go); group is the key.
	// stateDirty: hs changed (only its commit index) since it was last
	// written there.
	node       *hardStateLog
	group      uint64
	stateDirty bool

	// hist is the configuration after each change since the log base
	// (confhistory.go).
	hist *confHistory

	// metas covers the entries after the applied index, in order.
	metas []entryMeta

	// cache holds the latest appended entries, contiguous: Raft reads
	// them back to apply them and to replicate them, and serving that from
	// memory spares a disk read on every commit.
	cache      []*pb.Entry
	cacheBytes int
	// inReady is set while etcd raft builds a Ready: its reads then are
	// the apply path's, never deferred (behind.go).
	inReady bool
	// refilling is set while the leader steps an answer of a follower
	// being refilled: no replication read goes to the log (behind.go).
	refilling bool
}

// cacheLimit bounds a replica's entry cache. Entries not yet applied stay
// regardless, so the bound is soft under a commit backlog.
const cacheLimit = 2 << 20

func (s *storage) cachePut(ents []*pb.Entry) {
	if len(ents) == 0 {
		return
	}
	first := ents[0].GetIndex()
	if n := len(s.cache); n > 0 {
		c0 := s.cache[0].GetIndex()
		switch {
		case first <= c0:
			s.cacheClear()
		case first <= s.cache[n-1].GetIndex():
			for _, e := range s.cache[first-c0:] {
				s.cacheBytes -= len(e.GetData())
			}
			s.cache = s.cache[:first-c0]
		case first != s.cache[n-1].GetIndex()+1:
			s.cacheClear()
		}
	}
	for _, e := range ents {
		s.cache = append(s.cache, e)
		s.cacheBytes += len(e.GetData())
	}
}

func (s *storage) cacheClear() {
	clear(s.cache)
	s.cache = s.cache[:0]
	s.cacheBytes = 0
}

// cacheEvict drops applied entries from the front while over the limit.
// The slice is cut from the front, not shifted down: a full cache of small
// entries evicts one entry per apply, and shifting ten thousand pointers
// each time (with write barriers) was 8% of a node's CPU under a steady
// stream of one-record produces. append moves the live part to a new
// array when the capacity runs out, which costs O(1) per entry amortised.
func (s *storage) cacheEvict(applied uint64) {
	n := 0
	for n < len(s.cache) && s.cacheBytes > cacheLimit && s.cache[n].GetIndex() <= applied {
		s.cacheBytes -= len(s.cache[n].GetData())
		s.cache[n] = nil // the array's dead front must not keep it alive
		n++
	}
	s.cache = s.cache[n:]
}

// cacheCovers reports whether the cache holds all of [lo, hi).
func (s *storage) cacheCovers(lo, hi uint64) bool {
	return len(s.cache) > 0 && lo >= s.cache[0].GetIndex() && hi <= s.cache[len(s.cache)-1].GetIndex()+1
}

// cacheGet serves [lo, hi) from the cache when it holds all of it.
func (s *storage) cacheGet(lo, hi, maxSize uint64) ([]*pb.Entry, bool) {
	if len(s.cache) == 0 || hi <= lo {
		return nil, false
	}
	c0 := s.cache[0].GetIndex()
	last := s.cache[len(s.cache)-1].GetIndex()
	if lo < c0 || hi > last+1 {
		return nil, false
	}
	var size uint64
	out := make([]*pb.Entry, 0, hi-lo)
	for _, e := range s.cache[lo-c0 : hi-c0] {
		size += uint64(len(e.GetData()))
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, e)
	}
	return out, true
}

func openStorage(dir string, opts clog.Options, node *hardStateLog, group uint64) (*storage, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, err
	}
	// Directories made by older versions were world-readable.
	if err := os.Chmod(dir, dirMode); err != nil {
		return nil, err
	}
	opts.Dir = dir
	l, err := clog.Open(opts)
	if err != nil {
		return nil, err
	}
	s := &storage{dir: dir, log: l, hs: &pb.HardState{}, cs: &pb.ConfState{}, node: node, group: group}
	if err := s.open(); err != nil {
		s.close()
		return nil, err
	}
	hist, found, err := loadConfHistory(dir)
	if err != nil {
		s.close()
		return nil, err
	}
	if !found {
		// Written by a version that never changed configurations (or
		// new): the configuration on record holds since index 0.
		hist.record(0, s.cs)
	}
	s.hist = hist
	return s, nil
}

// confAt is the configuration in force at index.
func (s *storage) confAt(index uint64) *pb.ConfState {
	if cs := s.hist.at(index); cs != nil {
		return cs
	}
	return s.cs
}

// open loads the state and snapshot files and checks they fit the log.
func (s *storage) open() error {
	load := s.loadState
	if s.node != nil {
		load = s.loadNodeState
	}
	found, err := load()
	if err != nil {
		return err
	}
	if err := s.loadSnapshot(); err != nil {
		return err
	}
	if !found && (s.log.LastIndex() > 0 || s.snap != nil) {
		// The state is written (atomically) before the first entry, so a
		// log without it lost its term and vote.
		return s.damaged(fmt.Sprintf("it is missing or empty while the log holds entries up to index %d", s.log.LastIndex()))
	}
	return nil
}

// Snapshot file: [u32 crc][proto Snapshot].
func (s *storage) snapPath() string { return filepath.Join(s.dir, "snapshot") }

func (s *storage) loadSnapshot() error {
	b, err := os.ReadFile(s.snapPath())
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(s.snapPath(), fileMode); err != nil {
		return err
	}
	if len(b) < 4 || crc32.Checksum(b[4:], crcTable) != binary.BigEndian.Uint32(b) {
		return fmt.Errorf("raft snapshot %s: checksum mismatch", s.dir)
	}
	snap := &pb.Snapshot{}
	if err := proto.Unmarshal(b[4:], snap); err != nil {
		return err
	}
	s.snap = snap
	return nil
}

func (s *storage) saveSnapshot(snap *pb.Snapshot) error {
	b, err := proto.Marshal(snap)
	if err != nil {
		return err
	}
	out := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(out, crc32.Checksum(b, crcTable))
	if err := clog.WriteFileSync(s.snapPath(), append(out, b...)); err != nil {
		return err
	}
	s.snap = snap
	return nil
}

// InitialState implements etcdraft.Storage.
func (s *storage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	return proto.Clone(s.hs).(*pb.HardState), proto.Clone(s.cs).(*pb.ConfState), nil
}

// Entries implements etcdraft.Storage.
func (s *storage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	if out, ok := s.cacheGet(lo, hi, maxSize); ok {
		return out, nil
	}
	if s.farRead(lo, maxSize) {
		return nil, nil // a refill sends them (behind.go)
	}
	es, err := s.log.Entries(lo, hi, maxSize)
	if err != nil {
		return nil, mapLogErr(err)
	}
	out := make([]*pb.Entry, len(es))
	for i := range es {
		out[i] = toRaftEntry(&es[i])
	}
	return out, nil
}

func mapLogErr(err error) error {
	switch {
	case errors.Is(err, clog.ErrCompacted):
		return etcdraft.ErrCompacted
	case errors.Is(err, clog.ErrUnavailable):
		return etcdraft.ErrUnavailable
	}
	return err
}

// Term implements etcdraft.Storage.
func (s *storage) Term(i uint64) (uint64, error) {
	t, err := s.log.Term(i)
	return t, mapLogErr(err)
}

// LastIndex implements etcdraft.Storage.
func (s *storage) LastIndex() (uint64, error) { return s.log.LastIndex(), nil }

// FirstIndex implements etcdraft.Storage.
func (s *storage) FirstIndex() (uint64, error) { return s.log.FirstIndex(), nil }

// Snapshot implements etcdraft.Storage. It describes the log's base point:
// a replica that needs entries before FirstIndex restarts its log there.
// The data carries the log start offset and the state machine's latest
// local snapshot (see replica.snapshotData).
func (s *storage) Snapshot() (*pb.Snapshot, error) {
	idx, term, off := s.log.Base()
	if s.compactToSnap && s.snap != nil && s.snap.GetMetadata().GetIndex() >= idx {
		// State-machine groups: the snapshot holds the whole state, so the
		// receiver needs nothing before it.
		snap := proto.Clone(s.snap).(*pb.Snapshot)
		snap.Metadata.ConfState = withLearners(snap.GetMetadata().GetConfState(), s.cs)
		return snap, nil
	}
	var smIndex uint64
	var data []byte
	if s.snap != nil && s.snap.GetMetadata().GetIndex() >= idx {
		smIndex = s.snap.GetMetadata().GetIndex()
		_, _, data = splitSnapData(s.snap.GetData())
	}
	// The configuration as of the base, not the current one: the changes
	// after it are in the log the receiver replays.
	cs := withLearners(s.confAt(idx), s.cs)
	return &pb.Snapshot{
		Data:     joinSnapData(off, smIndex, data),
		Metadata: &pb.SnapshotMetadata{ConfState: cs, Index: new(idx), Term: new(term)},
	}, nil
}

// Snapshot data: [i64 log start offset][u64 index the state machine data is
// at][state machine bytes].
func joinSnapData(offset int64, smIndex uint64, data []byte) []byte {
	b := make([]byte, 16, 16+len(data))
	binary.BigEndian.PutUint64(b, uint64(offset))
	binary.BigEndian.PutUint64(b[8:], smIndex)
	return append(b, data...)
}

func splitSnapData(b []byte) (offset int64, smIndex uint64, data []byte) {
	if len(b) < 16 {
		return 0, 0, nil
	}
	return int64(binary.BigEndian.Uint64(b)), binary.BigEndian.Uint64(b[8:]), b[16:]
}

// append stores Ready entries and records their metadata.
func (s *storage) append(ents []*pb.Entry, scratch []clog.Entry) ([]clog.Entry, error) {
	out := scratch[:0]
	for _, e := range ents {
		kind, _, payload, ok := decodeData(e)
		if !ok {
			return nil, fmt.Errorf("raft %s: entry %d has foreign data", s.dir, e.GetIndex())
		}
		out = append(out, clog.Entry{Index: e.GetIndex(), Term: e.GetTerm(), Kind: kind, Payload: payload})
	}
	if err := s.log.Append(out); err != nil {
		s.cacheClear()
		return nil, err
	}
	s.cachePut(ents)
	first := out[0].Index
	for len(s.metas) > 0 && s.metas[len(s.metas)-1].index >= first {
		s.metas = s.metas[:len(s.metas)-1]
	}
	for i := range out {
		s.metas = append(s.metas, entryMeta{index: out[i].Index, term: out[i].Term, baseOffset: out[i].BaseOffset, count: out[i].Count})
	}
	return out, nil
}

// metaFor returns the metadata of an unapplied entry, reading the log when
// it is not cached (after a restart).
func (s *storage) metaFor(index uint64) (entryMeta, error) {
	for len(s.metas) > 0 && s.metas[0].index < index {
		s.metas = s.metas[1:]
	}
	if len(s.metas) > 0 && s.metas[0].index == index {
		return s.metas[0], nil
	}
	es, err := s.log.Entries(index, index+1, 0)
	if err != nil {
		return entryMeta{}, err
	}
	e := es[0]
	return entryMeta{index: e.Index, term: e.Term, baseOffset: e.BaseOffset, count: e.Count}, nil
}

func (s *storage) close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.log.Close()
	if s.node != nil && s.stateDirty {
		// The last commit index, so a restart replays what was applied;
		// the host commits what its replicas staged in one frame
		// (StopReplicas, RemoveReplica, recover). Only the commit index
		// can be dirty: term and vote changes are committed as they
		// happen.
		rec, e := stateRecord(s.group, s.hs, s.cs)
		if e == nil {
			s.node.stage(rec)
			s.stateDirty = false
		} else if err == nil {
			err = e
		}
	}
	if s.stateF != nil {
		if e := s.syncState(); e != nil && err == nil {
			err = e
		}
		if e := s.stateF.Close(); e != nil && err == nil {
			err = e
		}
		s.stateF = nil
	}
	return err
}
