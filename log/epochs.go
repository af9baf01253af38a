package log

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// epoch is one line of the term history.
type epoch struct {
	term   uint64
	index  uint64 // first index of the term
	offset int64  // first offset of the term
}

func (l *Log) loadEpochs() error {
	b, err := os.ReadFile(l.epochsPath())
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 || lines[0] != "chronik-epochs 1" {
		return fmt.Errorf("log %s: bad epochs file", l.opts.Dir)
	}
	parse := func(line string) (epoch, error) {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "base" {
			f = f[1:]
			// base lines are "base index term offset"
			idx, e1 := strconv.ParseUint(f[0], 10, 64)
			term, e2 := strconv.ParseUint(f[1], 10, 64)
			off, e3 := strconv.ParseInt(f[2], 10, 64)
			return epoch{term: term, index: idx, offset: off}, errors.Join(e1, e2, e3)
		}
		if len(f) != 3 {
			return epoch{}, fmt.Errorf("log %s: bad epochs line %q", l.opts.Dir, line)
		}
		term, e1 := strconv.ParseUint(f[0], 10, 64)
		idx, e2 := strconv.ParseUint(f[1], 10, 64)
		off, e3 := strconv.ParseInt(f[2], 10, 64)
		return epoch{term: term, index: idx, offset: off}, errors.Join(e1, e2, e3)
	}
	if l.base, err = parse(lines[1]); err != nil {
		return err
	}
	for i, line := range lines[2:] {
		e, err := parse(line)
		if err != nil {
			if i == len(lines)-3 {
				// A torn last line from a crash mid-append: the tail scan
				// recovers that term from the frames.
				l.dirtyEp = true
				break
			}
			return err
		}
		l.epochs = append(l.epochs, e)
	}
	return nil
}

// writeEpochs replaces the epochs file atomically.
func (l *Log) writeEpochs() error {
	var sb strings.Builder
	sb.WriteString("chronik-epochs 1\n")
	fmt.Fprintf(&sb, "base %d %d %d\n", l.base.index, l.base.term, l.base.offset)
	for _, e := range l.epochs {
		fmt.Fprintf(&sb, "%d %d %d\n", e.term, e.index, e.offset)
	}
	if l.epF != nil {
		l.epF.Close()
		l.epF = nil
	}
	if err := writeFileSync(l.epochsPath(), []byte(sb.String())); err != nil {
		return err
	}
	l.dirtyEp = false
	l.epUnsynced = false
	return nil
}

// appendEpochs adds epochs noted by Append to the end of the epochs file.
// A new term is rare but happens on every leader change, so this is one
// small write rather than a rewrite with two fsyncs; Sync makes it durable,
// before the segment, so no synced frame ever has an unrecorded term.
func (l *Log) appendEpochs(from int) error {
	if l.epF == nil {
		if _, err := os.Stat(l.epochsPath()); err != nil {
			return l.writeEpochs()
		}
		f, err := os.OpenFile(l.epochsPath(), os.O_WRONLY|os.O_APPEND, filePerm)
		if err != nil {
			return err
		}
		l.epF = f
	}
	var sb strings.Builder
	for _, e := range l.epochs[from:] {
		fmt.Fprintf(&sb, "%d %d %d\n", e.term, e.index, e.offset)
	}
	if _, err := l.epF.WriteString(sb.String()); err != nil {
		return fmt.Errorf("log %s: epochs: %w", l.opts.Dir, err)
	}
	l.epUnsynced = true
	return nil
}

// trimEpochs forgets terms that start after index.
func (l *Log) trimEpochs(index uint64) error {
	for len(l.epochs) > 0 && l.epochs[len(l.epochs)-1].index > index {
		l.epochs = l.epochs[:len(l.epochs)-1]
		l.dirtyEp = true
	}
	if l.dirtyEp {
		return l.writeEpochs()
	}
	return nil
}

func (l *Log) termLocked(i uint64) (uint64, error) {
	if i == l.base.index {
		return l.base.term, nil
	}
	n := sort.Search(len(l.epochs), func(k int) bool { return l.epochs[k].index > i })
	if n == 0 {
		return l.base.term, nil
	}
	return l.epochs[n-1].term, nil
}

// EpochEndOffset answers Kafka's OffsetForLeaderEpoch: the largest epoch at
// or below the requested one and the offset where it ended (the start of the
// next epoch, or end for the latest). found is false when the requested
// epoch is older than anything the log remembers.
func (l *Log) EpochEndOffset(e uint64, end int64) (epochOut uint64, endOffset int64, found bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := sort.Search(len(l.epochs), func(k int) bool { return l.epochs[k].term > e })
	if n == 0 {
		if e >= l.base.term && l.base.index > 0 {
			// The epoch ended somewhere in compacted history.
			if len(l.epochs) > 0 {
				return l.base.term, l.epochs[0].offset, true
			}
			return l.base.term, end, true
		}
		return 0, 0, false
	}
	if n == len(l.epochs) {
		return l.epochs[n-1].term, end, true
	}
	return l.epochs[n-1].term, l.epochs[n].offset, true
}

// persistEpochs writes the terms noted from epochs[from] on to the epochs
// file (a rewrite if the file is marked dirty). It does not fsync.
func (l *Log) persistEpochs(from int) error {
	if l.dirtyEp {
		return l.writeEpochs()
	}
	if len(l.epochs) > from {
		return l.appendEpochs(from)
	}
	return nil
}

// forgetEpochsAfter drops terms that start after index from memory after a
// failed write. Their lines may be in the file already, so it is marked
// for a rewrite (by the next Append, Sync or Close).
func (l *Log) forgetEpochsAfter(index uint64) {
	for len(l.epochs) > 0 && l.epochs[len(l.epochs)-1].index > index {
		l.epochs = l.epochs[:len(l.epochs)-1]
		l.dirtyEp = true
	}
}

// syncEpochs makes the term history durable: a rewrite when it is marked
// dirty, else an fsync of lines appended since the last one. Callers hold
// l.mu.
func (l *Log) syncEpochs() error {
	if l.dirtyEp {
		return l.writeEpochs()
	}
	if l.epUnsynced && l.epF != nil {
		if err := l.epF.Sync(); err != nil {
			return fmt.Errorf("log %s: epochs fsync: %w", l.opts.Dir, err)
		}
		l.epUnsynced = false
	}
	return nil
}
