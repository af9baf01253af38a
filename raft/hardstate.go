package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	clog "github.com/chronik-dev/chronik/log"
)

// The node's hard-state log (format in doc.go): the HardState and ConfState
// of every replica on the node, in one append-only file of CRC'd frames.
// Writers hand their records to commit, which appends them as one frame
// and fsyncs; callers that arrive while a frame is being written queue up
// for the next one (group commit), so a leadership transfer waits on one
// fsync on each side however many groups move at once. Only one frame is
// written at a time and each is fsynced before the next is written, so a
// crash can tear only the last frame: a bad frame at the end is a torn
// write whose records nobody acted on, and is cut off; a bad frame with a
// good one after it is damage, and the node refuses to start. When the
// file has grown well past its live records it is rewritten as one frame
// (compaction: temporary file, fsync, rename, directory fsync).

const (
	hardStateFile  = "raft-hardstate"
	hsMagic        = 0x52485331 // "RHS1"
	hsFrameHeader  = 12         // magic, body length, CRC-32C of body
	hsMaxFrame     = 64 << 20
	hsCompactFloor = 1 << 20
	recState       = 1
	recRemoved     = 2
)

// hardStateLog is the node-level store. It is safe for concurrent use.
type hardStateLog struct {
	path   string
	logger *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	f        *os.File
	size     int64
	seq      uint64            // sequence of the last frame written
	groups   map[uint64][]byte // latest state record of each group
	live     int               // bytes of the records in groups
	queue    [][]byte          // records waiting for the next frame
	flushing bool              // a frame is being written
	flushed  uint64            // flushes finished
	started  uint64            // flushes begun
	err      error             // sticky: a failed write or fsync
	closed   bool
	// compactFloor: the file is rewritten once past this size and four
	// times its live records (a field so tests can compact often).
	compactFloor int64

	// hook, when set (tests), is called at the named points of a write;
	// crash tests kill the process there, and an error it returns is
	// taken as the failure of the step that follows.
	hook func(point string) error
}

func (s *hardStateLog) at(point string) error {
	if s.hook != nil {
		return s.hook(point)
	}
	return nil
}

// openHardStateLog opens (or creates) the store in dir, reading every
// frame; a torn last frame is cut off.
func openHardStateLog(dir string, logger *slog.Logger) (*hardStateLog, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, err
	}
	s := &hardStateLog{path: filepath.Join(dir, hardStateFile), logger: logger, groups: map[uint64][]byte{}, compactFloor: hsCompactFloor}
	s.cond = sync.NewCond(&s.mu)
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Created whole (and the directory synced) before any record goes
		// in, so a missing file later means it was lost.
		if err := clog.WriteFileSync(s.path, nil); err != nil {
			return nil, fmt.Errorf("raft hard state %s: create: %w", s.path, err)
		}
	case err != nil:
		return nil, fmt.Errorf("raft hard state %s: %w", s.path, err)
	default:
		end, err := s.replay(data)
		if err != nil {
			return nil, err
		}
		if end < len(data) {
			logger.Warn("raft hard state: cutting a torn write at the end", "file", s.path, "offset", end, "bytes", len(data)-end)
			if err := os.Truncate(s.path, int64(end)); err != nil {
				return nil, fmt.Errorf("raft hard state %s: cut torn tail: %w", s.path, err)
			}
		}
		s.size = int64(end)
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND, fileMode)
	if err != nil {
		return nil, fmt.Errorf("raft hard state %s: %w", s.path, err)
	}
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		return nil, fmt.Errorf("raft hard state %s: %w", s.path, err)
	}
	// The cut (if any) must be on disk before a new frame follows it, or a
	// crash could leave the old garbage between two good frames.
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("raft hard state %s: fsync: %w", s.path, err)
	}
	s.f = f
	return s, nil
}

// damaged is the error for a store that cannot be trusted.
func (s *hardStateLog) damaged(why string) error {
	return fmt.Errorf("%w: %s: %s. The node will not start: with the terms and votes of its replicas lost it could vote twice in one term. "+
		"To recover, stop the node and restore its data directory from a backup; or, only while every group of this node has its other "+
		"replicas up and a leader, delete this file and every replica directory beside it so that the node rejoins empty and copies "+
		"the logs from the leaders", ErrStateDamaged, s.path, why)
}

// replay applies the frames in data and returns where the good frames end.
func (s *hardStateLog) replay(data []byte) (int, error) {
	off := 0
	for off < len(data) {
		body, ok := parseFrame(data[off:])
		if !ok {
			if next := findFrame(data[off+1:]); next >= 0 {
				return 0, s.damaged(fmt.Sprintf("bad frame at offset %d followed by a good one at offset %d", off, off+1+next))
			}
			return off, nil // torn tail
		}
		seq := binary.BigEndian.Uint64(body)
		if seq <= s.seq {
			return 0, s.damaged(fmt.Sprintf("frame at offset %d has sequence %d after %d", off, seq, s.seq))
		}
		if err := s.applyRecords(body[8:]); err != nil {
			return 0, s.damaged(fmt.Sprintf("frame at offset %d: %v", off, err))
		}
		s.seq = seq
		off += hsFrameHeader + len(body)
	}
	return off, nil
}

// parseFrame returns the body of a valid frame at the start of b.
func parseFrame(b []byte) (body []byte, ok bool) {
	if len(b) < hsFrameHeader || binary.BigEndian.Uint32(b) != hsMagic {
		return nil, false
	}
	n := int(binary.BigEndian.Uint32(b[4:]))
	if n < 8 || n > hsMaxFrame || hsFrameHeader+n > len(b) {
		return nil, false
	}
	body = b[hsFrameHeader : hsFrameHeader+n]
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(b[8:]) {
		return nil, false
	}
	return body, true
}

// findFrame returns the offset of the first valid frame in b, or -1.
func findFrame(b []byte) int {
	var magic [4]byte
	binary.BigEndian.PutUint32(magic[:], hsMagic)
	for at := 0; ; {
		i := bytes.Index(b[at:], magic[:])
		if i < 0 {
			return -1
		}
		if _, ok := parseFrame(b[at+i:]); ok {
			return at + i
		}
		at += i + 1
	}
}

// Records: [u8 kind][u64 group], then for recState
// [u32 HardState length][HardState][u32 ConfState length][ConfState].
func stateRecord(group uint64, hs *pb.HardState, cs *pb.ConfState) ([]byte, error) {
	hb, err := proto.Marshal(hs)
	if err != nil {
		return nil, err
	}
	cb, err := proto.Marshal(cs)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 9, 17+len(hb)+len(cb))
	b[0] = recState
	binary.BigEndian.PutUint64(b[1:], group)
	b = binary.BigEndian.AppendUint32(b, uint32(len(hb)))
	b = append(b, hb...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(cb)))
	return append(b, cb...), nil
}

func removedRecord(group uint64) []byte {
	b := make([]byte, 9)
	b[0] = recRemoved
	binary.BigEndian.PutUint64(b[1:], group)
	return b
}

// splitRecord returns the first record in b and its length.
func splitRecord(b []byte) (kind byte, group uint64, hs, cs []byte, n int, err error) {
	if len(b) < 9 {
		return 0, 0, nil, nil, 0, errors.New("short record")
	}
	kind, group = b[0], binary.BigEndian.Uint64(b[1:])
	switch kind {
	case recRemoved:
		return kind, group, nil, nil, 9, nil
	case recState:
	default:
		return 0, 0, nil, nil, 0, fmt.Errorf("unknown record kind %d", kind)
	}
	rest := b[9:]
	var parts [2][]byte
	n = 9
	for i := range parts {
		if len(rest) < 4 {
			return 0, 0, nil, nil, 0, errors.New("short record")
		}
		l := int(binary.BigEndian.Uint32(rest))
		if l > len(rest)-4 {
			return 0, 0, nil, nil, 0, errors.New("record length beyond the frame")
		}
		parts[i] = rest[4 : 4+l]
		rest = rest[4+l:]
		n += 4 + l
	}
	return kind, group, parts[0], parts[1], n, nil
}

// applyRecords applies a frame's records to the map. Caller holds mu or
// owns s alone.
func (s *hardStateLog) applyRecords(b []byte) error {
	for len(b) > 0 {
		kind, group, hs, cs, n, err := splitRecord(b)
		if err != nil {
			return err
		}
		if kind == recState {
			if err := proto.Unmarshal(hs, &pb.HardState{}); err != nil {
				return fmt.Errorf("group %d hard state: %w", group, err)
			}
			if err := proto.Unmarshal(cs, &pb.ConfState{}); err != nil {
				return fmt.Errorf("group %d configuration: %w", group, err)
			}
		}
		s.live -= len(s.groups[group])
		delete(s.groups, group)
		if kind == recState {
			s.groups[group] = bytes.Clone(b[:n])
			s.live += n
		}
		b = b[n:]
	}
	return nil
}

// get returns the stored state of group; found is false when there is none.
func (s *hardStateLog) get(group uint64) (hs *pb.HardState, cs *pb.ConfState, found bool, err error) {
	s.mu.Lock()
	rec := s.groups[group]
	s.mu.Unlock()
	if rec == nil {
		return nil, nil, false, nil
	}
	_, _, hb, cb, _, err := splitRecord(rec)
	if err != nil {
		return nil, nil, false, err
	}
	hs, cs = &pb.HardState{}, &pb.ConfState{}
	if err := proto.Unmarshal(hb, hs); err != nil {
		return nil, nil, false, err
	}
	if err := proto.Unmarshal(cb, cs); err != nil {
		return nil, nil, false, err
	}
	return hs, cs, true, nil
}

// commit makes recs durable: when it returns nil they are fsynced, with
// whatever other callers queued meanwhile. Records of one caller are
// applied in order, and after those of earlier calls.
func (s *hardStateLog) commit(recs ...[]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, recs...)
	ticket := s.started + 1 // the flush that will carry recs
	for s.flushing {
		s.cond.Wait()
		if s.flushed >= ticket {
			return s.err
		}
	}
	if s.closed {
		return errors.New("raft hard state: closed")
	}
	// No flush in progress: this caller writes its own records and those
	// that arrived while the last flush ran.
	s.flushing = true
	s.started++
	batch := s.queue
	s.queue = nil
	failed := s.err != nil
	s.mu.Unlock()
	err := s.flush(batch, failed)
	s.mu.Lock()
	s.flushing = false
	s.flushed = s.started
	s.err = err
	s.cond.Broadcast()
	return err
}

// stage queues recs for the next commit without waiting for it: closing
// replicas stage their last commit index, and the host commits them all
// at once (StopReplicas).
func (s *hardStateLog) stage(recs ...[]byte) {
	s.mu.Lock()
	s.queue = append(s.queue, recs...)
	s.mu.Unlock()
}

// flush writes one batch; only the caller that set flushing runs it.
func (s *hardStateLog) flush(batch [][]byte, failed bool) error {
	if failed {
		// After a failed write or fsync the file's content is unknown:
		// only a rewrite of the whole store clears the failure (replicas
		// that recover from it try one).
		return s.rewrite(batch)
	}
	if err := s.write(batch); err != nil {
		return err
	}
	s.mu.Lock()
	big := s.size > max(s.compactFloor, 4*int64(s.live))
	s.mu.Unlock()
	if big {
		if err := s.rewrite(nil); err != nil {
			// batch is durable, but the file may no longer be the one
			// written to: fail until a rewrite succeeds.
			s.logger.Error("raft hard state: compaction failed", "file", s.path, "err", err)
			return err
		}
	}
	return nil
}

// frame encodes recs as the frame with sequence seq.
func frame(seq uint64, recs [][]byte) []byte {
	n := 8
	for _, r := range recs {
		n += len(r)
	}
	b := make([]byte, hsFrameHeader+8, hsFrameHeader+n)
	binary.BigEndian.PutUint64(b[hsFrameHeader:], seq)
	for _, r := range recs {
		b = append(b, r...)
	}
	binary.BigEndian.PutUint32(b, hsMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(n))
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(b[hsFrameHeader:], crcTable))
	return b
}

// write appends recs as one frame and fsyncs. Only the flusher calls it.
func (s *hardStateLog) write(recs [][]byte) error {
	if len(recs) == 0 {
		return nil
	}
	fr := frame(s.seq+1, recs)
	if len(fr) > hsMaxFrame {
		return fmt.Errorf("raft hard state %s: frame of %d bytes", s.path, len(fr))
	}
	err := s.at("hardstate-write")
	if err == nil {
		_, err = s.f.Write(fr)
	}
	if err != nil {
		return fmt.Errorf("raft hard state %s: write: %w", s.path, err)
	}
	err = s.at("hardstate-fsync")
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("raft hard state %s: fsync: %w", s.path, err)
	}
	if err := s.at("hardstate-synced"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.size += int64(len(fr))
	// recs were built by this package: a record that does not parse is a
	// bug, reported rather than written over the map.
	return s.applyRecords(fr[hsFrameHeader+8:])
}

// rewrite replaces the file with one frame holding every group's state
// after recs. Only the flusher calls it.
func (s *hardStateLog) rewrite(recs [][]byte) error {
	s.mu.Lock()
	if err := s.applyRecords(bytes.Join(recs, nil)); err != nil {
		s.mu.Unlock()
		return err
	}
	all := make([][]byte, 0, len(s.groups))
	for _, r := range s.groups {
		all = append(all, r)
	}
	seq := s.seq + 1
	s.mu.Unlock()
	fr := frame(seq, all)
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fileMode)
	if err != nil {
		return fmt.Errorf("raft hard state %s: compact: %w", s.path, err)
	}
	_, err = f.Write(fr)
	if err == nil {
		err = f.Sync()
	}
	if e := f.Close(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("raft hard state %s: compact: %w", s.path, err)
	}
	if err := s.at("hardstate-compact-written"); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("raft hard state %s: compact: %w", s.path, err)
	}
	err = s.at("hardstate-compact-renamed")
	if err == nil {
		err = clog.SyncDir(filepath.Dir(s.path))
	}
	if err != nil {
		return fmt.Errorf("raft hard state %s: compact: %w", s.path, err)
	}
	nf, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND, fileMode)
	if err != nil {
		return fmt.Errorf("raft hard state %s: compact: %w", s.path, err)
	}
	s.mu.Lock()
	old := s.f
	s.f, s.seq, s.size = nf, seq, int64(len(fr))
	s.mu.Unlock()
	if err := old.Close(); err != nil {
		s.logger.Debug("raft hard state: closing the replaced file", "err", err)
	}
	return nil
}

// remove forgets group durably (its replica was deleted).
func (s *hardStateLog) remove(group uint64) error {
	return s.commit(removedRecord(group))
}

// close waits for the flush in progress and closes the file.
func (s *hardStateLog) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.flushing {
		s.cond.Wait()
	}
	if s.closed {
		return nil
	}
	s.closed = true
	return s.f.Close()
}
