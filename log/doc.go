// Package log is Chronik's on-disk partition log. One Log holds the Raft log
// of one replicated group, and for a Kafka partition that same log is what
// Fetch reads: each record batch is written to disk once.
//
// # Entries and offsets
//
// Every Raft entry is stored as one frame. A frame carries the entry's Raft
// index and term and, for Kafka record batches, the Kafka offsets it covers.
// Offsets are assigned by Append from the log's own order: an entry's base
// offset is the end offset of the entry before it. Two replicas whose logs
// agree up to index i (Raft's log matching property) therefore agree on every
// offset up to i, without any offset travelling over the wire. Entries that
// are not record batches (leader no-ops, configuration changes, commands)
// take no offsets.
//
// When a batch is written, its baseOffset field is set to the assigned offset
// and its partitionLeaderEpoch field to the entry's Raft term. Both fields lie
// outside the batch CRC, so the client's checksum stays valid.
//
// # Files
//
// A log lives in one directory:
//
//	00000000000000000001.log        segment: frames, first Raft index 1
//	00000000000000000001.index      sparse index for that segment
//	00000000000000000001.timeindex  sparse time index for that segment
//	epochs                          base point and term history
//	*.stale                         segment files moved aside at startup (see below)
//
// Segment files are named by the Raft index of their first frame, zero padded
// to 20 digits. A frame is
//
//	offset size field
//	0      4    length of the rest of the frame (header after this field + payload), big endian
//	4      4    CRC-32C (Castagnoli) of every byte after this field
//	8      8    Raft index
//	16     8    Raft term
//	24     8    base offset (the next offset when the frame holds no records)
//	32     4    record count (offsets taken)
//	36     8    max timestamp in milliseconds, -1 when none
//	44     1    kind: 0 no-op, 1 record batch, 2 conf change, 3 conf change v2, 4 command
//	45     n    payload (for a record batch: the Kafka v2 batch bytes)
//
// The index file holds 20-byte records (Raft index u64, base offset i64, file
// position u32), one for the first frame of the segment and then one at least
// every IndexInterval bytes. The time index holds 16-byte records (max
// timestamp so far i64, base offset i64), appended when a frame raises the
// segment's max timestamp and IndexInterval bytes have passed since the last
// one. Both are kept in memory as well; they are small (about 0.5% of data).
//
// The epochs file is text, replaced atomically (write, fsync, rename):
//
//	chronik-epochs 1
//	base <index> <term> <offset>
//	<term> <first index> <first offset>
//	...
//
// "base" is the point before the first stored entry (0 0 0 for a new log; it
// moves when retention deletes segments or a snapshot resets the log). Each
// further line starts a Raft term, which is the Kafka leader epoch; Term and
// OffsetForLeaderEpoch answer from it without touching segments.
//
// # Rolling, retention, recovery
//
// The active (last) segment rolls when it would grow past SegmentBytes or its
// first frame is older than SegmentAge. Rolling fsyncs the term history, then
// the old segment and its indexes, so a closed segment and its indexes are
// trusted at startup. Retention deletes whole closed segments from the front,
// never past the caller's limit (the applied index); it moves the base in the
// epochs file first, and Open removes segments left wholly before the base
// (by retention, or by a Reset, which writes the new base before it creates
// the new segment).
//
// At startup each segment is read from its last valid index record to its end
// (the active segment's index is not fsynced, so after a power cut that can
// be the whole segment), each frame's length, CRC, index and offset checked.
// Startup time therefore does not grow with the amount of data; damage before
// the last index record is found when that part is read (ErrCorrupt).
// What follows the last good frame of the active segment is
//
//   - cut off and logged ("truncating torn or corrupt log tail", with the
//     bytes dropped) when nothing intact follows it: a torn tail;
//   - cut off the same way when the bad bytes hold a zeroed, sector-aligned
//     512-byte run: a multi-page write torn by a power cut, whose later pages
//     reached the disk and earlier ones did not. Those frames were never
//     fsynced (an fsync writes the whole write) and are logged as dropped;
//   - otherwise damage to data that may have been fsynced and acknowledged:
//     Open refuses with a *CorruptionError (see Damage) and leaves the
//     segment as it is.
//
// Any bad frame in a sealed segment is a *CorruptionError too. Open also
// checks that each segment follows on from the one before it (next index,
// next offset). Rolls and Reset only create segments that do, so one that
// does not is left over from a truncation whose unlink a power cut lost
// (possible only with logs written before truncation fsynced the directory):
// it and the segments after it are renamed to *.stale, not loaded, and a
// warning names them. A first segment that starts after the base means
// segments are missing: a *CorruptionError.
//
// # Damage
//
// A *CorruptionError (errors.Is(err, ErrCorrupt)) names the directory, the
// segment file, the byte where the damage starts, the last intact entry and
// the first intact entry after the damage. The node must not start on such a
// log by itself: cutting the damage off would drop entries this replica may
// have acknowledged, and Raft counts every acknowledgement. What to do:
//
//  1. Stop the node and keep a copy of the partition directory.
//  2. If the partition's other replicas are healthy and in sync
//     (/partitions, in_sync_replicas), cut this replica's segment at the byte
//     from the error (truncate -s BYTE FILE) and delete the segment files
//     after it. On restart the log ends at the last intact entry and the
//     leader sends this replica the rest.
//  3. With no healthy replica (replication factor 1, or the others lost too)
//     the entries after the damage exist nowhere else: restore the directory
//     from a backup, or accept their loss with the same cut.
//
// # Durability
//
// Append writes frames to the operating system and returns; nothing is on
// stable storage until Sync returns. Sync fsyncs the term history (the epochs
// file, when it changed), then the active segment. The caller (the Raft
// replica) decides when to Sync: before acknowledging or voting, per the
// --fsync policy. Sync may be called from several goroutines: one that finds
// another's fsync in flight waits for it, so every Sync returns only once all
// that was appended before it is durable. A failed Sync leaves the log marked
// unsynced, so the next one tries again.
//
// The term history reaches the file before the frames that start a term, and
// is fsynced before them (by Sync and by a roll), so no durable frame has an
// unrecorded term. A conflict truncation unlinks the later segments and
// fsyncs the directory, then cuts the kept segment and fsyncs it, before any
// new frame is written: a crash leaves the old log or a prefix of it. A
// malformed batch fails Append before anything changes. A failed write
// leaves the log as it was before the write (after any conflict truncation
// the call made): its frames are cut from the file and forgotten, with the
// terms they began; only frames moved into a segment sealed during the call
// remain, whole.
//
// Files are created 0600 and the log directory is made 0700.
//
// # Concurrency
//
// Append, Truncate and Reset come from one goroutine at a time (the
// replica's); reads come from any goroutine. Locks: syncMu (held across a
// Sync) is taken before mu, never under it. Readers copy what they need of
// a segment (a segView) under mu's read lock and read the file without it;
// the in-memory index slices are shared with the view, not copied, because
// appends only write past a view's length and every cut caps the slice so
// the next append reallocates.
//
// Tests reach named points inside writes through an unexported test hook
// (hook.go) to crash the process there or inject an I/O error.
package log
