package log

import "time"

// SetSegmentLimits changes when the active segment rolls (Options'
// SegmentBytes and SegmentAge); the next Append uses the new limits, so a
// topic's segment.bytes and segment.ms change without reopening the log.
func (l *Log) SetSegmentLimits(bytes int64, age time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if bytes > 0 {
		l.opts.SegmentBytes = bytes
	}
	l.opts.SegmentAge = age
}
