package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	clog "github.com/chronik-dev/chronik/log"
)

// Files under a replica directory hold cluster data: owner only.
const (
	dirMode  fs.FileMode = 0o700
	fileMode fs.FileMode = 0o600
)

// ErrStateDamaged says a replica's raft-state file cannot be trusted. The
// replica refuses to start rather than forget its term and vote.
var ErrStateDamaged = errors.New("raft: raft-state file damaged")

const (
	stateFile = "raft-state"
	stateSlot = 4096
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// The state file (format in doc.go) has two slots of stateSlot bytes,
// written alternately; each holds
//
//	[u32 body length][u32 CRC-32C of body][body]
//	body: [u64 seq][u32 HardState length][HardState][ConfState]
//
// The valid slot with the higher sequence wins, so a torn write of one slot
// falls back to the state before it. The file is created whole (written
// under a temporary name, fsynced, renamed, directory fsynced), so an
// existing file with no valid slot is damage, never a crash mid-creation.

func (s *storage) statePath() string { return filepath.Join(s.dir, stateFile) }

// damaged is the error that stops a replica whose state file is bad. It
// says what is wrong and what the operator can do.
func (s *storage) damaged(why string) error {
	return fmt.Errorf("%w: %s: %s. The replica will not start: with its term and vote lost it could vote twice in one term. "+
		"To recover, stop the node and restore the directory from a backup; or, only while the group's other replicas are up and "+
		"have a leader, delete the directory %s so that this replica rejoins empty and copies the log from the leader",
		ErrStateDamaged, s.statePath(), why, s.dir)
}

// loadState reads the state file; found is false when there is none yet.
func (s *storage) loadState() (found bool, err error) {
	f, err := os.OpenFile(s.statePath(), os.O_RDWR, fileMode)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("raft state %s: %w", s.statePath(), err)
	}
	s.stateF = f
	if err := f.Chmod(fileMode); err != nil {
		return false, fmt.Errorf("raft state %s: %w", s.statePath(), err)
	}
	buf := make([]byte, 2*stateSlot)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("raft state %s: read: %w", s.statePath(), err)
	}
	if n == 0 {
		// Older versions created the file empty before its first write;
		// open() refuses it unless the log is empty too.
		return false, nil
	}
	best, seq := pickStateSlot(buf[:n])
	if best == nil {
		return false, s.damaged("no slot has a valid checksum")
	}
	s.seq = seq
	hl := int(binary.BigEndian.Uint32(best[8:]))
	if 12+hl > len(best) {
		return false, s.damaged("bad record length")
	}
	if err := proto.Unmarshal(best[12:12+hl], s.hs); err != nil {
		return false, s.damaged("hard state: " + err.Error())
	}
	if err := proto.Unmarshal(best[12+hl:], s.cs); err != nil {
		return false, s.damaged("configuration: " + err.Error())
	}
	return true, nil
}

// pickStateSlot returns the body of the valid slot with the highest
// sequence, or nil.
func pickStateSlot(buf []byte) (best []byte, seq uint64) {
	for slot := 0; slot < 2; slot++ {
		at := slot * stateSlot
		if len(buf) < at+16 {
			continue
		}
		l := int(binary.BigEndian.Uint32(buf[at:]))
		if l < 12 || l > stateSlot-8 || at+8+l > len(buf) {
			continue
		}
		body := buf[at+8 : at+8+l]
		if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(buf[at+4:]) {
			continue
		}
		if q := binary.BigEndian.Uint64(body); best == nil || q > seq {
			best, seq = body, q
		}
	}
	return best, seq
}

// saveState writes hs and cs; with sync it also fsyncs. The first write
// creates the file atomically and is always synced. With the node's
// hard-state log, a write without sync is only noted (the commit index
// goes with the next synced write or at close), and a synced one is a
// commit there.
func (s *storage) saveState(sync bool) error {
	if s.node != nil {
		if !sync {
			s.stateDirty = true
			return nil
		}
		rec, err := stateRecord(s.group, s.hs, s.cs)
		if err != nil {
			return err
		}
		if err := s.node.commit(rec); err != nil {
			return err
		}
		s.stateDirty = false
		return nil
	}
	hb, err := proto.Marshal(s.hs)
	if err != nil {
		return err
	}
	cb, err := proto.Marshal(s.cs)
	if err != nil {
		return err
	}
	body := make([]byte, 12, 12+len(hb)+len(cb))
	binary.BigEndian.PutUint64(body, s.seq+1)
	binary.BigEndian.PutUint32(body[8:], uint32(len(hb)))
	body = append(append(body, hb...), cb...)
	if len(body) > stateSlot-8 {
		return fmt.Errorf("raft state %s: %d bytes does not fit", s.dir, len(body))
	}
	rec := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint32(rec, uint32(len(body)))
	binary.BigEndian.PutUint32(rec[4:], crc32.Checksum(body, crcTable))
	rec = append(rec, body...)
	at := int64((s.seq+1)%2) * stateSlot
	if s.stateF == nil {
		if err := s.createState(rec, at); err != nil {
			return err
		}
		s.seq++
		return nil
	}
	if _, err := s.stateF.WriteAt(rec, at); err != nil {
		return fmt.Errorf("raft state %s: %w", s.dir, err)
	}
	s.seq++
	if sync {
		return s.syncState()
	}
	return nil
}

// createState writes a new state file holding rec at offset at, durably,
// and opens it.
func (s *storage) createState(rec []byte, at int64) error {
	data := make([]byte, int(at)+len(rec))
	copy(data[at:], rec)
	if err := clog.WriteFileSync(s.statePath(), data); err != nil {
		return fmt.Errorf("raft state %s: create: %w", s.dir, err)
	}
	f, err := os.OpenFile(s.statePath(), os.O_RDWR, fileMode)
	if err != nil {
		return fmt.Errorf("raft state %s: %w", s.dir, err)
	}
	s.stateF = f
	return nil
}

// syncState fsyncs the state file.
func (s *storage) syncState() error {
	if s.stateF == nil {
		return nil
	}
	if err := s.stateF.Sync(); err != nil {
		return fmt.Errorf("raft state %s: fsync: %w", s.dir, err)
	}
	return nil
}

// loadNodeState takes the replica's state from the node's hard-state log.
// A replica directory written by an older version has its own raft-state
// file instead: its state moves into the node's log (fsynced there first),
// then the old file is deleted. found is false for a new replica.
func (s *storage) loadNodeState() (found bool, err error) {
	hs, cs, found, err := s.node.get(s.group)
	if err != nil {
		return false, err
	}
	if found {
		s.hs, s.cs = hs, cs
		// A crash after the move but before the delete leaves the old file.
		return true, s.dropOldState()
	}
	found, err = s.loadState()
	if err != nil || !found {
		if err == nil {
			err = s.dropOldState() // none, or empty from an older version
		}
		return found, err
	}
	rec, err := stateRecord(s.group, s.hs, s.cs)
	if err != nil {
		return false, err
	}
	if err := s.node.commit(rec); err != nil {
		return false, err
	}
	if err := s.node.at("hardstate-migrated"); err != nil {
		return false, err
	}
	return true, s.dropOldState()
}

// dropOldState deletes a per-replica raft-state file that the node's
// hard-state log has replaced.
func (s *storage) dropOldState() error {
	if s.stateF != nil {
		if err := s.stateF.Close(); err != nil {
			return fmt.Errorf("raft state %s: %w", s.statePath(), err)
		}
		s.stateF = nil
	}
	err := os.Remove(s.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raft state %s: %w", s.statePath(), err)
	}
	return clog.SyncDir(s.dir)
}
