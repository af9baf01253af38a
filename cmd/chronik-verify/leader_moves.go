package main

import "slices"

// LeaderMove is a partition's batches beginning to be acked by another
// broker, as this producer saw it, with the gap between acks on that
// partition that the move ended: what one leadership change cost the
// client. A roll causes two kinds (the stopping node's hand-offs, and the
// preferred-leader rebalance once it is back); scenario scripts tell them
// apart by the --events around them.
type LeaderMove struct {
	Partition int32   `json:"partition"`
	AtSec     float64 `json:"at_s"` // the first batch acked by To
	From      int32   `json:"from"`
	To        int32   `json:"to"`
	GapMs     float64 `json:"gap_ms"`
	GapFrom   float64 `json:"gap_from_s"` // the last ack before the move
	GapTo     float64 `json:"gap_to_s"`   // the first ack after it
}

// leaderMoves lists every change after a partition's first leader, up to
// produceEnd, in time order. ackTimes are ns since t0 per partition (any
// order; not modified).
func leaderMoves(leaders [][]leaderChange, ackTimes [][]int64, produceEnd int64) []LeaderMove {
	var out []LeaderMove
	for p, changes := range leaders {
		var acks []int64
		if p < len(ackTimes) {
			acks = slices.Clone(ackTimes[p])
			slices.Sort(acks)
		}
		for i := 1; i < len(changes); i++ {
			c := changes[i]
			if c.at > produceEnd {
				break
			}
			m := LeaderMove{Partition: int32(p), AtSec: round3(float64(c.at) / 1e9), From: changes[i-1].broker, To: c.broker}
			// The client notes the broker before it finishes the batch's
			// records, so the batch's acks are at or after c.at.
			if j, _ := slices.BinarySearch(acks, c.at); j > 0 && j < len(acks) {
				m.GapMs = ms(acks[j] - acks[j-1])
				m.GapFrom, m.GapTo = round3(float64(acks[j-1])/1e9), round3(float64(acks[j])/1e9)
			}
			out = append(out, m)
		}
	}
	slices.SortStableFunc(out, func(a, b LeaderMove) int {
		switch {
		case a.AtSec < b.AtSec:
			return -1
		case a.AtSec > b.AtSec:
			return 1
		}
		return 0
	})
	return out
}

// printLeaderMoves writes one table row summarising the moves.
func printLeaderMoves(row func(k, f string, v ...any), moves []LeaderMove) {
	if len(moves) == 0 {
		return
	}
	worst := moves[0]
	for _, m := range moves {
		if m.GapMs > worst.GapMs {
			worst = m
		}
	}
	row("leader moves", "%d seen by the producer; longest ack gap across one %.0fms (partition %d, %s→%s at %.3fs)",
		len(moves), worst.GapMs, worst.Partition, brokerName(worst.From), brokerName(worst.To), worst.AtSec)
}
