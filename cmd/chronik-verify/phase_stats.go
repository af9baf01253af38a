package main

import (
	"fmt"
	"slices"
)

// Phase is the stretch of a run between two lines of the --events file
// (a roll's steps, say), with the produce figures of that stretch alone:
// a whole-run p999 or longest stall does not say which step caused it.
type Phase struct {
	From           string  `json:"from"` // the event that opened it, or "start"
	FromSec        float64 `json:"from_s"`
	ToSec          float64 `json:"to_s"`
	ProduceLatency Latency `json:"produce_latency_ms"` // records acknowledged in the phase
	// The longest gap between acks on one partition that ended in the
	// phase (a gap spanning phases counts where it ended).
	AckStall Stall `json:"ack_stall"`
}

// phases splits [0, produceEnd] at the events inside it; none without
// events. Times are ns since t0, as in sendRec.
func phases(recs []sendRec, parts int32, events []Event, produceEnd int64) []Phase {
	type bound struct {
		at   int64
		what string
	}
	bounds := []bound{{0, "start"}}
	for _, e := range events {
		if at := int64(e.AtSec * 1e9); at > bounds[len(bounds)-1].at && at < produceEnd {
			bounds = append(bounds, bound{at, fmt.Sprintf("%q", e.Text)})
		}
	}
	if len(bounds) == 1 {
		return nil
	}
	bounds = append(bounds, bound{produceEnd, "end"})
	acks := make([][]int64, parts)
	for _, r := range recs {
		if r.state == acked && r.partition >= 0 && r.partition < parts {
			acks[r.partition] = append(acks[r.partition], r.done)
		}
	}
	for _, ts := range acks {
		slices.Sort(ts)
	}
	out := make([]Phase, 0, len(bounds)-1)
	for i := 0; i+1 < len(bounds); i++ {
		from, to := bounds[i].at, bounds[i+1].at
		var lat []int64
		for _, r := range recs {
			if r.state == acked && r.done >= from && r.done < to {
				lat = append(lat, r.done-r.sent)
			}
		}
		ph := Phase{From: bounds[i].what, FromSec: round3(float64(from) / 1e9), ToSec: round3(float64(to) / 1e9), ProduceLatency: latency(lat)}
		var gaps []int64
		worst := int64(-1)
		for p, ts := range acks {
			for j := 1; j < len(ts); j++ {
				if ts[j] < from || ts[j] >= to {
					continue
				}
				g := ts[j] - ts[j-1]
				gaps = append(gaps, g)
				if g > worst {
					worst = g
					ph.AckStall.Partition, ph.AckStall.FromSec, ph.AckStall.ToSec = int32(p), round3(float64(ts[j-1])/1e9), round3(float64(ts[j])/1e9)
				}
			}
		}
		if worst >= 0 {
			slices.Sort(gaps)
			ph.AckStall.MaxMs, ph.AckStall.P99GapMs = ms(worst), ms(percentile(gaps, 0.99))
		}
		ph.AckStall.LeaderBefore, ph.AckStall.LeaderAfter = -1, -1
		out = append(out, ph)
	}
	return out
}
