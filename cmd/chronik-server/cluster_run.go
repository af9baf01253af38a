package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronik-dev/chronik/internal/placement"
)

// mismatchGrace is how long a partition may look finished (no longer
// listed as moving) with replicas other than its target before the move is
// called failed: the node answering may not have applied the last change.
const mismatchGrace = 30 * time.Second

// mover submits moves (AlterPartitionReassignments), at most batch at a
// time (0: all at once, the cluster queues what it does not run yet), and
// waits for each through ListPartitionReassignments and
// Metadata. It keeps nothing the cluster does not: killed and run again,
// the command reads the moves in flight back from the cluster.
type mover struct {
	adm   *kadm.Client
	cl    *kgo.Client
	prog  *progress
	batch int
	poll  time.Duration
}

// moveRun is one partition's move as the mover follows it.
type moveRun struct {
	placement.Move
	size       int64 // the partition's bytes (its largest replica)
	submitted  bool  // by this run or, for moves found in flight, by an earlier one
	started    time.Time
	took       time.Duration
	done       bool
	err        error
	copied     int64     // bytes on the added replicas at the last check
	mismatched time.Time // when it first looked finished but elsewhere
}

func (m *moveRun) tp() tp { return tp{m.Topic, m.Partition} }

// bytes is what the move copies: the partition once per added replica.
func (m *moveRun) bytes() int64 { return m.size * int64(len(m.Added())) }

// runSummary is what a run did.
type runSummary struct {
	moved, reordered, failed int
	replicas                 int
	bytes                    int64
	took                     time.Duration
	longest                  *moveRun
}

func (s runSummary) String() string {
	out := fmt.Sprintf("%d partition(s) moved (%d replica(s) copied, %s), %d reordered for leadership, %d failed, in %s",
		s.moved, s.replicas, humanBytes(s.bytes), s.reordered, s.failed, s.took.Round(time.Millisecond))
	if s.longest != nil {
		out += fmt.Sprintf("; longest step: %s %v -> %v in %s", s.longest.tp(), s.longest.From, s.longest.To, s.longest.took.Round(time.Millisecond))
	}
	return out
}

// run carries out moves; found are moves already in flight, waited for
// and not submitted again. It returns when every move is done or failed,
// or when ctx ends (moves in flight then go on in the cluster).
func (mv *mover) run(ctx context.Context, moves []placement.Move, found []placement.Move) (runSummary, error) {
	start := time.Now()
	var runs []*moveRun
	for _, m := range found {
		runs = append(runs, &moveRun{Move: m, submitted: true, started: start})
	}
	for _, m := range moves {
		runs = append(runs, &moveRun{Move: m})
	}
	mv.sizes(ctx, runs)
	var total int64
	for _, r := range runs {
		total += r.bytes()
	}
	mv.prog.start(len(runs), total)
	tick := time.NewTicker(mv.poll)
	defer tick.Stop()
	for {
		mv.submit(ctx, runs)
		done, active, copied := 0, 0, int64(0)
		for _, r := range runs {
			switch {
			case r.done:
				done++
				copied += r.bytes()
			case r.submitted:
				active++
				copied += r.copied
			}
		}
		mv.prog.update(done, active, copied)
		if done == len(runs) {
			break
		}
		select {
		case <-ctx.Done():
			mv.prog.finish()
			return summarize(runs, start), ctx.Err()
		case <-tick.C:
		}
		mv.check(ctx, runs)
	}
	mv.prog.finish()
	return summarize(runs, start), nil
}

func summarize(runs []*moveRun, start time.Time) runSummary {
	s := runSummary{took: time.Since(start)}
	for _, r := range runs {
		switch {
		case !r.done:
		case r.err != nil:
			s.failed++
		case r.LeaderOnly():
			s.reordered++
		default:
			s.moved++
			s.replicas += len(r.Added())
			s.bytes += r.bytes()
			if s.longest == nil || r.took > s.longest.took {
				s.longest = r
			}
		}
	}
	return s
}

// sizes fills each move's partition size from DescribeLogDirs (0 when a
// broker does not say).
func (mv *mover) sizes(ctx context.Context, runs []*moveRun) {
	set := kadm.TopicsSet{}
	for _, r := range runs {
		set.Add(r.Topic, r.Partition)
	}
	if len(set) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, reqTimeout)
	defer cancel()
	// A broker that is down fails its shard; the others still answer.
	dirs, err := mv.adm.DescribeAllLogDirs(rctx, set)
	if len(dirs) == 0 {
		mv.prog.event("sizes unknown (DescribeLogDirs: %v): progress counts moves only", err)
		return
	}
	size := map[tp]int64{}
	dirs.Each(func(d kadm.DescribedLogDir) {
		d.Topics.Each(func(p kadm.DescribedLogDirPartition) {
			k := tp{p.Topic, p.Partition}
			size[k] = max(size[k], p.Size)
		})
	})
	for _, r := range runs {
		r.size = size[r.tp()]
	}
}

// submit starts moves until batch are in flight (batch 0: every move). A retriable error leaves
// the move to be tried again on the next round; any other fails it.
func (mv *mover) submit(ctx context.Context, runs []*moveRun) {
	active := 0
	for _, r := range runs {
		if r.submitted && !r.done {
			active++
		}
	}
	var req kadm.AlterPartitionAssignmentsReq
	var sent []*moveRun
	for _, r := range runs {
		if mv.batch > 0 && active >= mv.batch {
			break
		}
		if !r.submitted && !r.done {
			req.Assign(r.Topic, r.Partition, r.To)
			sent = append(sent, r)
			active++
		}
	}
	if len(sent) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, reqTimeout)
	defer cancel()
	resp, err := mv.adm.AlterPartitionAssignments(rctx, req)
	if err != nil {
		if ctx.Err() == nil {
			mv.prog.event("AlterPartitionReassignments: %v (retrying)", err)
		}
		return
	}
	now := time.Now()
	for _, r := range sent {
		res, ok := resp[r.Topic][r.Partition]
		switch {
		case !ok:
			mv.prog.event("%s: no answer to the reassignment (retrying)", r.tp())
		case res.Err == nil:
			r.submitted, r.started = true, now
			mv.prog.event("started  %s %v -> %v", r.tp(), r.From, r.To)
		case kerr.IsRetriable(res.Err):
			mv.prog.event("%s: %v (retrying)", r.tp(), res.Err)
		default:
			r.done, r.err = true, fmt.Errorf("%v %s", res.Err, res.ErrMessage)
			mv.prog.event("FAILED   %s %v -> %v: %v", r.tp(), r.From, r.To, r.err)
		}
	}
}

// check marks the moves that finished: no longer listed as moving, and
// Metadata shows the target replicas in order. It also counts the bytes
// the added replicas hold so far.
func (mv *mover) check(ctx context.Context, runs []*moveRun) {
	set := kadm.TopicsSet{}
	var active []*moveRun
	for _, r := range runs {
		if r.submitted && !r.done {
			set.Add(r.Topic, r.Partition)
			active = append(active, r)
		}
	}
	if len(active) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, reqTimeout)
	defer cancel()
	listed, err := mv.adm.ListPartitionReassignments(rctx, set)
	if err != nil {
		if ctx.Err() == nil {
			mv.prog.event("ListPartitionReassignments: %v (retrying)", err)
		}
		return
	}
	parts, err := controllerMetadata(rctx, mv.cl, controllerID(rctx, mv.cl), set.Topics())
	if err != nil {
		if ctx.Err() == nil {
			mv.prog.event("%v (retrying)", err)
		}
		return
	}
	replicas := map[tp][]int32{}
	for _, p := range parts {
		replicas[p.tp] = p.Replicas
	}
	now := time.Now()
	for _, r := range active {
		if l, ok := listed[r.Topic][r.Partition]; ok && (len(l.AddingReplicas) > 0 || len(l.RemovingReplicas) > 0) {
			r.mismatched = time.Time{}
			continue
		}
		reps := replicas[r.tp()]
		if slices.Equal(reps, r.To) {
			r.done, r.took = true, now.Sub(r.started)
			mv.prog.event("done     %s %v -> %v in %s", r.tp(), r.From, r.To, r.took.Round(time.Millisecond))
			continue
		}
		if r.mismatched.IsZero() {
			r.mismatched = now
		} else if now.Sub(r.mismatched) > mismatchGrace {
			r.done, r.err = true, fmt.Errorf("no longer moving, but its replicas are %v, not %v (cancelled or changed by someone else?)", reps, r.To)
			mv.prog.event("FAILED   %s: %v", r.tp(), r.err)
		}
	}
	mv.copied(rctx, active)
}

// copied sets, for moves that copy data, how much the added replicas
// hold: it asks only the brokers being added, each bounded by upTimeout
// (progress is worth no longer wait).
func (mv *mover) copied(ctx context.Context, active []*moveRun) {
	per := map[int32]kadm.TopicsSet{}
	for _, r := range active {
		if r.done {
			continue
		}
		for _, b := range r.Added() {
			set := per[b]
			if set == nil {
				set = kadm.TopicsSet{}
			}
			set.Add(r.Topic, r.Partition)
			per[b] = set
		}
	}
	size := map[int32]map[tp]int64{}
	for _, b := range sortedKeys(per) {
		bctx, cancel := context.WithTimeout(ctx, upTimeout)
		dirs, err := mv.adm.DescribeBrokerLogDirs(bctx, b, per[b])
		cancel()
		if err != nil {
			continue // progress stays where it was; the moves do not depend on it
		}
		size[b] = map[tp]int64{}
		dirs.EachPartition(func(p kadm.DescribedLogDirPartition) {
			size[b][tp{p.Topic, p.Partition}] += p.Size
		})
	}
	for _, r := range active {
		if r.done || len(r.Added()) == 0 {
			continue
		}
		var n int64
		for _, b := range r.Added() {
			n += min(size[b][r.tp()], r.size)
		}
		r.copied = max(n, r.copied)
	}
}

// electPreferred asks for the preferred leaders of the moved partitions.
// ELECTION_NOT_NEEDED is success.
func electPreferred(ctx context.Context, adm *kadm.Client, out io.Writer, moves []placement.Move) error {
	set := kadm.TopicsSet{}
	for _, m := range moves {
		set.Add(m.Topic, m.Partition)
	}
	if len(set) == 0 {
		return nil
	}
	if !supports(ctx, adm, 43) {
		fmt.Fprintln(out, "preferred leaders: this cluster does not serve ElectLeaders; its automatic leader balancing moves them")
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, reqTimeout)
	defer cancel()
	res, err := adm.ElectLeaders(rctx, kadm.ElectPreferredReplica, set)
	if err != nil {
		return fmt.Errorf("ElectLeaders: %w", err)
	}
	elected, already := 0, 0
	var failed []string
	for _, ps := range res {
		for _, r := range ps {
			switch {
			case r.Err == nil:
				elected++
			case errors.Is(r.Err, kerr.ElectionNotNeeded):
				already++
			default:
				failed = append(failed, fmt.Sprintf("%s-%d: %v", r.Topic, r.Partition, r.Err))
			}
		}
	}
	slices.Sort(failed)
	fmt.Fprintf(out, "preferred leaders: %d elected, %d already leading", elected, already)
	if len(failed) > 0 {
		fmt.Fprintf(out, ", %d not yet (the broker's leader balancing retries): %s", len(failed), strings.Join(failed, "; "))
	}
	fmt.Fprintln(out)
	return nil
}

// printPlan writes the moves as a table, then each broker's load before
// and after.
func printPlan(w io.Writer, pl placement.Plan) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "plan: %d partition(s) change, %d replica(s) to copy\n", len(pl.Moves), pl.ReplicaMoves())
	if len(pl.Moves) > 0 {
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tFROM\tTO\tCOPY TO")
		for _, m := range pl.Moves {
			cp := "-"
			if a := m.Added(); len(a) > 0 {
				cp = fmt.Sprint(a)
			}
			fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%s\n", m.Topic, m.Partition, m.From, m.To, cp)
		}
		tw.Flush()
	}
	fmt.Fprintln(tw, "BROKER\tREPLICAS\tPREFERRED LEADER OF")
	for _, id := range sortedKeys(pl.Before) {
		b, a := pl.Before[id], pl.After[id]
		fmt.Fprintf(tw, "%d\t%d -> %d\t%d -> %d\n", id, b.Replicas, a.Replicas, b.Leaders, a.Leaders)
	}
	tw.Flush()
	for _, warn := range pl.Warnings {
		fmt.Fprintln(w, "warning:", warn)
	}
}

func sortedKeys[V any](m map[int32]V) []int32 {
	out := make([]int32, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
