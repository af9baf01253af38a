package broker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

// DeleteRecords (Kafka's log start offset) is a command in the partition's
// own Raft log, so every replica moves its start offset at the same point
// of the log. The offset is kept in the partition's snapshot (which
// retention takes before deleting segments) and re-applied from the log
// after it, so it survives restarts. Retention then frees the segments
// wholly below it; reads below it are OFFSET_OUT_OF_RANGE at once.

// partCmd is a command entry in a partition log (JSON, KindCommand).
type partCmd struct {
	Op     string `json:"op"`
	Offset int64  `json:"offset,omitempty"`
}

// applyCommand applies a committed partition command; e.BaseOffset is the
// log end when it was written, which bounds the new start offset so every
// replica computes the same value.
func (p *partition) applyCommand(e raft.Committed) error {
	var cmd partCmd
	if err := json.Unmarshal(e.Payload, &cmd); err != nil {
		return fmt.Errorf("%s: command entry %d: %w", p.name(), e.Index, err)
	}
	if cmd.Op != "delete_records" {
		return fmt.Errorf("%s: command entry %d: unknown op %q", p.name(), e.Index, cmd.Op)
	}
	off := min(cmd.Offset, e.BaseOffset)
	if off > p.logStart.Load() {
		p.logStart.Store(off)
	}
	return nil
}

// startOffset is Kafka's log start offset: the later of what retention
// left and what DeleteRecords asked for.
func (p *partition) startOffset() int64 {
	return max(p.rep.Log().StartOffset(), p.logStart.Load())
}

// retention is the partition's policy for raft (called from the replica's
// goroutine): the topic's, tightened so that segments wholly below the
// DeleteRecords offset go.
func (p *partition) retention() (int64, time.Duration) {
	c := p.b.topicConfig(p.topic)
	bytes := c.retentionBytes
	rep := p.live.Load()
	if rep == nil {
		return bytes, c.retentionAge // still opening
	}
	l := rep.Log() // not cached: a recovered replica reopens its log
	if ls := p.logStart.Load(); ls > l.StartOffset() {
		if keep := l.SizeFrom(ls); bytes < 0 || keep < bytes {
			bytes = keep
		}
	}
	return bytes, c.retentionAge
}

// The snapshot is the producer state followed by a trailer holding the log
// start offset. Older snapshots have no trailer (decodeProducerState
// ignores what follows the state, so older nodes read newer snapshots).
var snapTrailer = [4]byte{'L', 'S', 'O', '1'}

func (p *partition) encodeSnapshot() []byte {
	b := p.producers.encode()
	b = binary.BigEndian.AppendUint64(b, uint64(p.logStart.Load()))
	return append(b, snapTrailer[:]...)
}

func decodeSnapshot(data []byte) (producerState, int64, error) {
	ps, err := decodeProducerState(data)
	if err != nil {
		return nil, 0, err
	}
	// The state's encoding has a fixed length, so the trailer, when
	// present, is exactly what follows it.
	n := len(ps.encode())
	if len(data) == n+12 && [4]byte(data[n+8:]) == snapTrailer {
		return ps, int64(binary.BigEndian.Uint64(data[n:])), nil
	}
	if len(data) != n && len(data) != 0 {
		return nil, 0, errBadProducerState
	}
	return ps, 0, nil
}

// deleteRecords moves the start offset to offset (-1: the high watermark)
// and returns the new low watermark.
func (p *partition) deleteRecords(ctx context.Context, offset int64) (int64, int16) {
	st := p.status(electionWait)
	if !st.IsLeader() {
		return -1, kerr.NotLeaderForPartition.Code
	}
	hw := p.hw.Load()
	if offset == -1 {
		offset = hw
	}
	if offset < 0 || offset > hw {
		return -1, kerr.OffsetOutOfRange.Code
	}
	if offset <= p.startOffset() {
		return p.startOffset(), 0
	}
	data, err := json.Marshal(partCmd{Op: "delete_records", Offset: offset})
	if err != nil {
		return -1, kerr.UnknownServerError.Code
	}
	if _, err := p.rep.Propose(ctx, clog.KindCommand, data, true); err != nil {
		if ctx.Err() != nil {
			return -1, kerr.RequestTimedOut.Code
		}
		return -1, kerr.NotLeaderForPartition.Code
	}
	p.wake()
	return p.startOffset(), 0
}

// DeleteRecords implements kafka.Backend.
func (b *Broker) DeleteRecords(ctx context.Context, topic string, part int32, offset int64) (int64, int16) {
	p, _, code := b.lookup(topic, part)
	if p == nil {
		return -1, code
	}
	return p.deleteRecords(ctx, offset)
}
