package raft

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	pb "go.etcd.io/raft/v3/raftpb"

	clog "github.com/chronik-dev/chronik/log"
)

// The gag. A replica that lost its disk and comes back under its old id
// has forgotten its votes and the entries it acknowledged; if it voted,
// or counted in an election, a leader lacking committed entries could be
// elected (etcd raft lets learners and even non-members vote). So a
// replica created fresh with ReplicaConfig.Joining is gagged:
//   - it never campaigns (its clock ticks as a quiet one's: leases expire,
//     no election starts), and Campaign does nothing;
//   - incoming MsgVote and MsgPreVote are dropped, never stepped: it
//     neither grants a vote nor learns a term from a candidate;
//   - MsgTimeoutNow is dropped: a transfer cannot make it leader.
//
// It still appends, fsyncs and acknowledges entries: those acks are true.
// The gag is durable: the marker file "joining" is written in the replica
// directory (fsynced, and the directory) before the replica's first
// state, and a replica whose directory holds it is gagged at every start.
// It is lifted (the marker removed, the directory fsynced) when the
// replica applies a configuration change whose context names this node at
// this host's incarnation (Config.Incarnation) and after which it is a
// voter: the leader's Reconfigure promotes a caught-up learner that way.
// Ungag lifts it on the broker's word.

const joiningFile = "joining"

func joiningPath(dir string) string { return filepath.Join(dir, joiningFile) }

// loadGag reads the gag from the replica directory; fresh and joining
// say the replica is new and joins an existing group, which writes the
// marker first.
func (r *Replica) loadGag(fresh bool) error {
	path := joiningPath(r.cfg.Dir)
	if fresh && r.cfg.Joining {
		if err := clog.WriteFileSync(path, nil); err != nil {
			return fmt.Errorf("raft: write %s: %w", path, err)
		}
		r.gagged.Store(true)
		return nil
	}
	_, err := os.Stat(path)
	switch {
	case err == nil:
		r.gagged.Store(true)
	case errors.Is(err, fs.ErrNotExist):
		r.gagged.Store(false)
	default:
		return fmt.Errorf("raft: %s: %w", path, err)
	}
	return nil
}

// Gagged reports whether this replica may not vote or lead.
func (r *Replica) Gagged() bool { return r.gagged.Load() }

// Ungag lifts this replica's gag (see ReplicaConfig.Joining) durably: the
// broker calls it when it knows better than the log, for example when
// the replica was promoted by a change that a snapshot has since covered.
// It does not wait for the worker.
func (r *Replica) Ungag() error {
	if err := r.liftGag(); err != nil {
		return err
	}
	r.enqueue(func() { r.inOps = append(r.inOps, func() {}) }) // publish it
	return nil
}

// liftGag removes the marker durably, then lets the replica vote.
func (r *Replica) liftGag() error {
	r.gagMu.Lock()
	defer r.gagMu.Unlock()
	if !r.gagged.Load() {
		return nil
	}
	path := joiningPath(r.cfg.Dir)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("raft: remove %s: %w", path, err)
	}
	if err := clog.SyncDir(r.cfg.Dir); err != nil {
		return fmt.Errorf("raft: sync %s: %w", r.cfg.Dir, err)
	}
	r.gagged.Store(false)
	r.host.logger.Info("raft replica may vote again: promoted at this node's incarnation", "partition", r.cfg.Name)
	return nil
}

// maybeLiftGag runs after a configuration change is applied: promoted
// names the nodes (and incarnations) the change's context promotes.
func (r *Replica) maybeLiftGag(cs *pb.ConfState, promoted map[uint64]uint64) error {
	if !r.gagged.Load() || !slices.Contains(cs.GetVoters(), r.id) {
		return nil
	}
	inc, ok := promoted[r.id]
	if !ok || inc != r.host.cfg.Incarnation {
		return nil
	}
	if err := r.liftGag(); err != nil {
		return err
	}
	r.tellGag() // the leader may pick it for a transfer from now on
	return nil
}

// gagDrops reports whether a gagged replica must drop m unstepped.
func gagDrops(m *pb.Message) bool {
	switch m.GetType() {
	case pb.MsgVote, pb.MsgPreVote, pb.MsgTimeoutNow:
		return true
	}
	return false
}
