package raft

import (
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	clog "github.com/chronik-dev/chronik/log"
)

func (r *Replica) installSnapshot(snap *pb.Snapshot) error {
	md := snap.GetMetadata()
	off, smIndex, data := splitSnapData(snap.GetData())
	if err := r.st.log.Reset(md.GetIndex(), md.GetTerm(), off); err != nil {
		return err
	}
	r.st.metas = nil
	r.st.cacheClear()
	r.st.cs = proto.Clone(md.GetConfState()).(*pb.ConfState)
	r.st.hist.reset(md.GetIndex(), r.st.cs)
	if err := r.st.hist.save(); err != nil {
		return err
	}
	if smIndex == 0 {
		smIndex = md.GetIndex()
	}
	local := &pb.Snapshot{Metadata: proto.Clone(md).(*pb.SnapshotMetadata), Data: joinSnapData(off, smIndex, data)}
	if err := r.st.saveSnapshot(local); err != nil {
		return err
	}
	if err := r.cfg.SM.Restore(smIndex, data); err != nil {
		return err
	}
	if err := r.st.saveState(true); err != nil {
		return err
	}
	r.applied = md.GetIndex()
	r.appliedTerm = md.GetTerm()
	r.snapIndex = md.GetIndex()
	r.lastIndex = md.GetIndex()
	for _, p := range r.waiting {
		p.fail(&NotLeaderError{Leader: r.lead, Term: r.term, Why: "log reset by a snapshot"})
	}
	r.waiting = nil
	r.host.logger.Info("installed raft snapshot", "partition", r.cfg.Name, "index", md.GetIndex(), "term", md.GetTerm(), "log_start_offset", off)
	return nil
}

func (r *Replica) maybeSnapshot() error {
	if r.applied-r.snapIndex < r.cfg.SnapshotEntries && r.snapBytes < r.cfg.SnapshotBytes {
		return nil
	}
	return r.snapshotNow()
}

// snapshotNow writes a local snapshot at the applied index; for
// state-machine groups it then drops the log it covers.
func (r *Replica) snapshotNow() error {
	if r.applied == r.snapIndex || r.applied == 0 {
		return nil
	}
	data, err := r.cfg.SM.Snapshot()
	if err != nil {
		return err
	}
	term, err := r.st.log.Term(r.applied)
	if err != nil {
		return err
	}
	off, err := r.st.log.EndOffsetAt(r.applied)
	if err != nil {
		return err
	}
	snap := &pb.Snapshot{
		Data:     joinSnapData(off, r.applied, data),
		Metadata: &pb.SnapshotMetadata{ConfState: proto.Clone(r.st.cs).(*pb.ConfState), Index: new(r.applied), Term: new(term)},
	}
	// The log and the state file's commit must not lag the snapshot on
	// disk: a snapshot ahead of the log would not load (see fitToLog).
	if err := r.st.log.Sync(); err != nil {
		return err
	}
	r.dirty = false
	if err := r.st.saveState(true); err != nil {
		return err
	}
	if err := r.st.saveSnapshot(snap); err != nil {
		return err
	}
	r.snapIndex = r.applied
	r.snapBytes = 0
	if r.cfg.CompactToSnapshot {
		if _, err := r.st.log.Retain(clog.Retention{MaxIndex: r.applied, Bytes: -1, Before: r.applied + 1}, time.Now()); err != nil {
			return err
		}
		return r.trimConfHistory()
	}
	return nil
}

// trimConfHistory forgets the configurations the log base has passed.
func (r *Replica) trimConfHistory() error {
	base, _, _ := r.st.log.Base()
	if !r.st.hist.trim(base) {
		return nil
	}
	return r.st.hist.save()
}

// retain applies the retention policy (data partitions), snapshotting first
// so the state a lagging follower receives covers what is deleted.
func (r *Replica) retain() error {
	if r.cfg.Retention == nil || r.failed {
		return nil
	}
	bytes, age := r.cfg.Retention()
	if bytes < 0 && age <= 0 {
		return nil
	}
	if r.st.log.Segments() < 2 {
		return nil
	}
	if err := r.snapshotNow(); err != nil {
		return err
	}
	n, err := r.st.log.Retain(clog.Retention{MaxIndex: r.applied, Bytes: bytes, Age: age}, time.Now())
	if n > 0 {
		r.host.logger.Debug("retention deleted segments", "partition", r.cfg.Name, "segments", n, "log_start_offset", r.st.log.StartOffset())
	}
	if err != nil {
		return err
	}
	return r.trimConfHistory()
}
