package main

import (
	"math"
	"slices"
)

// percentile returns the nearest-rank q-quantile of sorted, 0 if empty.
func percentile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Stall is the worst silence on any one partition: the longest gap between
// successive events there (the start of producing counting as the first
// event), and the p99 of all such gaps.
type Stall struct {
	MaxMs     float64 `json:"max_ms"`
	Partition int32   `json:"partition"`
	FromSec   float64 `json:"from_s"` // when the longest gap began
	ToSec     float64 `json:"to_s"`   // and when it ended
	P99GapMs  float64 `json:"p99_gap_ms"`
	// LeaderBefore is the broker that acked the partition's last batch
	// before the gap, LeaderAfter the one that acked the batch ending it
	// (produce stalls only; -1 when not known).
	LeaderBefore int32 `json:"leader_before"`
	LeaderAfter  int32 `json:"leader_after"`
}

// leaderChange is when a partition's batches began to be acked by broker.
type leaderChange struct {
	at     int64 // ns since t0
	broker int32
}

// leaderAt returns the broker acking a partition's batches at t: the last
// change at or before it, -1 when none.
func leaderAt(changes []leaderChange, t int64) int32 {
	b := int32(-1)
	for _, c := range changes {
		if c.at > t {
			break
		}
		b = c.broker
	}
	return b
}

// stalls computes Stall from per-partition event times (ns since t0).
// A partition with no event at all is silent from from to end.
func stalls(times [][]int64, from, end int64) Stall {
	var s Stall
	var gaps []int64
	var worst int64 = -1
	note := func(p int, start, gap int64) {
		gaps = append(gaps, gap)
		if gap > worst {
			worst = gap
			s.Partition, s.FromSec, s.ToSec = int32(p), float64(start)/1e9, float64(start+gap)/1e9
		}
	}
	for p, ts := range times {
		if len(ts) == 0 {
			note(p, from, max(end-from, 0))
			continue
		}
		ts = slices.Clone(ts)
		slices.Sort(ts)
		prev := from
		for _, t := range ts {
			if t >= prev {
				note(p, prev, t-prev)
				prev = t
			}
		}
	}
	if worst < 0 {
		return s
	}
	slices.Sort(gaps)
	s.MaxMs = ms(worst)
	s.P99GapMs = ms(percentile(gaps, 0.99))
	return s
}

// Latency summarises a distribution in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	N    int     `json:"n"`
}

func latency(ns []int64) Latency {
	slices.Sort(ns)
	if len(ns) == 0 {
		return Latency{}
	}
	return Latency{P50: ms(percentile(ns, 0.5)), P99: ms(percentile(ns, 0.99)), P999: ms(percentile(ns, 0.999)),
		Max: ms(ns[len(ns)-1]), N: len(ns)}
}

func ms(ns int64) float64 { return math.Round(float64(ns)/1e3) / 1e3 }
