// Command chronik-bench measures Chronik against franz-go's in-memory kfake
// broker: produce throughput and latency, consume throughput (plaintext,
// and a single node over SASL_SSL with SCRAM-SHA-512), and the time a node
// holding ~1 GiB takes to serve again after a restart.
//
//	go run ./cmd/chronik-bench [-quick] [-json out.json]
//	go run ./cmd/chronik-bench -scenario replace -partitions 30 -fill-mib 100 [-repeat 2]
//	go run ./cmd/chronik-bench -scenario grow -partitions 30 -fill-mib 20 [-cluster-toml 'max_concurrent_moves = 8']
//
// The replace scenario (replace.go) kills node 3 of 3 with -9, deletes its
// data directory and starts it again, and reports the time to full ISRs
// and the producer's latency during the catch-up against a baseline. The
// grow scenario (grow.go) adds nodes 4 and 5 to 3 under the same load and
// rebalances, reporting the time, the latency and the records lost.
//
// Progress goes to stderr, the results table to stdout. Every server
// process and temp dir it starts is removed on exit, error or Ctrl-C (a
// second Ctrl-C kills everything at once).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	tputTopic = "bench-throughput"
	latTopic  = "bench-latency"
)

// The targets, in the order each round runs them; kfake must be first (the
// others are compared with it).
const (
	nameKfake   = "kfake (in-memory)"
	nameRF1     = "chronik RF=1 interval"
	nameSASLSSL = "chronik RF=1 SASL_SSL"
	nameRF1Sync = "chronik RF=1 always"
	nameRF3     = "chronik RF=3 acks=all"
)

type config struct {
	Records      int           `json:"records"`
	Size         int           `json:"size"`
	Partitions   int           `json:"partitions"`
	Rounds       int           `json:"rounds"`
	Rate         int           `json:"latency_rate"`
	LatencyDur   time.Duration `json:"latency_duration_ns"`
	RestartBytes int64         `json:"restart_bytes"`
	SkipRestart  bool          `json:"skip_restart"`
	TransferPart int           `json:"transfer_partitions"` // 0: no transfer test
	Bin          string        `json:"bin"`
	Targets      string        `json:"targets,omitempty"`  // empty: all
	Scenario     string        `json:"scenario,omitempty"` // "": the suite above; "replace": replaceConfig
	Replace      replaceConfig `json:"replace"`
	ClusterTOML  string        `json:"cluster_toml,omitempty"` // grow: extra top-level cluster.toml keys
	Repeat       int           `json:"repeat"`
	jsonPath     string
}

func parseFlags() config {
	var c config
	var quick bool
	flag.IntVar(&c.Records, "records", 200_000, "records per throughput run")
	flag.IntVar(&c.Size, "size", 1024, "record value size in bytes")
	flag.IntVar(&c.Partitions, "partitions", 6, "partitions per topic")
	flag.IntVar(&c.Rounds, "rounds", 5, "rounds; each runs every target once, alternating, and the median is reported (0: restart test only)")
	flag.IntVar(&c.Rate, "rate", 5000, "records/s of the paced latency run")
	flag.DurationVar(&c.LatencyDur, "latency-duration", 5*time.Second, "length of the paced latency run")
	flag.Int64Var(&c.RestartBytes, "restart-bytes", 1<<30, "data held by the node in the restart test")
	flag.BoolVar(&c.SkipRestart, "skip-restart", false, "skip the restart test")
	flag.IntVar(&c.TransferPart, "transfer-partitions", 300, "partitions at RF 3 in the leadership-transfer test (each of 3 nodes stopped in turn leads about a third); 0 skips it")
	flag.BoolVar(&quick, "quick", false, "small sizes for a smoke run (explicit flags still win)")
	flag.StringVar(&c.Bin, "bin", "bin/chronik-server", "chronik-server binary")
	flag.StringVar(&c.Targets, "targets", "", "comma-separated targets to run (kfake, rf1, tls, always, rf3); empty runs all")
	flag.StringVar(&c.jsonPath, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&c.Scenario, "scenario", "", "run only this scenario instead of the suite: replace (kill -9 node 3 of 3, delete its data dir, start it again; uses -partitions), grow (3 -> 5 nodes under load, then cluster rebalance)")
	flag.StringVar(&c.ClusterTOML, "cluster-toml", "", "grow: extra top-level cluster.toml keys, e.g. 'max_concurrent_moves = -1' (newlines as \\n or ;)")
	flag.IntVar(&c.Replace.FillMiB, "fill-mib", 100, "replace: MiB per partition before the kill")
	flag.IntVar(&c.Replace.Rate, "steady-rate", 2000, "replace: records/s of the steady producer")
	flag.IntVar(&c.Replace.Size, "steady-size", 512, "replace: record size of the steady producer")
	flag.DurationVar(&c.Replace.Baseline, "baseline", 20*time.Second, "replace: steady load measured before the kill")
	flag.DurationVar(&c.Replace.Settle, "settle", 5*time.Second, "replace: time between the kill and the restart (failover, measured apart)")
	flag.DurationVar(&c.Replace.After, "after", 10*time.Second, "replace: steady load measured after the full ISR")
	flag.DurationVar(&c.Replace.Timeout, "catchup-timeout", 20*time.Minute, "replace: longest wait for the full ISR")
	serverArgs := flag.String("server-args", "", "replace: extra chronik-server flags for every node, space separated")
	flag.StringVar(&c.Replace.KeepLogs, "keep-logs", "", "replace: copy the node logs into this directory")
	flag.DurationVar(&c.Replace.MetadataAge, "metadata-min-age", 0, "replace: the steady producer's kgo.MetadataMinAge (0: franz-go's 5 s, which it waits after a leader change before looking for the new leader)")
	flag.IntVar(&c.Repeat, "repeat", 1, "replace: runs, each on a fresh cluster")
	flag.Parse()
	c.Replace.ServerArgs = strings.Fields(*serverArgs)
	if quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quickDefault := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		quickDefault("records", func() { c.Records = 20_000 })
		quickDefault("rounds", func() { c.Rounds = 1 })
		quickDefault("rate", func() { c.Rate = 2000 })
		quickDefault("latency-duration", func() { c.LatencyDur = time.Second })
		quickDefault("restart-bytes", func() { c.RestartBytes = 64 << 20 })
		quickDefault("transfer-partitions", func() { c.TransferPart = 30 })
	}
	return c
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	cfg := parseFlags()
	if cfg.Records < 1 || cfg.Size < 1 || cfg.Partitions < 1 || cfg.Rounds < 0 || cfg.Rate < 1 || cfg.LatencyDur <= 0 {
		fmt.Fprintln(os.Stderr, "chronik-bench: -records, -size, -partitions, -rate and -latency-duration must be positive, -rounds not negative")
		os.Exit(2)
	}

	// First signal: cancel, and let the deferred cleanups run. Second:
	// kill whatever is still registered and exit now.
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		slog.Warn("interrupted; cleaning up (signal again to force)", "signal", s)
		cancel()
		<-sigs
		live.runAll()
		os.Exit(130)
	}()

	code := run(ctx, cfg)
	cancel()
	live.runAll() // nothing should be left; this is the safety net
	os.Exit(code)
}

type runResult struct {
	Round   int           `json:"round"`
	Produce produceResult `json:"produce"`
	Latency latencyResult `json:"latency"`
	Consume consumeResult `json:"consume"`
	Err     string        `json:"error,omitempty"`
}

type summary struct {
	Name           string      `json:"name"`
	Runs           []runResult `json:"runs"`
	OK             int         `json:"ok_runs"`
	spec           targetSpec
	Stats          summaryStats `json:"median"`
	ProduceVsKfake float64      `json:"produce_vs_kfake"`
	ConsumeVsKfake float64      `json:"consume_vs_kfake"`
}

type summaryStats struct {
	ProduceMiBps   float64 `json:"produce_mib_per_s"`
	ProduceRecPerS float64 `json:"produce_records_per_s"`
	P50ms          float64 `json:"p50_ms"`
	P99ms          float64 `json:"p99_ms"`
	ConsumeMiBps   float64 `json:"consume_mib_per_s"`
	ConsumeRecPerS float64 `json:"consume_records_per_s"`
}

type report struct {
	Config             config          `json:"config"`
	Targets            []*summary      `json:"targets"`
	RF3OverRF1         float64         `json:"rf3_over_rf1_produce"`
	AlwaysOverInterval float64         `json:"always_over_interval_produce"`
	TLSOverPlainProd   float64         `json:"sasl_ssl_over_plaintext_produce"`
	TLSOverPlainCons   float64         `json:"sasl_ssl_over_plaintext_consume"`
	Restart            *restartResult  `json:"restart,omitempty"`
	RestartErr         string          `json:"restart_error,omitempty"`
	Transfer           *transferResult `json:"transfer,omitempty"`
	TransferErr        string          `json:"transfer_error,omitempty"`
}

func run(ctx context.Context, cfg config) int {
	if _, err := os.Stat(cfg.Bin); err != nil {
		fmt.Fprintf(os.Stderr, "chronik-bench: %v (build it with `make build`, or pass -bin)\n", err)
		return 2
	}
	if cfg.Scenario != "" {
		return runScenario(ctx, cfg)
	}
	rep := &report{Config: cfg}
	for _, spec := range []targetSpec{
		{name: nameKfake, kfake: true, key: "kfake"},
		{name: nameRF1, nodes: 1, key: "rf1"},
		{name: nameSASLSSL, nodes: 1, secure: true, key: "tls"},
		{name: nameRF1Sync, nodes: 1, args: []string{"--fsync", "always"}, key: "always"},
		{name: nameRF3, nodes: 3, key: "rf3"},
	} {
		if cfg.Targets == "" || slices.Contains(strings.Split(cfg.Targets, ","), spec.key) {
			rep.Targets = append(rep.Targets, &summary{Name: spec.name, spec: spec})
		}
	}
	if len(rep.Targets) == 0 {
		fmt.Fprintf(os.Stderr, "chronik-bench: -targets %q names none of kfake, rf1, tls, always, rf3\n", cfg.Targets)
		return 2
	}
	failed := false
	// Every round runs each target once, kfake first, so that kfake's
	// run-to-run swings are spread across the comparison.
	for round := 1; round <= cfg.Rounds && ctx.Err() == nil; round++ {
		for _, s := range rep.Targets {
			if ctx.Err() != nil {
				break
			}
			slog.Info("run", "round", round, "target", s.Name)
			r := runTarget(ctx, cfg, s.spec)
			r.Round = round
			if r.Err != "" {
				failed = true
				slog.Error("run failed", "round", round, "target", s.Name, "err", r.Err)
			} else {
				slog.Info("run done", "target", s.Name, "produce MiB/s", f1(r.Produce.MiBps),
					"p50 ms", f2(r.Latency.P50ms), "p99 ms", f2(r.Latency.P99ms), "consume MiB/s", f1(r.Consume.MiBps))
			}
			s.Runs = append(s.Runs, r)
		}
	}
	if !cfg.SkipRestart && ctx.Err() == nil {
		slog.Info("restart test", "bytes", cfg.RestartBytes)
		rr, err := runRestart(ctx, cfg.Bin, int32(cfg.Partitions), cfg.RestartBytes)
		if err != nil {
			failed = true
			rep.RestartErr = err.Error()
			slog.Error("restart test failed", "err", err)
		} else {
			rep.Restart = &rr
		}
	}
	if cfg.TransferPart > 0 && ctx.Err() == nil {
		slog.Info("leadership transfer test", "partitions", cfg.TransferPart)
		tr, err := runTransfers(ctx, cfg.Bin, int32(cfg.TransferPart))
		if err != nil {
			failed = true
			rep.TransferErr = err.Error()
			slog.Error("transfer test failed", "err", err)
		} else {
			rep.Transfer = &tr
			if tr.Failed > 0 {
				failed = true
			}
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "chronik-bench: interrupted")
		return 130
	}
	summarize(rep)
	printReport(os.Stdout, rep)
	if cfg.jsonPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(cfg.jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "chronik-bench:", err)
			failed = true
		}
	}
	if failed {
		return 1
	}
	return 0
}

// runTarget starts a fresh target and runs throughput, consume and the
// paced latency run against it. A failure is recorded, not fatal, so one
// broken target still leaves the others' numbers.
func runTarget(ctx context.Context, cfg config, spec targetSpec) (r runResult) {
	fail := func(what string, err error) runResult {
		r.Err = what + ": " + err.Error()
		return r
	}
	t0 := time.Now()
	t, err := startTarget(ctx, spec, cfg.Bin, int32(cfg.Partitions), tputTopic, latTopic)
	if err != nil {
		return fail("start", err)
	}
	defer t.close()
	slog.Info("target up, topics created", "target", spec.name, "took", time.Since(t0).Round(time.Millisecond))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(t.ctx, func() { cancel(context.Cause(t.ctx)) })
	defer stop()

	bytes := int64(cfg.Records) * int64(cfg.Size)
	// Generous bounds: they only turn a stall into an error.
	bound := 2*time.Minute + time.Duration(bytes/(256<<10))*time.Second

	pctx, pcancel := context.WithTimeout(ctx, bound)
	r.Produce, err = produceThroughput(pctx, t.seeds, tputTopic, cfg.Records, cfg.Size, t.opts...)
	pcancel()
	if err != nil {
		return fail("produce", err)
	}
	cctx, ccancel := context.WithTimeout(ctx, bound)
	r.Consume, err = consumeAll(cctx, t.seeds, tputTopic, t.opts...)
	ccancel()
	if err != nil {
		return fail("consume", err)
	}
	lctx, lcancel := context.WithTimeout(ctx, cfg.LatencyDur+2*time.Minute)
	r.Latency, err = produceLatency(lctx, t.seeds, latTopic, cfg.Rate, cfg.LatencyDur, cfg.Size, t.opts...)
	lcancel()
	if err != nil {
		return fail("latency", err)
	}
	return r
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summarize takes each metric's median over a target's successful runs.
func summarize(rep *report) {
	for _, s := range rep.Targets {
		var pm, pr, p50, p99, cm, cr []float64
		for _, r := range s.Runs {
			if r.Err != "" {
				continue
			}
			pm, pr = append(pm, r.Produce.MiBps), append(pr, r.Produce.RecPerS)
			p50, p99 = append(p50, r.Latency.P50ms), append(p99, r.Latency.P99ms)
			cm, cr = append(cm, r.Consume.MiBps), append(cr, r.Consume.RecPerS)
		}
		s.OK = len(pm)
		st := &s.Stats
		st.ProduceMiBps, st.ProduceRecPerS = median(pm), median(pr)
		st.P50ms, st.P99ms = median(p50), median(p99)
		st.ConsumeMiBps, st.ConsumeRecPerS = median(cm), median(cr)
	}
	k := rep.stats(nameKfake) // zero when -targets leaves kfake out: no ratios
	for _, s := range rep.Targets {
		s.ProduceVsKfake = ratio(s.Stats.ProduceMiBps, k.ProduceMiBps)
		s.ConsumeVsKfake = ratio(s.Stats.ConsumeMiBps, k.ConsumeMiBps)
	}
	rf1, tls := rep.stats(nameRF1), rep.stats(nameSASLSSL)
	rep.RF3OverRF1 = ratio(rep.stats(nameRF3).ProduceMiBps, rf1.ProduceMiBps)
	rep.AlwaysOverInterval = ratio(rep.stats(nameRF1Sync).ProduceMiBps, rf1.ProduceMiBps)
	rep.TLSOverPlainProd = ratio(tls.ProduceMiBps, rf1.ProduceMiBps)
	rep.TLSOverPlainCons = ratio(tls.ConsumeMiBps, rf1.ConsumeMiBps)
}

// stats returns the medians of the target called name.
func (rep *report) stats(name string) (st summaryStats) {
	for _, s := range rep.Targets {
		if s.Name == name {
			return s.Stats
		}
	}
	return st
}

func ratio(a, b float64) float64 {
	if a == 0 || b == 0 {
		return 0
	}
	return a / b
}

func f1(x float64) string { return fmt.Sprintf("%.1f", x) }
func f2(x float64) string { return fmt.Sprintf("%.2f", x) }

func printReport(w io.Writer, rep *report) {
	if rep.Config.Rounds > 0 {
		printLoad(w, rep)
	}
	switch {
	case rep.Restart != nil:
		r := rep.Restart
		fmt.Fprintf(w, "restart with %.2f GiB (%d records): graceful %.2f s, after kill -9 %.2f s\n",
			float64(r.DataBytes)/(1<<30), r.Records, r.GracefulServeS, r.CrashServeS)
		fmt.Fprintf(w, "  (process start to /ready %.2f s / %.2f s, to all partitions led %.2f s / %.2f s; SIGTERM shutdown took %.2f s)\n",
			r.GracefulReadyS, r.CrashReadyS, r.GracefulLedS, r.CrashLedS, r.GracefulStopS)
		if r.LostRecords > 0 {
			fmt.Fprintf(w, "WARNING: %d acked records missing after kill -9\n", r.LostRecords)
		}
	case rep.RestartErr != "":
		fmt.Fprintf(w, "restart test failed: %s\n", firstLine(rep.RestartErr))
	case rep.Config.SkipRestart:
		fmt.Fprintln(w, "restart: skipped")
	}
	printTransfer(w, rep)
	for _, s := range rep.Targets {
		for _, r := range s.Runs {
			if r.Err != "" {
				fmt.Fprintf(w, "error: %s round %d: %s\n", s.Name, r.Round, firstLine(r.Err))
			}
		}
	}
}

func printLoad(w io.Writer, rep *report) {
	c := rep.Config
	fmt.Fprintf(w, "\nproduce: %d x %d B records, %d partitions, acks=all, idempotent, no compression; "+
		"latency: paced %d rec/s for %v, client linger 0; median of %d round(s); MiB = 2^20 B\n\n",
		c.Records, c.Size, c.Partitions, c.Rate, c.LatencyDur, c.Rounds)
	fmt.Fprintf(w, "%-23s %11s %11s %7s %7s %11s %11s %11s %11s\n", "target", "prod MiB/s", "prod rec/s",
		"p50 ms", "p99 ms", "cons MiB/s", "cons rec/s", "prod/kfake", "cons/kfake")
	for _, s := range rep.Targets {
		if s.OK == 0 {
			fmt.Fprintf(w, "%-23s  all runs failed: %s\n", s.Name, firstLine(s.Runs[len(s.Runs)-1].Err))
			continue
		}
		st := s.Stats
		fmt.Fprintf(w, "%-23s %11.1f %11.0f %7.2f %7.2f %11.1f %11.0f %11.2f %11.2f\n", s.Name,
			st.ProduceMiBps, st.ProduceRecPerS, st.P50ms, st.P99ms, st.ConsumeMiBps, st.ConsumeRecPerS,
			s.ProduceVsKfake, s.ConsumeVsKfake)
	}
	fmt.Fprintln(w)
	for _, s := range rep.Targets {
		var runs []string
		for _, r := range s.Runs {
			if r.Err != "" {
				runs = append(runs, "error")
			} else {
				runs = append(runs, f1(r.Produce.MiBps))
			}
		}
		fmt.Fprintf(w, "%-23s produce MiB/s by round: %s\n", s.Name, strings.Join(runs, ", "))
	}
	fmt.Fprintf(w, "RF=3 / RF=1 produce throughput: %.2f\n", rep.RF3OverRF1)
	fmt.Fprintf(w, "fsync always / interval produce throughput: %.2f\n", rep.AlwaysOverInterval)
	fmt.Fprintf(w, "SASL_SSL / plaintext (RF=1 interval) produce throughput: %.2f, consume: %.2f (issue 12 target >= 0.7)\n",
		rep.TLSOverPlainProd, rep.TLSOverPlainCons)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
