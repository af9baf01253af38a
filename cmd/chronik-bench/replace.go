package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The replace scenario (issue 11): a 3-node cluster holding partitions x
// fill-mib at RF 3 under a steady acks=all producer; node 3 is killed
// with -9, its data directory deleted, and started again empty. It
// measures the time until every partition has a full ISR again, the bytes
// the new disk received, and the producer's latency while it catches up
// against a baseline taken just before.

const replaceTopic = "bench-replace"

// replaceConfig is the scenario's part of the flags.
type replaceConfig struct {
	FillMiB    int           `json:"fill_mib_per_partition"`
	Rate       int           `json:"steady_rate"`
	Size       int           `json:"steady_size"`
	Baseline   time.Duration `json:"baseline_ns"`
	Settle     time.Duration `json:"settle_ns"` // after kill -9, before the restart (failover)
	After      time.Duration `json:"after_ns"`  // measured after the full ISR
	Timeout    time.Duration `json:"catchup_timeout_ns"`
	ServerArgs []string      `json:"server_args"`
	KeepLogs   string        `json:"keep_logs,omitempty"` // copy the node logs here
	// MetadataAge is the steady producer's kgo.MetadataMinAge; 0 keeps
	// franz-go's 5 s, which it waits after a leader change before it looks
	// for the new leader.
	MetadataAge time.Duration `json:"metadata_min_age_ns"`
}

// ackSample is one steady record: when it was produced, how long its ack
// took, and where it went.
type ackSample struct {
	at        time.Time
	lat       time.Duration
	partition int32
	err       bool
	seq       int // the record's number ("s<seq>" is its key when keyed)
}

// phaseStats is the producer's latency over one window.
type phaseStats struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	Records int     `json:"records"`
	Errors  int     `json:"errors"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	Maxms   float64 `json:"max_ms"`
	// Per partition: the median and the worst of the partitions' p99, and
	// the longest gap between two acks on one partition.
	PartP99Medianms float64 `json:"partition_p99_median_ms"`
	PartP99Worstms  float64 `json:"partition_p99_worst_ms"`
	MaxAckGapms     float64 `json:"max_ack_gap_ms"`
	// The partition with the longest gap, and when that gap started.
	GapPartition int32     `json:"gap_partition"`
	GapFrom      time.Time `json:"gap_from"`
}

type replaceResult struct {
	Partitions   int           `json:"partitions"`
	FillBytes    int64         `json:"fill_bytes"` // produced by the fill, per replica
	Fill         produceResult `json:"fill"`
	DirBytes     int64         `json:"node3_dir_bytes_before"`
	CatchupS     float64       `json:"catchup_s"`       // restart to every partition's ISR full and no group rejoining
	ISRFullS     float64       `json:"isr_full_s"`      // restart to every partition's ISR full (first time)
	ReadyS       float64       `json:"ready_s"`         // restart to /ready
	PartFullP50S float64       `json:"part_full_p50_s"` // restart to a partition's ISR full, over partitions
	PartFullMaxS float64       `json:"part_full_max_s"`
	MovedBytes   int64         `json:"moved_bytes"` // node 3's data dir at full ISR
	MovedMiBps   float64       `json:"moved_mib_per_s"`
	Phases       []phaseStats  `json:"phases"`
	P99Ratio     float64       `json:"p99_ratio"`               // catch-up p99 / baseline p99
	PartP99Ratio float64       `json:"part_p99_ratio"`          // worst partition p99, catch-up / baseline
	ProduceErr   string        `json:"produce_error,omitempty"` // the steady producer's first error
	Load         string        `json:"load_at_start"`           // /proc/loadavg
	LoadEnd      string        `json:"load_at_end"`
}

// runReplace runs the scenario once.
func runReplace(ctx context.Context, bin string, partitions int32, rc replaceConfig) (replaceResult, error) {
	res := replaceResult{Partitions: int(partitions), Load: loadAvg()}
	c, ctx, done, err := filledCluster(ctx, bin, "replace", replaceTopic, partitions, rc, "", &res.Fill, &res.FillBytes)
	defer done()
	if err != nil {
		return res, err
	}
	n3 := c.nodes[2]
	res.DirBytes = dirSize(n3.dataDir)
	slog.Info("replace: filled", "MiB/s", f1(res.Fill.MiBps), "node 3 dir MiB", res.DirBytes/mib)
	if err := waitFullISR(ctx, c.nodes[0].admin, 2*time.Minute); err != nil {
		return res, fmt.Errorf("after the fill: %w", err)
	}

	// The steady producer runs from here to the end.
	st, err := startSteady(ctx, c.seeds(), replaceTopic, rc, false)
	if err != nil {
		return res, err
	}
	defer st.stop()
	time.Sleep(2 * time.Second) // warm-up, not measured
	t0 := time.Now()
	if err := sleepCtx(ctx, rc.Baseline); err != nil {
		return res, err
	}
	// Records sent in the last second before the kill are left out of
	// both windows: their acks may wait for the failover.
	tBase := time.Now()
	if err := sleepCtx(ctx, time.Second); err != nil {
		return res, err
	}
	tKill := time.Now()
	slog.Info("replace: kill -9 node 3")
	if _, err := c.stop(n3, syscall.SIGKILL); err != nil && !isSignaled(err) {
		return res, fmt.Errorf("kill -9: %w", err)
	}
	if err := os.RemoveAll(n3.dataDir); err != nil {
		return res, err
	}
	if err := sleepCtx(ctx, rc.Settle); err != nil {
		return res, err
	}
	tStart := time.Now()
	slog.Info("replace: starting node 3 on an empty data dir")
	if err := c.start(n3); err != nil {
		return res, err
	}
	if err := c.waitReady(ctx, n3); err != nil {
		return res, err
	}
	res.ReadyS = time.Since(tStart).Seconds()
	firstFull := map[string]time.Duration{}
	if err := waitCaughtUp(ctx, c, tStart, rc.Timeout, firstFull, &res); err != nil {
		return res, err
	}
	tFull := time.Now()
	res.MovedBytes = dirSize(n3.dataDir)
	res.MovedMiBps = float64(res.MovedBytes) / mib / res.CatchupS
	slog.Info("replace: caught up", "s", f2(res.CatchupS), "moved MiB", res.MovedBytes/mib)
	if err := sleepCtx(ctx, rc.After); err != nil {
		return res, err
	}
	tEnd := time.Now()
	samples, perr := st.stop()
	if perr != nil {
		res.ProduceErr = perr.Error()
	}
	var full []time.Duration
	for _, d := range firstFull {
		full = append(full, d)
	}
	p50, _, mx := durStats(full)
	res.PartFullP50S, res.PartFullMaxS = p50/1000, mx/1000
	res.Phases = []phaseStats{
		window("baseline", samples, t0, tBase),
		window("kill to restart", samples, tKill, tStart),
		window("catch-up", samples, tStart, tFull),
		window("after", samples, tFull, tEnd),
	}
	res.P99Ratio = ratio(res.Phases[2].P99ms, res.Phases[0].P99ms)
	res.PartP99Ratio = ratio(res.Phases[2].PartP99Worstms, res.Phases[0].PartP99Worstms)
	res.LoadEnd = loadAvg()
	return res, nil
}

// steady is the paced producer of the scenario.
type steady struct {
	cl      *kgo.Client
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples []ackSample
	err     error
	once    sync.Once
}

// startSteady starts the paced producer on topic; keyed gives each record
// a unique key ("s<n>") so that a reader can tell which acked ones are lost.
func startSteady(ctx context.Context, seeds []string, topic string, rc replaceConfig, keyed bool) (*steady, error) {
	opts := []kgo.Opt{kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.RoundRobinPartitioner())}
	if rc.MetadataAge > 0 {
		opts = append(opts, kgo.MetadataMinAge(rc.MetadataAge))
	}
	cl, err := newProducer(seeds, topic, opts...)
	if err != nil {
		return nil, err
	}
	pool := values(rc.Size)
	if err := warmUp(ctx, cl, pool[0]); err != nil {
		cl.Close()
		return nil, fmt.Errorf("warm-up produce: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &steady{cl: cl, cancel: cancel, done: make(chan struct{})}
	go s.loop(ctx, pool, rc.Rate, keyed)
	return s, nil
}

func (s *steady) loop(ctx context.Context, pool [][]byte, rate int, keyed bool) {
	defer close(s.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for sent := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for due := int(time.Since(start).Seconds() * float64(rate)); sent < due; sent++ {
			t0 := time.Now()
			wg.Add(1)
			// Background context: a record in flight at the end still
			// gets its ack (or error) recorded.
			rec := &kgo.Record{Value: pool[sent%len(pool)]}
			if keyed {
				rec.Key = []byte("s" + strconv.Itoa(sent))
			}
			seq := sent
			s.cl.Produce(context.Background(), rec, func(r *kgo.Record, err error) {
				d := time.Since(t0)
				s.mu.Lock()
				s.samples = append(s.samples, ackSample{at: t0, lat: d, partition: r.Partition, err: err != nil, seq: seq})
				if err != nil && s.err == nil {
					s.err = err
				}
				s.mu.Unlock()
				wg.Done()
			})
		}
	}
}

// stop ends the producer (waiting for the acks in flight) and returns what
// it recorded; the error is the first failed produce.
func (s *steady) stop() ([]ackSample, error) {
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.cl.Close()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.samples, fmt.Errorf("steady produce: %w", s.err)
	}
	return s.samples, nil
}

// window summarises the samples produced in [from, to).
func window(name string, samples []ackSample, from, to time.Time) phaseStats {
	ps := phaseStats{Name: name, Seconds: to.Sub(from).Seconds()}
	var all []time.Duration
	per := map[int32][]ackSample{}
	for _, s := range samples {
		if s.at.Before(from) || !s.at.Before(to) {
			continue
		}
		ps.Records++
		if s.err {
			ps.Errors++
			continue
		}
		all = append(all, s.lat)
		per[s.partition] = append(per[s.partition], s)
	}
	ps.P50ms, ps.P99ms, ps.Maxms = durStats(all)
	var p99s []float64
	for _, ss := range per {
		lats := make([]time.Duration, len(ss))
		acks := make([]time.Time, len(ss))
		for i, s := range ss {
			lats[i], acks[i] = s.lat, s.at.Add(s.lat)
		}
		_, p99, _ := durStats(lats)
		p99s = append(p99s, p99)
		slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
		for i := 1; i < len(acks); i++ {
			if g := msOf(acks[i].Sub(acks[i-1])); g > ps.MaxAckGapms {
				ps.MaxAckGapms, ps.GapPartition, ps.GapFrom = g, ss[0].partition, acks[i-1]
			}
		}
	}
	if len(p99s) > 0 {
		slices.Sort(p99s)
		ps.PartP99Medianms, ps.PartP99Worstms = median(p99s), p99s[len(p99s)-1]
	}
	return ps
}

// partitionsJSON is the part of GET /partitions this scenario reads.
type partitionsJSON []struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Replicas  []int32 `json:"replicas"`
	ISR       []int32 `json:"in_sync_replicas"`
}

type nodesJSON []struct {
	ID              int32 `json:"id"`
	RejoiningGroups int   `json:"rejoining_groups"`
}

func getAdmin(ctx context.Context, admin, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// fullISR reports which partitions (topic-partition) have every replica
// in sync and a leader, and how many do not.
func fullISR(ctx context.Context, admin string) (full map[string]bool, missing int, err error) {
	var ps partitionsJSON
	if err := getAdmin(ctx, admin, "/partitions", &ps); err != nil {
		return nil, 0, err
	}
	full = map[string]bool{}
	for _, p := range ps {
		k := fmt.Sprintf("%s-%d", p.Topic, p.Partition)
		if p.Leader > 0 && len(p.ISR) >= len(p.Replicas) {
			full[k] = true
		} else {
			missing++
		}
	}
	return full, missing, nil
}

// waitFullISR waits until every partition on admin's /partitions has a
// full ISR.
func waitFullISR(ctx context.Context, admin string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "no answer yet"
	for {
		_, missing, err := fullISR(ctx, admin)
		switch {
		case err != nil:
			last = err.Error()
		case missing == 0:
			return nil
		default:
			last = fmt.Sprintf("%d partitions without a full ISR", missing)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for full ISRs: %s: %w", last, err)
		}
	}
}

// waitCaughtUp waits until node 1 lists every partition with a full ISR
// and no node is rejoining, recording when each partition was first full.
func waitCaughtUp(ctx context.Context, c *cluster, start time.Time, timeout time.Duration, first map[string]time.Duration, res *replaceResult) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	admin := c.nodes[0].admin
	last := "no answer yet"
	for {
		full, missing, err := fullISR(ctx, admin)
		if err == nil {
			for k := range full {
				if _, ok := first[k]; !ok {
					first[k] = time.Since(start)
				}
			}
			if missing == 0 && res.ISRFullS == 0 {
				res.ISRFullS = time.Since(start).Seconds()
			}
			rejoining := 0
			var ns nodesJSON
			if err = getAdmin(ctx, admin, "/nodes", &ns); err == nil {
				for _, n := range ns {
					rejoining += n.RejoiningGroups
				}
			}
			if err == nil && missing == 0 && rejoining == 0 {
				res.CatchupS = time.Since(start).Seconds()
				return nil
			}
			last = fmt.Sprintf("%d partitions without a full ISR, %d groups rejoining", missing, rejoining)
		}
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node 3 not caught up after %v: %s", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(d):
		return nil
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return string(b[:len(b)-1])
}

func printReplace(w io.Writer, r *replaceResult, rc replaceConfig) {
	fmt.Fprintf(w, "\nreplace a node with an empty disk: 3 nodes, %d partitions x %d MiB at RF 3 (%.0f MiB per replica set), steady %d rec/s x %d B acks=all idempotent linger 0, metadata min age %v\n",
		r.Partitions, rc.FillMiB, float64(r.FillBytes)/mib, rc.Rate, rc.Size, cmp.Or(rc.MetadataAge, 5*time.Second))
	fmt.Fprintf(w, "  fill %.1f MiB/s; node 3 held %.0f MiB; load at start %s, at end %s\n",
		r.Fill.MiBps, float64(r.DirBytes)/mib, r.Load, r.LoadEnd)
	fmt.Fprintf(w, "  restart to /ready %.2f s, to every ISR full %.2f s, to caught up (full ISR, nothing rejoining) %.2f s\n",
		r.ReadyS, r.ISRFullS, r.CatchupS)
	fmt.Fprintf(w, "  per partition, restart to full ISR: p50 %.2f s, max %.2f s; moved %.0f MiB (%.1f MiB/s)\n",
		r.PartFullP50S, r.PartFullMaxS, float64(r.MovedBytes)/mib, r.MovedMiBps)
	fmt.Fprintf(w, "  %-16s %6s %8s %6s %8s %8s %8s %10s %10s %9s\n", "phase", "s", "records", "errors",
		"p50 ms", "p99 ms", "max ms", "part p99~", "part p99^", "max gap")
	for _, p := range r.Phases {
		fmt.Fprintf(w, "  %-16s %6.1f %8d %6d %8.2f %8.2f %8.1f %10.2f %10.2f %9.1f\n", p.Name, p.Seconds, p.Records, p.Errors,
			p.P50ms, p.P99ms, p.Maxms, p.PartP99Medianms, p.PartP99Worstms, p.MaxAckGapms)
	}
	verdict := "met"
	if r.P99Ratio >= 2 {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "  catch-up / baseline p99: %.2f (worst partition's p99: %.2f); issue 11 target < 2: %s\n",
		r.P99Ratio, r.PartP99Ratio, verdict)
	if r.ProduceErr != "" {
		fmt.Fprintf(w, "  WARNING: the steady producer failed records; first error: %s\n", r.ProduceErr)
	}
	for _, p := range r.Phases {
		if p.MaxAckGapms > 1000 {
			fmt.Fprintf(w, "  %s: partition %d had no ack for %.1f s from %s\n", p.Name, p.GapPartition, p.MaxAckGapms/1000, p.GapFrom.UTC().Format("15:04:05.000"))
		}
	}
	fmt.Fprintln(w, "  (part p99~ / ^: median / worst of the partitions' p99; max gap: longest time between two acks on one partition)")
}

// runScenario runs -scenario -repeat times and prints each result.
func runScenario(ctx context.Context, cfg config) int {
	if cfg.Scenario == "grow" {
		return runGrowScenario(ctx, cfg)
	}
	if cfg.Scenario != "replace" {
		fmt.Fprintf(os.Stderr, "chronik-bench: unknown -scenario %q (known: replace, grow)\n", cfg.Scenario)
		return 2
	}
	var all []replaceResult
	code := 0
	for i := 1; i <= max(1, cfg.Repeat) && ctx.Err() == nil; i++ {
		slog.Info("replace: run", "run", i, "partitions", cfg.Partitions, "fill MiB", cfg.Replace.FillMiB)
		r, err := runReplace(ctx, cfg.Bin, int32(cfg.Partitions), cfg.Replace)
		if err != nil {
			slog.Error("replace failed", "run", i, "err", err)
			fmt.Fprintf(os.Stdout, "run %d failed: %s\n", i, firstLine(err.Error()))
			code = 1
			continue
		}
		printReplace(os.Stdout, &r, cfg.Replace)
		all = append(all, r)
	}
	if ctx.Err() != nil {
		return 130
	}
	if cfg.jsonPath != "" {
		b, _ := json.MarshalIndent(struct {
			Config config          `json:"config"`
			Runs   []replaceResult `json:"runs"`
		}{cfg, all}, "", "  ")
		if err := os.WriteFile(cfg.jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "chronik-bench:", err)
			code = 1
		}
	}
	return code
}

// filledCluster starts the 3-node cluster both scenarios begin with
// (cluster.toml extras toml), creates topic at RF 3 and fills each of its
// partitions with rc.FillMiB of big records, spread evenly; the fill's
// figures go to fill and fillBytes. The returned context ends when a node
// exits unexpectedly; done, to be called in any case, stops everything.
func filledCluster(ctx context.Context, bin, scenario, topic string, partitions int32, rc replaceConfig, toml string,
	fill *produceResult, fillBytes *int64) (*cluster, context.Context, func(), error) {
	var undo []func()
	done := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	c, err := startClusterTOML(ctx, bin, 3, rc.ServerArgs, false, toml)
	if err != nil {
		return nil, ctx, done, err
	}
	undo = append(undo, c.close)
	if rc.KeepLogs != "" {
		undo = append(undo, func() { keepLogs(c, rc.KeepLogs) })
	}
	ctx, cancel := context.WithCancelCause(ctx)
	undo = append(undo, func() { cancel(nil) })
	stopWatch := context.AfterFunc(c.ctx, func() { cancel(context.Cause(c.ctx)) })
	undo = append(undo, func() { stopWatch() })
	if err := createTopic(ctx, c.seeds(), topic, partitions, 3); err != nil {
		return c, ctx, done, err
	}
	*fillBytes = int64(partitions) * int64(rc.FillMiB) * mib
	n := int(max(1, *fillBytes/restartRecordSize))
	slog.Info(scenario+": filling", "records", n, "size", restartRecordSize, "MiB", *fillBytes/mib)
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Minute)
	*fill, err = produceThroughput(fctx, c.seeds(), topic, n, restartRecordSize,
		kgo.MaxBufferedBytes(64*mib), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	fcancel()
	if err != nil {
		return c, ctx, done, fmt.Errorf("fill: %w", err)
	}
	return c, ctx, done, nil
}

// keepLogs copies the node logs to dir/<cluster dir name>/.
func keepLogs(c *cluster, dir string) {
	dst := filepath.Join(dir, filepath.Base(c.dir))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		slog.Warn("keep logs", "err", err)
		return
	}
	for _, nd := range c.nodes {
		if b, err := os.ReadFile(nd.logPath); err == nil {
			err = os.WriteFile(filepath.Join(dst, filepath.Base(nd.logPath)), b, 0o644)
			if err != nil {
				slog.Warn("keep logs", "err", err)
			}
		}
	}
	slog.Info("node logs kept", "dir", dst)
}
