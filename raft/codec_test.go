package raft

import (
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func u64(v uint64) *uint64 { return &v }

func TestMessageCodecRoundTrip(t *testing.T) {
	msgs := []*pb.Message{
		{Type: pb.MsgApp.Enum(), To: u64(2), From: u64(1), Term: u64(7), LogTerm: u64(6), Index: u64(41), Commit: u64(40),
			Entries: []*pb.Entry{
				{Term: u64(7), Index: u64(42), Type: pb.EntryNormal.Enum(), Data: []byte("batch")},
				{Term: u64(7), Index: u64(43), Type: pb.EntryNormal.Enum()},
				{Term: u64(7), Index: u64(44), Type: pb.EntryConfChangeV2.Enum(), Data: []byte{1, 2}},
			}},
		{Type: pb.MsgAppResp.Enum(), To: u64(1), From: u64(2), Term: u64(7), Index: u64(44), Reject: new(true), RejectHint: u64(30)},
		{Type: pb.MsgHeartbeat.Enum(), To: u64(3), From: u64(1), Term: u64(9), Commit: u64(100), Context: []byte("ctx")},
		{Type: pb.MsgVote.Enum(), To: u64(3), From: u64(2), Term: u64(10), LogTerm: u64(9), Index: u64(101), Context: []byte("CampaignTransfer")},
		{Type: pb.MsgSnap.Enum(), To: u64(2), From: u64(1), Term: u64(3),
			Snapshot: &pb.Snapshot{Data: []byte("state"), Metadata: &pb.SnapshotMetadata{Index: u64(5), Term: u64(2), ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}}}}},
	}
	for _, m := range msgs {
		b, err := encodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("%v: %v", m.GetType(), err)
		}
		// Unset optional numbers decode as zero; compare through getters.
		if got.GetType() != m.GetType() || got.GetTo() != m.GetTo() || got.GetFrom() != m.GetFrom() ||
			got.GetTerm() != m.GetTerm() || got.GetLogTerm() != m.GetLogTerm() || got.GetIndex() != m.GetIndex() ||
			got.GetCommit() != m.GetCommit() || got.GetReject() != m.GetReject() || got.GetRejectHint() != m.GetRejectHint() ||
			string(got.GetContext()) != string(m.GetContext()) || len(got.GetEntries()) != len(m.GetEntries()) ||
			!proto.Equal(got.GetSnapshot(), m.GetSnapshot()) {
			t.Fatalf("round trip of %v:\n%v\n%v", m.GetType(), m, got)
		}
		for i, e := range m.GetEntries() {
			g := got.GetEntries()[i]
			if g.GetTerm() != e.GetTerm() || g.GetIndex() != e.GetIndex() || g.GetType() != e.GetType() || string(g.GetData()) != string(e.GetData()) {
				t.Fatalf("entry %d: %v vs %v", i, e, g)
			}
		}
		for cut := 0; cut < len(b); cut++ {
			decodeMessage(b[:cut]) // must not panic
		}
	}
}
