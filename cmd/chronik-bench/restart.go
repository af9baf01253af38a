package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	restartTopic = "bench-restart"
	// Big records fill the log quickly; the broker's recovery work depends
	// on batches and bytes, and batches are ~1 MB either way.
	restartRecordSize = 16 << 10
	serveTimeout      = 3 * time.Minute
)

type restartResult struct {
	DataBytes      int64         `json:"data_bytes"` // on disk, whole data dir
	Records        int64         `json:"records"`
	Fill           produceResult `json:"fill"`
	GracefulStopS  float64       `json:"graceful_stop_s"`
	GracefulReadyS float64       `json:"graceful_ready_s"` // process start to GET /ready 200
	GracefulLedS   float64       `json:"graceful_led_s"`   // process start to every partition led, end offsets listed
	GracefulServeS float64       `json:"graceful_serve_s"` // process start to a fetch at the last offset
	CrashReadyS    float64       `json:"crash_ready_s"`
	CrashLedS      float64       `json:"crash_led_s"`
	CrashServeS    float64       `json:"crash_serve_s"`
	LostRecords    int64         `json:"lost_records"` // acked before kill -9, missing after
}

// runRestart fills a single node with about fillBytes, then times a
// graceful restart (SIGTERM) and a crash restart (SIGKILL).
func runRestart(ctx context.Context, bin string, partitions int32, fillBytes int64) (restartResult, error) {
	var res restartResult
	c, err := startCluster(ctx, bin, 1, nil, false)
	if err != nil {
		return res, err
	}
	defer c.close()
	nd := c.nodes[0]
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := context.AfterFunc(c.ctx, func() { cancel(context.Cause(c.ctx)) })
	defer stopWatch()

	if err := createTopic(ctx, c.seeds(), restartTopic, partitions, 1); err != nil {
		return res, err
	}
	n := int(max(1, fillBytes/restartRecordSize))
	slog.Info("restart: filling", "records", n, "size", restartRecordSize)
	fctx, fcancel := context.WithTimeout(ctx, 15*time.Minute)
	res.Fill, err = produceThroughput(fctx, c.seeds(), restartTopic, n, restartRecordSize,
		kgo.MaxBufferedBytes(64*mib)) // 50,000 buffered 16 KiB records would be 800 MB
	fcancel()
	if err != nil {
		return res, fmt.Errorf("fill: %w", err)
	}
	want, err := endOffsets(ctx, c.seeds(), restartTopic)
	if err != nil {
		return res, err
	}
	for _, o := range want {
		res.Records += o
	}
	res.DataBytes = dirSize(nd.dataDir)
	slog.Info("restart: filled", "records", res.Records, "MiB on disk", res.DataBytes/mib,
		"MiB/s", fmt.Sprintf("%.0f", res.Fill.MiBps))

	// Graceful: SIGTERM, then restart on the same data dir and ports.
	d, err := c.stop(nd, syscall.SIGTERM)
	if err != nil {
		return res, fmt.Errorf("graceful stop: %w", err)
	}
	res.GracefulStopS = d.Seconds()
	slog.Info("restart: stopped with SIGTERM", "took", d.Round(time.Millisecond))
	tm, lost, err := restartAndServe(ctx, c, nd, want)
	if err != nil {
		return res, fmt.Errorf("after graceful stop: %w", err)
	}
	if lost > 0 {
		return res, fmt.Errorf("after graceful stop: %d acked records missing", lost)
	}
	res.GracefulReadyS, res.GracefulLedS, res.GracefulServeS = tm.ready.Seconds(), tm.led.Seconds(), tm.serve.Seconds()
	slog.Info("restart: serving after graceful restart", "ready", tm.ready, "led", tm.led, "serve", tm.serve)

	// Crash: produce a little more, so the newest data has just been
	// acked (and likely not yet fsynced), then kill -9 and restart.
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err = produceThroughput(pctx, c.seeds(), restartTopic, 1000, restartRecordSize)
	pcancel()
	if err != nil {
		return res, fmt.Errorf("produce before kill -9: %w", err)
	}
	if want, err = endOffsets(ctx, c.seeds(), restartTopic); err != nil {
		return res, err
	}
	if _, err := c.stop(nd, syscall.SIGKILL); err != nil && !isSignaled(err) {
		return res, fmt.Errorf("kill -9: %w", err)
	}
	tm, lost, err = restartAndServe(ctx, c, nd, want)
	if err != nil {
		return res, fmt.Errorf("after kill -9: %w", err)
	}
	res.CrashReadyS, res.CrashLedS, res.CrashServeS = tm.ready.Seconds(), tm.led.Seconds(), tm.serve.Seconds()
	res.LostRecords = lost
	if lost > 0 {
		slog.Warn("restart: acked records missing after kill -9", "lost", lost)
	}
	slog.Info("restart: serving after kill -9", "ready", tm.ready, "led", tm.led, "serve", tm.serve)
	return res, nil
}

// isSignaled reports whether a process ended by a signal, as kill -9 does.
func isSignaled(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws, ok := ee.Sys().(syscall.WaitStatus)
		return ok && ws.Signaled()
	}
	return false
}

// serveTimes are measured from just before the process starts.
type serveTimes struct {
	ready time.Duration // GET /ready answers 200
	led   time.Duration // every partition has a leader and lists its end offset
	serve time.Duration // a fetch of every partition's last record works
}

// restartAndServe starts nd and times how long it takes to serve the
// topic again. lost counts acked records that are no longer there.
func restartAndServe(ctx context.Context, c *cluster, nd *node, want map[int32]int64) (tm serveTimes, lost int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, serveTimeout)
	defer cancel()
	start := time.Now()
	if err := c.start(nd); err != nil {
		return tm, 0, err
	}
	if err := c.waitReady(ctx, nd); err != nil {
		return tm, 0, err
	}
	tm.ready = time.Since(start).Round(time.Millisecond)

	// Created only now: a client that found the port closed would back off
	// and inflate the time measured.
	cl, err := kgo.NewClient(kgo.SeedBrokers(nd.kafka))
	if err != nil {
		return tm, 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var ends map[int32]int64
	var lastErr string
	for {
		ends, err = leadersAndEnds(ctx, adm, len(want))
		if err == nil {
			break
		}
		lastErr = err.Error()
		select {
		case <-ctx.Done():
			return tm, 0, fmt.Errorf("partitions not led: %v; log tail:\n%s", err, c.logTail(nd))
		case <-time.After(10 * time.Millisecond):
		}
	}
	tm.led = time.Since(start).Round(time.Millisecond)
	if d := tm.led - tm.ready; d > 500*time.Millisecond {
		slog.Warn("restart: partitions without a leader after /ready", "for", d, "last", lastErr)
	}
	at := map[int32]kgo.Offset{}
	for p, w := range want {
		e := ends[p]
		if e < w {
			lost += w - e
		}
		if e > 0 {
			at[p] = kgo.NewOffset().At(e - 1)
		}
	}
	if err := fetchOnce(ctx, nd.kafka, at); err != nil {
		return tm, 0, fmt.Errorf("%v; log tail:\n%s", err, c.logTail(nd))
	}
	tm.serve = time.Since(start).Round(time.Millisecond)
	return tm, lost, nil
}

// leadersAndEnds checks that every partition of the restart topic has a
// leader and returns the high watermarks.
func leadersAndEnds(ctx context.Context, adm *kadm.Client, partitions int) (map[int32]int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	md, err := adm.Metadata(rctx, restartTopic)
	if err != nil {
		return nil, err
	}
	td := md.Topics[restartTopic]
	if td.Err != nil || len(td.Partitions) != partitions {
		return nil, fmt.Errorf("metadata: %d partitions, err %v", len(td.Partitions), td.Err)
	}
	for _, p := range td.Partitions {
		if p.Err != nil || p.Leader < 0 {
			return nil, fmt.Errorf("partition %d: leader %d, err %v", p.Partition, p.Leader, p.Err)
		}
	}
	return listEnds(rctx, adm, restartTopic)
}

// fetchOnce fetches from each partition at the given offset until a record
// at that offset arrived from every one.
func fetchOnce(ctx context.Context, seed string, at map[int32]kgo.Offset) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seed),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{restartTopic: at}),
		kgo.WithLogger(slogKgo{}))
	if err != nil {
		return err
	}
	defer cl.Close()
	pending := map[int32]int64{}
	for p, o := range at {
		pending[p] = o.EpochOffset().Offset
	}
	for len(pending) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return fmt.Errorf("fetch at the last offsets: partitions still pending (partition: offset) %v: %w", pending, ctx.Err())
		}
		fs.EachError(func(_ string, p int32, err error) { slog.Warn("restart: fetch error", "partition", p, "err", err) })
		fs.EachRecord(func(r *kgo.Record) {
			// A reset after an out-of-range error would deliver older
			// records; only the last one proves the data is there.
			if o, ok := pending[r.Partition]; ok && r.Offset >= o {
				delete(pending, r.Partition)
			}
		})
	}
	return nil
}

// slogKgo passes franz-go's warnings and errors to slog, so that a slow
// restart measurement shows what the client ran into.
type slogKgo struct{}

func (slogKgo) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (slogKgo) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	slog.Warn("franz-go: "+msg, append([]any{"level", level.String()}, keyvals...)...)
}

// dirSize sums the sizes of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
