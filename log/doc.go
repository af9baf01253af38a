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
// first frame is older than SegmentAge. Rolling fsyncs the old segment and its
// indexes, so a closed segment and its indexes are trusted at startup.
// Retention deletes whole closed segments from the front, never past the
// caller's limit (the applied index).
//
// At startup only the tail is checked: the active segment is scanned from its
// last valid index record, each frame's length and CRC are verified, and the
// file is truncated at the first frame that is torn or corrupt (logged with
// the bytes dropped). Startup time therefore does not grow with the amount of
// data.
//
// # Durability
//
// Append writes frames to the operating system and returns; nothing is on
// stable storage until Sync returns. Sync fsyncs the active segment, and the
// epochs file when it changed. The caller (the Raft replica) decides when to
// Sync: before acknowledging or voting, per the --fsync policy.
package log
