package raft

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// TEMPORARY instrumentation of leadership transfers (CHRONIK_XFER_TRACE=dir):
// each node appends "unixnano node group event" lines to dir/node-<id>.txt.
var xtr = newXferTrace()

type xferTrace struct {
	on     bool
	dir    string
	mu     sync.Mutex
	lines  []string
	active map[uint64]time.Time
	files  map[uint64]*os.File
}

func newXferTrace() *xferTrace {
	d := os.Getenv("CHRONIK_XFER_TRACE")
	t := &xferTrace{on: d != "", dir: d, active: map[uint64]time.Time{}, files: map[uint64]*os.File{}}
	if t.on {
		go t.flusher()
	}
	return t
}

func (t *xferTrace) flusher() {
	for {
		time.Sleep(100 * time.Millisecond)
		t.flush()
	}
}

func (t *xferTrace) flush() {
	t.mu.Lock()
	lines := t.lines
	t.lines = nil
	t.mu.Unlock()
	if len(lines) == 0 {
		return
	}
	f, err := os.OpenFile(filepath.Join(t.dir, fmt.Sprintf("pid-%d.txt", os.Getpid())), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	w := bufio.NewWriter(f)
	for _, l := range lines {
		w.WriteString(l)
		w.WriteByte('\n')
	}
	w.Flush()
	f.Close()
}

// ev records an event; key events mark the group active for 2 s.
func (t *xferTrace) ev(node, group uint64, mark bool, format string, args ...any) {
	if !t.on {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if mark && format[0] == '!' {
		// unconditional, does not mark
	} else if mark {
		t.active[group] = now
	} else if a, ok := t.active[group]; !ok || now.Sub(a) > 2*time.Second {
		return
	}
	t.lines = append(t.lines, fmt.Sprintf("%d %d %d ", now.UnixNano(), node, group)+fmt.Sprintf(format, args...))
}

func (t *xferTrace) msg(node, group uint64, what string, m *pb.Message) {
	if !t.on {
		return
	}
	ty := m.GetType()
	switch ty {
	case pb.MsgTimeoutNow, pb.MsgVote, pb.MsgVoteResp:
		t.ev(node, group, true, "%s %v %d->%d term=%d rej=%v", what, ty, m.GetFrom(), m.GetTo(), m.GetTerm(), m.GetReject())
	case pb.MsgApp, pb.MsgHeartbeat, pb.MsgAppResp, pb.MsgHeartbeatResp:
		t.ev(node, group, false, "%s %v %d->%d term=%d", what, ty, m.GetFrom(), m.GetTo(), m.GetTerm())
	}
}
