package log

import (
	"time"
)

// Retention says which leading segments may be deleted.
type Retention struct {
	MaxIndex uint64        // never delete an entry after this index (the applied index)
	Bytes    int64         // keep the log at most this big; <0 means no limit
	Age      time.Duration // delete segments whose newest record is older; <=0 means no limit
	// Before deletes segments whose entries all come before this index,
	// regardless of size and age (state-machine snapshots); 0 means none.
	Before uint64
}

// Retain deletes leading sealed segments that the policy allows and moves
// the base forward. It returns the number of segments deleted.
func (l *Log) Retain(r Retention, now time.Time) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var total int64
	for _, s := range l.segs {
		total += s.size
	}
	deleted := 0
	for len(l.segs) > 1 {
		s := l.segs[0]
		if s.empty() || s.lastIndex > r.MaxIndex {
			break
		}
		byBytes := r.Bytes >= 0 && total > r.Bytes
		byAge := r.Age > 0 && s.maxTs >= 0 && now.Sub(time.UnixMilli(s.maxTs)) > r.Age
		byIndex := r.Before > 0 && s.lastIndex < r.Before
		if !byBytes && !byAge && !byIndex {
			break
		}
		term, err := l.termLocked(s.lastIndex)
		if err != nil {
			return deleted, err
		}
		l.base = epoch{term: term, index: s.lastIndex, offset: s.nextOffset}
		// Epochs that began at or before the base are remembered by the
		// base itself: Term answers base.term until the next epoch starts.
		for len(l.epochs) > 0 && l.epochs[0].index <= l.base.index {
			l.epochs = l.epochs[1:]
		}
		if err := l.writeEpochs(); err != nil {
			return deleted, err
		}
		total -= s.size
		l.segs = l.segs[1:]
		if err := l.dropSegment(s); err != nil {
			return deleted, err
		}
		deleted++
	}
	// The base moved before the unlinks (writeEpochs), so segments that
	// come back after a power cut are removed at the next Open; no
	// directory fsync is needed here.
	return deleted, nil
}
