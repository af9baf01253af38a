package log

// SizeFrom is the total bytes of the segments that hold offset or later
// ones: what retention must keep when the log start offset (DeleteRecords)
// is offset. Segments wholly below it are the ones it may delete.
func (l *Log) SizeFrom(offset int64) int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	var total int64
	for _, s := range l.segs {
		if s.empty() || s.nextOffset > offset {
			total += s.size
		}
	}
	return total
}
