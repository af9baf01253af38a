package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The grow scenario (issue 11): a 3-node cluster holding partitions x
// fill-mib at RF 3 under a steady acks=all producer grows to 5 nodes and
// is rebalanced with `chronik-server cluster rebalance` (the cluster's
// max_concurrent_moves paces the moves; -cluster-toml sets it). It
// reports how long the rebalance took, the producer's latency and the
// longest gap between acks on a partition while it ran against a
// baseline, and how many acknowledged records are missing afterwards.

const growTopic = "bench-grow"

type growResult struct {
	Partitions  int           `json:"partitions"`
	ClusterTOML string        `json:"cluster_toml"`
	FillBytes   int64         `json:"fill_bytes"`
	Fill        produceResult `json:"fill"`
	JoinS       float64       `json:"join_s"`      // nodes 4 and 5 started to both active
	RebalanceS  float64       `json:"rebalance_s"` // the rebalance command, start to exit
	ISRFullS    float64       `json:"isr_full_s"`  // its exit to every ISR full
	Moves       string        `json:"moves"`       // the command's summary line
	Phases      []phaseStats  `json:"phases"`
	P99Ratio    float64       `json:"p99_ratio"` // rebalance p99 / baseline p99
	Acked       int           `json:"acked"`
	Lost        int           `json:"lost"`
	Duplicates  int           `json:"duplicates"`
	ProduceErr  string        `json:"produce_error,omitempty"`
	Load        string        `json:"load_at_start"`
	LoadEnd     string        `json:"load_at_end"`
}

// addNode adds a node with the next id and fresh ports, not started; its
// cluster.toml is the cluster's plus the entries of every node added so
// far, its own last (the running nodes keep their file, as README's
// "Adding a node" says).
func (c *cluster) addNode(prevCfg string) (*node, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	id := len(c.nodes) + 1
	nd := &node{id: id, kafka: ports[0], raft: ports[1], admin: ports[2],
		dataDir: filepath.Join(c.dir, fmt.Sprintf("node-%d", id)),
		logPath: filepath.Join(c.dir, fmt.Sprintf("node-%d.log", id)),
		cfgPath: filepath.Join(c.dir, fmt.Sprintf("cluster-node-%d.toml", id))}
	base, err := os.ReadFile(prevCfg)
	if err != nil {
		return nil, err
	}
	entry := fmt.Sprintf("\n[[nodes]]\nid = %d\nkafka = %q\nraft = %q\nadmin = %q\n", nd.id, nd.kafka, nd.raft, nd.admin)
	if err := os.WriteFile(nd.cfgPath, append(base, entry...), 0o644); err != nil {
		return nil, err
	}
	c.nodes = append(c.nodes, nd)
	return nd, nil
}

// runGrow runs the scenario once.
func runGrow(ctx context.Context, bin string, partitions int32, rc replaceConfig, toml string) (growResult, error) {
	res := growResult{Partitions: int(partitions), ClusterTOML: toml, Load: loadAvg()}
	c, ctx, done, err := filledCluster(ctx, bin, "grow", growTopic, partitions, rc, toml, &res.Fill, &res.FillBytes)
	defer done()
	if err != nil {
		return res, err
	}
	if err := waitFullISR(ctx, c.nodes[0].admin, 2*time.Minute); err != nil {
		return res, fmt.Errorf("after the fill: %w", err)
	}

	st, err := startSteady(ctx, c.seeds(), growTopic, rc, true)
	if err != nil {
		return res, err
	}
	defer st.stop()
	if err := sleepCtx(ctx, 2*time.Second); err != nil { // warm-up, not measured
		return res, err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, rc.Baseline); err != nil {
		return res, err
	}
	tJoin := time.Now()
	cfg := c.cfgPath
	var added []*node
	for range 2 {
		nd, err := c.addNode(cfg)
		if err != nil {
			return res, err
		}
		cfg = nd.cfgPath
		added = append(added, nd)
	}
	slog.Info("grow: starting nodes 4 and 5")
	for _, nd := range added {
		if err := c.start(nd); err != nil {
			return res, err
		}
	}
	for _, nd := range added {
		if err := c.waitReady(ctx, nd); err != nil {
			return res, err
		}
	}
	if err := waitActive(ctx, c.nodes[0].admin, []int32{4, 5}, time.Minute); err != nil {
		return res, err
	}
	tReb := time.Now()
	res.JoinS = tReb.Sub(tJoin).Seconds()
	slog.Info("grow: nodes 4 and 5 active; rebalancing", "join s", f2(res.JoinS))
	out, err := rebalance(ctx, c, cfg, rc.Timeout)
	if err != nil {
		return res, err
	}
	tDone := time.Now()
	res.RebalanceS = tDone.Sub(tReb).Seconds()
	res.Moves = out
	if err := waitFullISR(ctx, c.nodes[0].admin, 2*time.Minute); err != nil {
		return res, fmt.Errorf("after the rebalance: %w", err)
	}
	res.ISRFullS = time.Since(tDone).Seconds()
	slog.Info("grow: rebalanced", "s", f2(res.RebalanceS), "moves", out)
	tAfter := time.Now()
	if err := sleepCtx(ctx, rc.After); err != nil {
		return res, err
	}
	tEnd := time.Now()
	samples, perr := st.stop()
	if perr != nil {
		res.ProduceErr = perr.Error()
	}
	res.Phases = []phaseStats{
		window("baseline", samples, t0, tJoin),
		window("nodes join", samples, tJoin, tReb),
		window("rebalance", samples, tReb, tDone),
		window("after", samples, tAfter, tEnd),
	}
	res.P99Ratio = ratio(res.Phases[2].P99ms, res.Phases[0].P99ms)
	res.LoadEnd = loadAvg()
	vctx, vcancel := context.WithTimeout(ctx, 10*time.Minute)
	defer vcancel()
	res.Acked, res.Lost, res.Duplicates, err = verifySteady(vctx, c.seeds(), growTopic, samples)
	return res, err
}

// waitActive waits until admin's /nodes lists every id in ids as active.
func waitActive(ctx context.Context, admin string, ids []int32, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var ns []struct {
			ID    int32  `json:"id"`
			State string `json:"state"`
		}
		if err := getAdmin(ctx, admin, "/nodes", &ns); err == nil {
			active := 0
			for _, n := range ns {
				for _, id := range ids {
					if n.ID == id && n.State == "active" {
						active++
					}
				}
			}
			if active == len(ids) {
				return nil
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for nodes %v to be active: %w", ids, err)
		}
	}
}

// rebalance runs `chronik-server cluster rebalance` as an operator would
// (its output goes to rebalance.log in the cluster dir) and returns its
// summary line.
func rebalance(ctx context.Context, c *cluster, cfg string, timeout time.Duration) (string, error) {
	logPath := filepath.Join(c.dir, "rebalance.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	rctx, cancel := context.WithTimeout(ctx, timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(rctx, c.bin, "cluster", "rebalance", "--cluster-config", cfg,
		"--no-progress-bar", "--poll", "200ms", "--timeout", timeout.String())
	cmd.Stdout, cmd.Stderr = logf, logf
	runErr := cmd.Run()
	b, _ := os.ReadFile(logPath)
	summary := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "rebalance complete") {
			summary = strings.TrimSpace(line)
		}
	}
	if runErr != nil {
		return summary, fmt.Errorf("cluster rebalance: %w; output tail:\n%s", runErr, tail(string(b), 3000))
	}
	return summary, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// verifySteady reads topic back from the start and counts the steady
// producer's acknowledged records that are missing (lost) or there twice.
func verifySteady(ctx context.Context, seeds []string, topic string, samples []ackSample) (acked, lost, dups int, err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.FetchMaxBytes(64*mib), kgo.FetchMaxPartitionBytes(16*mib))
	if err != nil {
		return 0, 0, 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("verify: end offsets: %w", err)
	}
	left := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
			parts[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})
	seen := map[string]int{}
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return 0, 0, 0, fmt.Errorf("verify: %d partitions not read to the end: %w", len(left), ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if len(r.Key) > 0 && r.Key[0] == 's' {
				seen[string(r.Key)]++
			}
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	for _, s := range samples {
		if s.err {
			continue
		}
		acked++
		switch seen[fmt.Sprintf("s%d", s.seq)] {
		case 0:
			lost++
		case 1:
		default:
			dups++
		}
	}
	return acked, lost, dups, nil
}

func printGrow(w io.Writer, r *growResult, rc replaceConfig) {
	fmt.Fprintf(w, "\ngrow 3 -> 5 nodes and rebalance: %d partitions x %d MiB at RF 3 (%.0f MiB per replica set), steady %d rec/s x %d B acks=all idempotent linger 0; cluster.toml extra: %q\n",
		r.Partitions, rc.FillMiB, float64(r.FillBytes)/mib, rc.Rate, rc.Size, r.ClusterTOML)
	fmt.Fprintf(w, "  fill %.1f MiB/s; load at start %s, at end %s\n", r.Fill.MiBps, r.Load, r.LoadEnd)
	fmt.Fprintf(w, "  nodes 4, 5 started to active %.2f s; rebalance %.2f s (then every ISR full %.2f s later)\n", r.JoinS, r.RebalanceS, r.ISRFullS)
	fmt.Fprintf(w, "  %s\n", r.Moves)
	fmt.Fprintf(w, "  %-16s %6s %8s %6s %8s %8s %8s %10s %10s %9s\n", "phase", "s", "records", "errors",
		"p50 ms", "p99 ms", "max ms", "part p99~", "part p99^", "max gap")
	for _, p := range r.Phases {
		fmt.Fprintf(w, "  %-16s %6.1f %8d %6d %8.2f %8.2f %8.1f %10.2f %10.2f %9.1f\n", p.Name, p.Seconds, p.Records, p.Errors,
			p.P50ms, p.P99ms, p.Maxms, p.PartP99Medianms, p.PartP99Worstms, p.MaxAckGapms)
	}
	fmt.Fprintf(w, "  rebalance / baseline p99: %.2f; acked %d, lost %d, duplicates %d\n", r.P99Ratio, r.Acked, r.Lost, r.Duplicates)
	if r.ProduceErr != "" {
		fmt.Fprintf(w, "  WARNING: the steady producer failed records; first error: %s\n", r.ProduceErr)
	}
	fmt.Fprintln(w, "  (part p99~ / ^: median / worst of the partitions' p99; max gap: longest time between two acks on one partition)")
}

// runGrowScenario runs the grow scenario -repeat times and prints each
// result (and all of them as JSON with -json).
func runGrowScenario(ctx context.Context, cfg config) int {
	toml := strings.NewReplacer(`\n`, "\n", ";", "\n").Replace(cfg.ClusterTOML)
	var all []growResult
	code := 0
	for i := 1; i <= max(1, cfg.Repeat) && ctx.Err() == nil; i++ {
		slog.Info("grow: run", "run", i, "partitions", cfg.Partitions, "fill MiB", cfg.Replace.FillMiB, "cluster.toml", toml)
		r, err := runGrow(ctx, cfg.Bin, int32(cfg.Partitions), cfg.Replace, toml)
		if err != nil {
			slog.Error("grow failed", "run", i, "err", err)
			fmt.Fprintf(os.Stdout, "run %d failed: %s\n", i, firstLine(err.Error()))
			code = 1
			continue
		}
		printGrow(os.Stdout, &r, cfg.Replace)
		if r.Lost > 0 || r.Duplicates > 0 {
			code = 1
		}
		all = append(all, r)
	}
	if ctx.Err() != nil {
		return 130
	}
	if cfg.jsonPath != "" {
		b, _ := json.MarshalIndent(struct {
			Config config       `json:"config"`
			Runs   []growResult `json:"runs"`
		}{cfg, all}, "", "  ")
		if err := os.WriteFile(cfg.jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "chronik-bench:", err)
			code = 1
		}
	}
	return code
}
