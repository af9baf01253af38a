package log

import (
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Log.
type Options struct {
	Dir string
	// SegmentBytes rolls the active segment before it grows past this size.
	SegmentBytes int64
	// SegmentAge rolls the active segment once its first frame is this old
	// (Kafka's segment.ms); 0 disables.
	SegmentAge time.Duration
	// IndexInterval is the number of bytes between sparse index records.
	IndexInterval int64
	Logger        *slog.Logger

	// hook, for tests only, runs at the points named in hook.go; an error
	// it returns fails the operation at that point.
	hook func(point string) error
}

func (o *Options) defaults() {
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 128 << 20
	}
	if o.IndexInterval <= 0 {
		o.IndexInterval = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Log is a segmented, indexed log of Raft entries. Append, Truncate and
// Reset must be called from one goroutine at a time (the replica's); Sync
// and reads may come from any goroutine.
type Log struct {
	opts Options

	mu         sync.RWMutex
	segs       []*segment // ordered by baseIndex; last is active
	base       epoch      // the point before the first entry
	epochs     []epoch    // term history after base, ascending
	dirtyEp    bool       // epochs changed in a way that needs a rewrite
	epF        *os.File   // epochs file open for appends
	epUnsynced bool       // epochs appended since the last Sync
	// unsynced is set by Append and cleared by Sync, so periodic syncs of
	// idle logs cost nothing. syncMu serializes Syncs (see Sync); it is
	// taken before mu, never under it.
	unsynced atomic.Bool
	// inherited: the active segment was opened, not created, by this
	// process and has not been fsynced since: it may hold pages an earlier
	// process wrote and never fsynced (a crash under --fsync interval).
	// Close fsyncs the active segment only when it is unsynced or
	// inherited: closing a node's hundreds of idle logs then costs no
	// fsyncs (each one a device cache flush), and a graceful stop that
	// follows leadership transfers is not held up by them.
	inherited atomic.Bool
	syncMu    sync.Mutex
	closed    bool
	frameBuf  []byte
	hdrBuf    []byte
}

// Open opens or creates the log in opts.Dir and recovers its tail.
func Open(opts Options) (*Log, error) {
	opts.defaults()
	if err := os.MkdirAll(opts.Dir, dirPerm); err != nil {
		return nil, err
	}
	// A directory made before (by this version's caller, or an older one)
	// may be open to others; the files in it are only reachable through it.
	if err := os.Chmod(opts.Dir, dirPerm); err != nil {
		return nil, err
	}
	l := &Log{opts: opts, hdrBuf: make([]byte, frameHeaderSize)}
	if err := l.loadEpochs(); err != nil {
		return nil, err
	}
	if err := l.loadSegments(); err != nil {
		l.closeFiles()
		return nil, err
	}
	l.inherited.Store(true)
	return l, nil
}

func (l *Log) epochsPath() string { return filepath.Join(l.opts.Dir, "epochs") }

func (l *Log) active() *segment { return l.segs[len(l.segs)-1] }

func (l *Log) lastIndexLocked() uint64 {
	for i := len(l.segs) - 1; i >= 0; i-- {
		if !l.segs[i].empty() {
			return l.segs[i].lastIndex
		}
	}
	return l.base.index
}

func (l *Log) nextOffsetLocked() int64 {
	for i := len(l.segs) - 1; i >= 0; i-- {
		if !l.segs[i].empty() {
			return l.segs[i].nextOffset
		}
	}
	return l.base.offset
}

func (l *Log) lastTermLocked() uint64 {
	if len(l.epochs) > 0 {
		return l.epochs[len(l.epochs)-1].term
	}
	return l.base.term
}

func (l *Log) noteTerm(term, index uint64, offset int64) {
	l.epochs = append(l.epochs, epoch{term: term, index: index, offset: offset})
}

// FirstIndex is the index of the first entry still stored.
func (l *Log) FirstIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.base.index + 1
}

// LastIndex is the index of the last entry (the base index when empty).
func (l *Log) LastIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lastIndexLocked()
}

// Base returns the index, term and end offset of the point before the first
// stored entry.
func (l *Log) Base() (index, term uint64, offset int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.base.index, l.base.term, l.base.offset
}

// StartOffset is the first Kafka offset still stored (Kafka's log start offset).
func (l *Log) StartOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.base.offset
}

// NextOffset is the offset the next record will get (Kafka's log end offset,
// committed or not).
func (l *Log) NextOffset() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.nextOffsetLocked()
}

// Term returns the term of entry i, for i in [FirstIndex()-1, LastIndex()].
func (l *Log) Term(i uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i == l.base.index {
		return l.base.term, nil
	}
	if i < l.base.index {
		return 0, ErrCompacted
	}
	if i > l.lastIndexLocked() {
		return 0, ErrUnavailable
	}
	n := sort.Search(len(l.epochs), func(k int) bool { return l.epochs[k].index > i })
	if n == 0 {
		return l.base.term, nil
	}
	return l.epochs[n-1].term, nil
}

// Size is the total bytes of all segments.
func (l *Log) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	return total
}

// Segments is the number of segment files.
func (l *Log) Segments() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.segs)
}

// Close syncs the log and closes its files. It is safe to call twice.
func (l *Log) Close() error {
	// syncMu: a Sync in its fsync has cleared unsynced already; Close
	// waits for it rather than skip its own fsync on that account.
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	// The term history first, as in Sync: no durable frame without its term.
	err := l.syncEpochs()
	if l.epF != nil {
		l.epF.Close()
		l.epF = nil
	}
	if len(l.segs) > 0 {
		s := l.active()
		if e := s.flushIndexes(); e != nil && err == nil {
			err = e
		}
		if l.unsynced.Load() || l.inherited.Load() {
			if e := s.f.Sync(); e != nil && err == nil {
				err = e
			}
		}
	}
	l.closeFiles()
	return err
}

func (l *Log) closeFiles() {
	for _, s := range l.segs {
		if s.idxF != nil {
			s.idxF.Close()
			s.timF.Close()
		}
		s.removed.Store(true)
		s.release()
	}
}

// Remove closes the log and deletes its directory.
func (l *Log) Remove() error {
	l.Close()
	return os.RemoveAll(l.opts.Dir)
}

// Dir is the directory holding the log.
func (l *Log) Dir() string { return l.opts.Dir }
