package raft

import (
	"encoding/binary"
	"errors"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Raft messages cross the wire in a compact encoding of their own: the
// fields are fixed-width and entry data is copied once into the outgoing
// buffer, and on receipt entry data points into the received frame instead
// of being copied again, as protobuf decoding would. Replication moves
// every record through here, so this is a hot path. Messages this encoding
// does not cover (snapshots, storage responses) go as protobuf.
//
//	u8 codec (codecCompact or codecProto)
//	compact: u8 type, u64 to, from, term, logTerm, index, commit, vote,
//	         rejectHint, u8 reject, u32 context length, context,
//	         u32 entry count, then per entry: u64 term, index, u8 type,
//	         u32 data length, data
//	proto:   the protobuf encoding of pb.Message
const (
	codecProto   = 0
	codecCompact = 1
	compactHead  = 1 + 1 + 8*8 + 1 + 4
	entryHead    = 8 + 8 + 1 + 4
)

var errShortMessage = errors.New("raft: truncated message")

func encodeMessage(m *pb.Message) ([]byte, error) {
	if m.Snapshot != nil || len(m.Responses) > 0 {
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return append([]byte{codecProto}, b...), nil
	}
	size := compactHead + len(m.Context) + 4
	for _, e := range m.Entries {
		size += entryHead + len(e.GetData())
	}
	b := make([]byte, 0, size)
	b = append(b, codecCompact, byte(m.GetType()))
	for _, v := range []uint64{m.GetTo(), m.GetFrom(), m.GetTerm(), m.GetLogTerm(), m.GetIndex(), m.GetCommit(), m.GetVote(), m.GetRejectHint()} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	if m.GetReject() {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Context)))
	b = append(b, m.Context...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Entries)))
	for _, e := range m.Entries {
		b = binary.BigEndian.AppendUint64(b, e.GetTerm())
		b = binary.BigEndian.AppendUint64(b, e.GetIndex())
		b = append(b, byte(e.GetType()))
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.GetData())))
		b = append(b, e.GetData()...)
	}
	return b, nil
}

// decodeMessage decodes a message; entry data aliases b, which the caller
// must not reuse.
func decodeMessage(b []byte) (*pb.Message, error) {
	if len(b) == 0 {
		return nil, errShortMessage
	}
	if b[0] == codecProto {
		m := &pb.Message{}
		if err := proto.Unmarshal(b[1:], m); err != nil {
			return nil, err
		}
		return m, nil
	}
	if b[0] != codecCompact || len(b) < compactHead {
		return nil, errShortMessage
	}
	u := func(i int) *uint64 { v := binary.BigEndian.Uint64(b[2+8*i:]); return &v }
	m := &pb.Message{
		Type: pb.MessageType(b[1]).Enum(), To: u(0), From: u(1), Term: u(2), LogTerm: u(3),
		Index: u(4), Commit: u(5), Vote: u(6), RejectHint: u(7),
	}
	if b[66] == 1 {
		m.Reject = new(true)
	}
	b = b[67:]
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint32(len(b)) < n {
		return nil, errShortMessage
	}
	if n > 0 {
		m.Context = b[:n:n]
	}
	b = b[n:]
	if len(b) < 4 {
		return nil, errShortMessage
	}
	count := binary.BigEndian.Uint32(b)
	b = b[4:]
	if count > 0 {
		if uint64(count)*entryHead > uint64(len(b)) {
			return nil, errShortMessage
		}
		m.Entries = make([]*pb.Entry, count)
	}
	for i := uint32(0); i < count; i++ {
		if len(b) < entryHead {
			return nil, errShortMessage
		}
		term, index := binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])
		typ := pb.EntryType(b[16])
		l := binary.BigEndian.Uint32(b[17:])
		b = b[entryHead:]
		if uint32(len(b)) < l {
			return nil, errShortMessage
		}
		e := &pb.Entry{Term: &term, Index: &index, Type: typ.Enum()}
		if l > 0 {
			e.Data = b[:l:l]
		}
		b = b[l:]
		m.Entries[i] = e
	}
	return m, nil
}
