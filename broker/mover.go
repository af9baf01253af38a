package broker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/chronik-dev/chronik/raft"
)

// The mover carries out the reassignments of the groups this node leads:
// for each, one run calls Replica.Reconfigure towards the target until
// the group's configuration is the target, then proposes reassign_done.
// Everything it needs is in the metadata (the target) and in the group's
// Raft configuration (how far the move got), so a new leader, after a
// crash or a leadership change, simply starts a run and continues. The
// broker owns the mover: its loop starts with the broker and stops at
// shutdown, and every run ends with the loop.
type mover struct {
	b    *Broker
	kick chan struct{}

	mu   sync.Mutex
	runs map[uint64]*moveRun      // group -> the run driving it here
	prog map[uint64]raft.Progress // the last Progress each run saw (/health, metrics)
	wg   sync.WaitGroup
}

type moveRun struct {
	target []int32
	cancel context.CancelFunc
}

// movePoll is how often a run asks again while learners catch up: their
// progress shows in the leader's Raft state but publishes no event.
const movePoll = 200 * time.Millisecond

func newMover(b *Broker) *mover {
	return &mover{b: b, kick: make(chan struct{}, 1), runs: map[uint64]*moveRun{}, prog: map[uint64]raft.Progress{}}
}

// wake makes the loop look at the metadata again.
func (m *mover) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// loop starts and stops runs as moves and leaderships come and go.
func (m *mover) loop(ctx context.Context) {
	defer m.b.wg.Done()
	defer m.stopAll()
	for {
		ev := m.b.leaderEvents.wait() // fired on metadata and leader changes
		m.sync(ctx)
		select {
		case <-ev:
		case <-m.kick:
		case <-ctx.Done():
			return
		}
	}
}

// sync makes the set of runs match the moves this node should drive.
func (m *mover) sync(ctx context.Context) {
	want := map[uint64][]int32{}
	if !m.b.host.Stopping() {
		for _, t := range m.b.metaSM.topics() {
			for _, pm := range t.Partitions {
				if !pm.running() {
					continue
				}
				if r := m.b.host.Replica(pm.Group); r != nil && r.Status().IsLeader() {
					want[pm.Group] = pm.Target
				}
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for g, run := range m.runs {
		if t, ok := want[g]; !ok || !slices.Equal(t, run.target) {
			run.cancel()
			delete(m.runs, g)
		}
	}
	for g := range m.prog {
		if _, ok := want[g]; !ok {
			delete(m.prog, g)
		}
	}
	for g, target := range want {
		if m.runs[g] != nil {
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		m.runs[g] = &moveRun{target: target, cancel: cancel}
		m.wg.Add(1)
		go m.run(rctx, g, target)
	}
}

func (m *mover) stopAll() {
	m.mu.Lock()
	for g, run := range m.runs {
		run.cancel()
		delete(m.runs, g)
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// run drives one group to target while this node leads it.
func (m *mover) run(ctx context.Context, g uint64, target []int32) {
	defer m.wg.Done()
	defer m.forget(g, target)
	b := m.b
	want := raft.Membership{Voters: toUint64s(target)}
	poll := time.NewTimer(movePoll)
	defer poll.Stop()
	lastErr := ""
	for ctx.Err() == nil {
		rep := b.host.Replica(g)
		if rep == nil || !rep.Status().IsLeader() {
			return
		}
		changed := rep.Changed()
		pr, err := rep.Reconfigure(ctx, want)
		var nl *raft.NotLeaderError
		switch {
		case errors.As(err, &nl):
			// Leadership went to a member of the target (the leader is
			// being removed): the new leader's mover continues.
			b.logger.Info("reassignment handed to the new leader", "partition", rep.Name(), "leader", nl.Leader)
			return
		case err != nil && ctx.Err() == nil:
			if err.Error() != lastErr {
				b.logger.Warn("reassignment step failed; retrying", "partition", rep.Name(), "target", target, "err", err)
				lastErr = err.Error()
			}
		case err == nil:
			m.note(g, pr)
			if pr.Done {
				if m.finish(ctx, rep, g, target) {
					return
				}
			} else if pr.Step != "" {
				b.logger.Debug("reassignment step", "partition", rep.Name(), "step", pr.Step, "behind", pr.Behind)
			}
		}
		poll.Reset(movePoll)
		select {
		case <-changed:
		case <-poll.C:
		case <-ctx.Done():
		}
	}
}

// finish reports a group that reached its target; the rebalancer then
// hands leadership to the target's first replica once it is in sync
// (rebalance.go). It reports whether the run is over.
func (m *mover) finish(ctx context.Context, rep *raft.Replica, g uint64, target []int32) bool {
	b := m.b
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	mr, err := b.metaPropose(pctx, metaCmd{Op: "reassign_done", Moves: []partitionMove{{Group: g, Replicas: target}}, Limit: b.moveLimit()})
	cancel()
	if err != nil {
		return false // retried on the next round
	}
	if len(mr.Codes) == 1 && mr.Codes[0] == 0 {
		b.logger.Info("reassignment complete", "partition", rep.Name(), "replicas", target)
	}
	return true
}

func (m *mover) note(g uint64, pr raft.Progress) {
	m.mu.Lock()
	m.prog[g] = pr
	m.mu.Unlock()
}

// forget drops a finished run (unless a newer one took its place).
func (m *mover) forget(g uint64, target []int32) {
	m.mu.Lock()
	if run := m.runs[g]; run != nil && slices.Equal(run.target, target) {
		run.cancel()
		delete(m.runs, g)
	}
	m.mu.Unlock()
	m.wake() // the move may need a run again (leader regained, say)
}

// progress returns the last Progress seen for group g on this node.
func (m *mover) progress(g uint64) (raft.Progress, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.prog[g]
	return p, ok
}

func toUint64s(ids []int32) []uint64 {
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = uint64(id)
	}
	return out
}
