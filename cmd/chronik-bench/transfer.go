package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const transferTopic = "bench-transfer"

// transferResult is the leadership-transfer measurement: a 3-node cluster
// with partitions at RF 3, each node stopped with SIGTERM in turn once the
// preferred leaders are back, so each hands off about a third of them.
// The durations are the ones each stopping node logs per partition
// ("Successfully transferred leadership for X in Y").
type transferResult struct {
	Partitions int            `json:"partitions"`
	Stops      []transferStop `json:"stops"`
	Transfers  int            `json:"transfers"`
	Failed     int            `json:"failed"`
	P50ms      float64        `json:"p50_ms"`
	P99ms      float64        `json:"p99_ms"`
	MaxMs      float64        `json:"max_ms"`
}

type transferStop struct {
	Node      int     `json:"node"`
	Led       int     `json:"led"` // partitions of the topic it led when stopped
	ExitMs    float64 `json:"exit_ms"`
	Transfers int     `json:"transfers"` // every group it handed off (offsets and metadata groups too)
	Failed    int     `json:"failed"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
}

var (
	transferOK     = regexp.MustCompile(`Successfully transferred leadership for \S+ in ([0-9.]+)(ms|s)`)
	transferFailed = regexp.MustCompile(`Leadership transfer timeout for `)
)

// runTransfers measures leadership transfers on an idle cluster.
func runTransfers(ctx context.Context, bin string, partitions int32) (transferResult, error) {
	res := transferResult{Partitions: int(partitions)}
	c, err := startCluster(ctx, bin, 3, nil, false)
	if err != nil {
		return res, err
	}
	defer c.close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := context.AfterFunc(c.ctx, func() { cancel(context.Cause(c.ctx)) })
	defer stopWatch()
	if err := createTopic(ctx, c.seeds(), transferTopic, partitions, 3); err != nil {
		return res, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.seeds()...))
	if err != nil {
		return res, err
	}
	defer cl.Close()
	var all []time.Duration
	for _, nd := range c.nodes {
		led, err := waitPreferredLeaders(ctx, cl, partitions, nd.id)
		if err != nil {
			return res, err
		}
		from, err := fileSize(nd.logPath)
		if err != nil {
			return res, err
		}
		d, err := c.stop(nd, syscall.SIGTERM)
		if err != nil {
			return res, fmt.Errorf("SIGTERM to node %d: %w", nd.id, err)
		}
		ds, failed, err := loggedTransfers(nd.logPath, from)
		if err != nil {
			return res, err
		}
		st := transferStop{Node: nd.id, Led: led, ExitMs: msOf(d), Transfers: len(ds), Failed: failed}
		st.P50ms, st.P99ms, st.MaxMs = durStats(ds)
		slog.Info("transfers: node stopped", "node", nd.id, "led", led, "exit", d.Round(time.Millisecond),
			"transfers", len(ds), "failed", failed, "p50 ms", f2(st.P50ms), "p99 ms", f2(st.P99ms), "max ms", f2(st.MaxMs))
		res.Stops = append(res.Stops, st)
		res.Failed += failed
		all = append(all, ds...)
		if err := c.start(nd); err != nil {
			return res, err
		}
		if err := c.waitReady(ctx, nd); err != nil {
			return res, err
		}
	}
	res.Transfers = len(all)
	res.P50ms, res.P99ms, res.MaxMs = durStats(all)
	return res, nil
}

// waitPreferredLeaders waits until every partition of the transfer topic
// is led by its first replica with a full ISR, and returns how many node
// id leads.
func waitPreferredLeaders(ctx context.Context, cl *kgo.Client, partitions int32, id int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	last := "no metadata yet"
	for {
		led, why := preferredLeaders(ctx, cl, partitions, int32(id))
		if why == "" {
			return led, nil
		}
		last = why
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("leaders not back on the preferred replicas: %s: %w", last, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// preferredLeaders returns how many partitions id leads, or why the
// leaders are not all preferred yet. It asks a broker every time: kadm's
// Metadata answers from the client's cache for up to 5 s, and a stale
// answer would stop a node before leadership came back to it.
func preferredLeaders(ctx context.Context, cl *kgo.Client, partitions, id int32) (int, string) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(transferTopic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(rctx, cl)
	if err != nil {
		return 0, err.Error()
	}
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || int32(len(resp.Topics[0].Partitions)) != partitions {
		return 0, fmt.Sprintf("topic not in metadata with %d partitions", partitions)
	}
	led := 0
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 || len(p.Replicas) == 0 || p.Leader != p.Replicas[0] || len(p.ISR) < len(p.Replicas) {
			return 0, fmt.Sprintf("partition %d: leader %d, replicas %v, isr %v, error %d", p.Partition, p.Leader, p.Replicas, p.ISR, p.ErrorCode)
		}
		if p.Leader == id {
			led++
		}
	}
	return led, ""
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// loggedTransfers reads the transfer lines a node logged after byte from.
func loggedTransfers(path string, from int64) (ds []time.Duration, failed int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return nil, 0, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, err
	}
	for _, m := range transferOK.FindAllSubmatch(b, -1) {
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			continue
		}
		unit := time.Millisecond
		if string(m[2]) == "s" {
			unit = time.Second
		}
		ds = append(ds, time.Duration(v*float64(unit)))
	}
	return ds, len(transferFailed.FindAll(b, -1)), nil
}

// durStats is p50, p99 and max in ms (nearest rank), zeros when empty.
func durStats(ds []time.Duration) (p50, p99, mx float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return msOf(rank(0.5)), msOf(rank(0.99)), msOf(s[len(s)-1])
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func printTransfer(w io.Writer, rep *report) {
	switch {
	case rep.Transfer != nil:
		r := rep.Transfer
		fmt.Fprintf(w, "leadership transfers (%d partitions at RF 3, idle, SIGTERM to each node in turn): p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d transfers, %d failed\n",
			r.Partitions, r.P50ms, r.P99ms, r.MaxMs, r.Transfers, r.Failed)
		for _, s := range r.Stops {
			fmt.Fprintf(w, "  node %d leading %d partitions: exit %.0f ms after SIGTERM; transfers p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d, %d failed)\n",
				s.Node, s.Led, s.ExitMs, s.P50ms, s.P99ms, s.MaxMs, s.Transfers, s.Failed)
		}
	case rep.TransferErr != "":
		fmt.Fprintf(w, "transfer test failed: %s\n", firstLine(rep.TransferErr))
	}
}
