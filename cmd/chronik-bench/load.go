package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const mib = 1 << 20

// values returns a small pool of random (so incompressible) record values;
// records cycle through it, since kgo only reads a Value.
func values(size int) [][]byte {
	r := rand.New(rand.NewChaCha8([32]byte{}))
	pool := make([][]byte, 64)
	for i := range pool {
		pool[i] = make([]byte, size)
		for j := range pool[i] {
			pool[i][j] = byte(r.Uint32())
		}
	}
	return pool
}

// newProducer is franz-go with its defaults (idempotent, acks=all, 10ms
// linger, at most 50,000 buffered records), except compression: the values
// are random, so compressing them would only burn client CPU.
func newProducer(seeds []string, topic string, opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerBatchCompression(kgo.NoCompression())}
	return kgo.NewClient(append(base, opts...)...)
}

// warmUp produces one record synchronously so that connecting, metadata
// and the producer ID are not part of the measurement.
func warmUp(ctx context.Context, cl *kgo.Client, v []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, &kgo.Record{Value: v}).FirstErr()
}

type produceResult struct {
	Records  int           `json:"records"`
	Bytes    int64         `json:"bytes"`
	Duration time.Duration `json:"duration_ns"`
	MiBps    float64       `json:"mib_per_s"`
	RecPerS  float64       `json:"records_per_s"`
}

// produceThroughput produces n records as fast as the client's buffer
// allows and times the first Produce call to the last ack.
func produceThroughput(ctx context.Context, seeds []string, topic string, n, size int, opts ...kgo.Opt) (produceResult, error) {
	cl, err := newProducer(seeds, topic, opts...)
	if err != nil {
		return produceResult{}, err
	}
	defer cl.Close()
	pool := values(size)
	if err := warmUp(ctx, cl, pool[0]); err != nil {
		return produceResult{}, fmt.Errorf("warm-up produce: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var failed atomic.Bool
	cb := func(_ *kgo.Record, err error) {
		if err != nil && failed.CompareAndSwap(false, true) {
			cancel(fmt.Errorf("produce: %w", err)) // stop producing on the first failure
		}
		wg.Done()
	}
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Value: pool[i%len(pool)]}, cb) // blocks while the buffer is full
	}
	if err := waitGroup(ctx, &wg); err != nil {
		return produceResult{}, err
	}
	d := time.Since(start)
	if failed.Load() {
		return produceResult{}, context.Cause(ctx)
	}
	b := int64(n) * int64(size)
	return produceResult{Records: n, Bytes: b, Duration: d,
		MiBps: float64(b) / mib / d.Seconds(), RecPerS: float64(n) / d.Seconds()}, nil
}

// waitGroup waits for wg or until ctx ends.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

type latencyResult struct {
	Records    int     `json:"records"`
	TargetRate int     `json:"target_rate"`
	ActualRate float64 `json:"actual_rate"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	Maxms      float64 `json:"max_ms"`
}

// produceLatency produces at a fixed rate, well below saturation, and
// measures each record's Produce-call-to-ack time, so that the percentiles
// show the broker's path rather than queueing in the client.
//
// The client lingers 0 ms (franz-go's default is 10 ms): each record is
// sent at once, so the figures are the broker's replication and ack path
// rather than the client's batching delay.
func produceLatency(ctx context.Context, seeds []string, topic string, rate int, dur time.Duration, size int, opts ...kgo.Opt) (latencyResult, error) {
	cl, err := newProducer(seeds, topic, append([]kgo.Opt{kgo.ProducerLinger(0)}, opts...)...)
	if err != nil {
		return latencyResult{}, err
	}
	defer cl.Close()
	pool := values(size)
	if err := warmUp(ctx, cl, pool[0]); err != nil {
		return latencyResult{}, fmt.Errorf("warm-up produce: %w", err)
	}
	n := max(1, int(float64(rate)*dur.Seconds()))
	lats := make([]time.Duration, n) // each callback writes only its own slot
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for sent := 0; sent < n; {
		select {
		case <-ctx.Done():
			return latencyResult{}, context.Cause(ctx)
		case <-tick.C:
		}
		due := min(n, int(time.Since(start).Seconds()*float64(rate)))
		for ; sent < due; sent++ {
			i, t0 := sent, time.Now()
			wg.Add(1)
			cl.Produce(ctx, &kgo.Record{Value: pool[i%len(pool)]}, func(_ *kgo.Record, err error) {
				lats[i] = time.Since(t0)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
				wg.Done()
			})
		}
	}
	sendTime := time.Since(start)
	if err := waitGroup(ctx, &wg); err != nil {
		return latencyResult{}, err
	}
	if e := firstErr.Load(); e != nil {
		return latencyResult{}, fmt.Errorf("produce: %w", *e)
	}
	slices.Sort(lats)
	pct := func(p float64) float64 {
		return float64(lats[min(n-1, int(p*float64(n)))]) / float64(time.Millisecond)
	}
	return latencyResult{Records: n, TargetRate: rate, ActualRate: float64(n) / sendTime.Seconds(),
		P50ms: pct(0.50), P99ms: pct(0.99), Maxms: pct(1)}, nil
}

type consumeResult struct {
	Records  int64         `json:"records"`
	Bytes    int64         `json:"bytes"`
	Duration time.Duration `json:"duration_ns"`
	MiBps    float64       `json:"mib_per_s"`
	RecPerS  float64       `json:"records_per_s"`
}

// endOffsets lists every partition's high watermark.
func endOffsets(ctx context.Context, seeds []string, topic string, opts ...kgo.Opt) (map[int32]int64, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return listEnds(ctx, kadm.NewClient(cl), topic)
}

// listEnds lists the high watermark of each of topic's partitions.
func listEnds(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	lo, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	if err := lo.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// consumeAll reads the topic from the start, assigning partitions directly
// (no group), until it has every record below the current high watermarks.
func consumeAll(ctx context.Context, seeds []string, topic string, opts ...kgo.Opt) (consumeResult, error) {
	ends, err := endOffsets(ctx, seeds, topic, opts...)
	if err != nil {
		return consumeResult{}, fmt.Errorf("list end offsets: %w", err)
	}
	var want int64
	parts := map[int32]kgo.Offset{}
	for p, o := range ends {
		want += o
		parts[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts})}, opts...)...)
	if err != nil {
		return consumeResult{}, err
	}
	defer cl.Close()
	var res consumeResult
	start := time.Now()
	for res.Records < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return consumeResult{}, fmt.Errorf("consumed %d of %d records: %w", res.Records, want, context.Cause(ctx))
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return consumeResult{}, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			res.Records++
			res.Bytes += int64(len(r.Key) + len(r.Value))
		})
	}
	res.Duration = time.Since(start)
	res.MiBps = float64(res.Bytes) / mib / res.Duration.Seconds()
	res.RecPerS = float64(res.Records) / res.Duration.Seconds()
	return res, nil
}
