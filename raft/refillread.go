package raft

import (
	"errors"
	"sync"
	"sync/atomic"

	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	clog "github.com/chronik-dev/chronik/log"
)

// Reading refill entries off the workers. A refill (refill.go) sends a
// follower megabytes of old entries, which are no longer in the entry
// cache: read on the worker, each multi-MiB segment read would hold up
// every other group of the worker's batch, whose heartbeats then leave
// late enough for CheckQuorum to depose their leaders. So the worker
// only asks: a small pool of readers (refillReaders goroutines per host)
// reads the entries from the replica's log, which takes readers without
// r.mu (log/doc.go), and hands them back through the replica's inbox; the
// worker sends them on its next cycle, if the refill still wants them.
//
// A refill has at most one read in flight and keeps at most one
// message's worth of entries read ahead (rf.ahead), so the queue is
// bounded by the refills there are and the memory by maxRefillBytes per
// refill. The next message's entries are read while the previous one is
// on its way, so the reads overlap the follower's round trips. The reader
// also encodes the message (a copy of megabytes, which also stayed off
// the worker): its term is checked again when it is sent, and its commit
// index, taken when the read was asked, may be behind by then, which is
// harmless (a follower never lowers its commit index, and learns the
// current one from the next heartbeat).

// refillReaders is how many goroutines read refill entries per host: the
// reads are disk-bound, and more would only compete with the fsyncs.
const refillReaders = 2

// refillRead is one read: entries lo..hi-1 (at most maxRefillBytes) of a
// replica's log for the refill of follower to, asked in term.
type refillRead struct {
	r        *Replica
	log      *clog.Log
	to, term uint64
	lo, hi   uint64
	// prevTerm and commit complete the message (prev is lo-1).
	prevTerm, commit uint64
	ents             []*pb.Entry
	data             []byte // the encoded MsgApp
	err              error
}

// refillReads is the host's queue of reads and its readers; mu is a leaf.
type refillReads struct {
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []*refillRead
	closed bool
	wg     sync.WaitGroup
	// fault, when set (tests), runs on the reader before each read.
	fault atomic.Pointer[func()]
}

func (q *refillReads) start(n int) {
	q.cond = sync.NewCond(&q.mu)
	for range n {
		q.wg.Add(1)
		go q.reader()
	}
}

// stop ends the readers once the read in progress (one message's worth)
// is done; reads still queued are dropped with their refills' state,
// which ends with the workers.
func (q *refillReads) stop() {
	q.mu.Lock()
	q.closed = true
	q.queue = nil
	q.mu.Unlock()
	q.cond.Broadcast()
	q.wg.Wait()
}

// submit queues rd; it never blocks. It reports false once stopped.
func (q *refillReads) submit(rd *refillRead) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.queue = append(q.queue, rd)
	q.cond.Signal()
	return true
}

func (q *refillReads) reader() {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		for len(q.queue) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return
		}
		rd := q.queue[0]
		q.queue[0] = nil
		q.queue = q.queue[1:]
		q.mu.Unlock()
		if f := q.fault.Load(); f != nil {
			(*f)()
		}
		rd.read()
		// Back to the worker, no lock held here (r.inMu, h.qmu are leaves).
		r := rd.r
		r.enqueue(func() { r.inOps = append(r.inOps, func() { r.refillReadDone(rd) }) })
	}
}

// read runs on a reader, without r.mu.
func (rd *refillRead) read() {
	es, err := rd.log.Entries(rd.lo, rd.hi, maxRefillBytes)
	if err != nil {
		rd.err = mapLogErr(err)
		return
	}
	rd.ents = make([]*pb.Entry, len(es))
	for i := range es {
		rd.ents[i] = toRaftEntry(&es[i])
	}
	if len(rd.ents) == 0 {
		return
	}
	m := &pb.Message{Type: pb.MsgApp.Enum(), To: new(rd.to), From: new(rd.r.id), Term: new(rd.term),
		LogTerm: new(rd.prevTerm), Index: new(rd.lo - 1), Commit: new(rd.commit), Entries: rd.ents}
	if b, err := encodeMessage(m); err == nil {
		rd.data = b // else the worker encodes it
	}
}

// refillEntries returns the entries after rf.has (up to hi-1) that can be
// sent now: from the entry cache or what a reader read ahead. ok is false
// when none are at hand; a read is then asked for (unless one is in
// flight) and the refill goes on when it is done. Worker only.
//
// data is the message the reader encoded, when it still fits: the same
// entries after the same index (the follower holds what the read
// assumed). Else the caller encodes.
func (r *Replica) refillEntries(id uint64, rf *refill, hi uint64) (ents []*pb.Entry, data []byte, ok bool) {
	lo := rf.has + 1
	data, rf.aheadData = rf.aheadData, nil
	// What was read ahead, from lo on.
	for len(rf.ahead) > 0 && rf.ahead[0].GetIndex() < lo {
		rf.ahead = rf.ahead[1:]
		data = nil
	}
	if len(rf.ahead) > 0 && rf.ahead[0].GetIndex() == lo {
		ents = rf.ahead
		rf.ahead = nil
		for len(ents) > 0 && ents[len(ents)-1].GetIndex() >= hi {
			ents = ents[:len(ents)-1]
			data = nil
		}
		if len(ents) > 0 {
			return ents, data, true
		}
	}
	rf.ahead = nil
	if ents, ok := r.st.cacheGet(lo, hi, maxRefillBytes); ok {
		return ents, nil, true
	}
	r.readRefill(id, rf, lo, hi)
	return nil, nil, false
}

// readRefill asks a reader for entries lo..hi-1 of follower id's refill,
// unless a read is in flight already. Worker only.
func (r *Replica) readRefill(id uint64, rf *refill, lo, hi uint64) {
	if rf.reading != nil || lo >= hi {
		return
	}
	prevTerm, err := r.st.Term(lo - 1)
	if err != nil {
		return // compacted meanwhile: the next try sends the snapshot
	}
	bs := r.rn.BasicStatus()
	rd := &refillRead{r: r, log: r.st.log, to: id, term: bs.GetTerm(), lo: lo, hi: hi,
		prevTerm: prevTerm, commit: bs.GetCommit()}
	if r.host.reads.submit(rd) {
		rf.reading = rd
		r.host.refillReads.Add(1)
	}
}

// readAhead asks for the entries after end, which the message just sent
// covers, so they are at hand when the follower answers. Worker only.
func (r *Replica) readAhead(id uint64, rf *refill, end, match uint64) {
	hi := r.refillTarget(match) + 1
	if end+1 >= hi || rf.reading != nil {
		return
	}
	if r.st.cacheCovers(end+1, hi) {
		return // the cache serves it on the worker at no cost
	}
	r.readRefill(id, rf, end+1, hi)
}

// refillReadDone takes a reader's entries back on the worker: kept for
// the refill that asked if it is still on (same term, same log), and sent
// at once if that refill waits for them. Worker only.
func (r *Replica) refillReadDone(rd *refillRead) {
	rf := r.refills[rd.to]
	if rf == nil || rf.reading != rd {
		return // the refill ended or started anew meanwhile
	}
	rf.reading = nil
	bs := r.rn.BasicStatus()
	if bs.GetTerm() != rd.term || rd.log != r.st.log {
		return
	}
	switch {
	case rd.err == nil:
		rf.ahead, rf.aheadData = rd.ents, rd.data
	case errors.Is(rd.err, errClosedLog):
		return // the replica is closing or recovering
	case errors.Is(rd.err, etcdraft.ErrCompacted):
		// Retention moved the base meanwhile: sendRefill finds the
		// entries compacted and sends the base snapshot.
	default:
		r.noteRefillErr(rd.err)
		return
	}
	if rf.waiting {
		// Nothing in flight: the refill waited for this read.
		match, ok := r.rawMatch(rd.to)
		if !ok {
			return
		}
		r.noteRefillErr(r.sendRefill(rd.to, rf, match, bs))
	}
}
