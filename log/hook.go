package log

// Points at which a test hook (Options.hook) runs. Tests use them to crash
// the process at a chosen instant (kill -9 from inside the hook) or to make
// the operation at that point fail; in production the hook is nil and each
// point costs one comparison.
const (
	// pointWrite: frames are about to be written; an error fails the write.
	pointWrite = "append.write"
	// pointWritten: frames reached the operating system, not fsynced.
	pointWritten = "append.written"
	// pointSync: the active segment is about to be fsynced; an error fails it.
	pointSync = "sync.segment"
	// pointRollCreated: mid-roll: the old segment is sealed and the new
	// one's files exist, the directory is not yet fsynced.
	pointRollCreated = "roll.created"
	// pointTruncRemoved: truncation unlinked later segments, the directory
	// is not yet fsynced.
	pointTruncRemoved = "truncate.removed"
	// pointTruncCut: truncation cut the segment file, not yet fsynced.
	pointTruncCut = "truncate.cut"
)

// at runs the test hook for point, if there is one.
func (l *Log) at(point string) error {
	if l.opts.hook == nil {
		return nil
	}
	return l.opts.hook(point)
}
