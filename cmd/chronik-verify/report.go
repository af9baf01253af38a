package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// snapshot is everything the report is computed from, copied once the
// producer and consumer are done (or given up on).
type snapshot struct {
	recs       []sendRec
	final      tally
	retried    tally
	prodMarks  []errMark
	leaders    [][]leaderChange // per partition; the inner slices are only appended to
	tr         *tracker
	consErrs   tally
	consMarks  []errMark
	parts      int32
	produceEnd int64 // ns since t0 when producing stopped
	end        int64 // ns since t0 when verification stopped
	events     []Event
}

// Report is the machine-readable result; field names are the JSON schema
// scenario scripts read.
type Report struct {
	Verdict     string    `json:"verdict"` // PASS or FAIL
	Summary     string    `json:"summary"` // e.g. "0 lost, 0 duplicates"
	ExitCode    int       `json:"exit_code"`
	RunID       string    `json:"run_id"`
	Start       time.Time `json:"start"`
	Interrupted bool      `json:"interrupted,omitempty"`
	Config      Config    `json:"config"`

	ProduceSeconds float64 `json:"produce_s"`
	TotalSeconds   float64 `json:"total_s"`

	Target       int `json:"target"` // rate × duration; 0 when unpaced
	Sent         int `json:"sent"`
	Acknowledged int `json:"acknowledged"`
	Failed       int `json:"failed"`  // the client gave up on them
	Pending      int `json:"pending"` // neither acked nor failed when we stopped waiting

	ConsumedUnique int `json:"consumed_unique"`
	Deliveries     int `json:"deliveries"`

	Lost            int      `json:"lost"` // acked, never consumed
	LostSamples     []SeqLoc `json:"lost_samples,omitempty"`
	Duplicated      int      `json:"duplicated"`       // records stored at more than one offset
	DuplicateCopies int      `json:"duplicate_copies"` // the extra offsets
	DupSamples      []SeqLoc `json:"duplicate_samples,omitempty"`
	Redelivered     int      `json:"redelivered"` // the same offset consumed again (at-least-once)
	Rewinds         []Rewind `json:"rewinds,omitempty"`
	Reordered       int      `json:"reordered"`
	ReorderSamples  []SeqLoc `json:"reorder_samples,omitempty"`
	Corrupt         int      `json:"corrupt"`
	CorruptSamples  []Loc    `json:"corrupt_samples,omitempty"`
	UnackedSeen     int      `json:"unacknowledged_seen"`
	OffsetMismatch  int      `json:"offset_mismatch"` // consumed, but not at the offset the ack gave
	Foreign         int      `json:"foreign"`         // other runs' records, ignored

	ProduceErrors []ErrorCount `json:"produce_errors"`
	RetriedErrors []ErrorCount `json:"retried_errors"` // seen and retried by the client
	ConsumeErrors []ErrorCount `json:"consume_errors"`

	ProduceLatency Latency      `json:"produce_latency_ms"`
	EndToEnd       Latency      `json:"end_to_end_latency_ms"`
	ProduceStall   Stall        `json:"produce_stall"`
	ConsumeStall   Stall        `json:"consume_stall"`
	Phases         []Phase      `json:"phases,omitempty"` // between the --events lines
	LeaderMoves    []LeaderMove `json:"leader_moves,omitempty"`
	AckedPerSec    float64      `json:"acked_per_s"`
	ConsumedPerSec float64      `json:"consumed_per_s"`

	Events []Event `json:"events"`
}

// analyze classifies every record and computes the report's figures.
func analyze(s snapshot) Report {
	var r Report
	r.Sent = len(s.recs)
	r.ProduceSeconds = round3(float64(s.produceEnd) / 1e9)
	r.TotalSeconds = round3(float64(s.end) / 1e9)
	tr := s.tr
	seen := func(seq int) *seenRec {
		if seq < len(tr.seen) && tr.seen[seq].count > 0 {
			return &tr.seen[seq]
		}
		return nil
	}
	var lat, e2e []int64
	ackTimes := make([][]int64, s.parts)
	for seq, rec := range s.recs {
		sr := seen(seq)
		switch rec.state {
		case acked:
			r.Acknowledged++
			lat = append(lat, rec.done-rec.sent)
			if int(rec.partition) < len(ackTimes) {
				ackTimes[rec.partition] = append(ackTimes[rec.partition], rec.done)
			}
			if sr == nil {
				r.Lost++
				if len(r.LostSamples) < maxSamples {
					r.LostSamples = append(r.LostSamples, SeqLoc{uint64(seq), rec.partition, rec.offset})
				}
			} else if ack := (Loc{rec.partition, rec.offset}); ack != (Loc{sr.partition, sr.offset}) &&
				!slices.Contains(tr.extra[uint64(seq)], ack) {
				r.OffsetMismatch++
			}
		case failed:
			r.Failed++
		default:
			r.Pending++
		}
		if sr != nil {
			e2e = append(e2e, sr.first-rec.sent)
			if rec.state != acked {
				r.UnackedSeen++
			}
		}
	}
	consTimes := make([][]int64, s.parts)
	for seq := range tr.seen {
		sr := &tr.seen[seq]
		if sr.count == 0 {
			continue
		}
		r.ConsumedUnique++
		if int(sr.partition) < len(consTimes) {
			consTimes[sr.partition] = append(consTimes[sr.partition], sr.first)
		}
	}
	for seq, locs := range tr.extra {
		r.Duplicated++
		r.DuplicateCopies += len(locs)
		if len(r.DupSamples) < maxSamples {
			r.DupSamples = append(r.DupSamples, SeqLoc{seq, locs[0].Partition, locs[0].Offset})
		}
	}
	slices.SortFunc(r.DupSamples, func(a, b SeqLoc) int { return int(a.Seq) - int(b.Seq) })
	r.Deliveries = tr.deliveries
	r.Redelivered = tr.redelivered
	r.Rewinds = tr.rewinds
	r.Reordered, r.ReorderSamples = tr.reordered, tr.reorderS
	r.Corrupt, r.CorruptSamples = tr.corrupt, tr.corruptS
	r.Foreign = tr.foreign

	r.ProduceErrors = s.final.rows()
	r.RetriedErrors = s.retried.rows()
	r.ConsumeErrors = s.consErrs.rows()
	r.ProduceLatency = latency(lat)
	r.EndToEnd = latency(e2e)
	r.ProduceStall = stalls(ackTimes, 0, s.produceEnd)
	r.ProduceStall.LeaderBefore, r.ProduceStall.LeaderAfter = -1, -1
	if p := int(r.ProduceStall.Partition); p < len(s.leaders) && r.ProduceStall.MaxMs > 0 {
		from, to := int64(r.ProduceStall.FromSec*1e9), int64(r.ProduceStall.ToSec*1e9)
		r.ProduceStall.LeaderBefore, r.ProduceStall.LeaderAfter = leaderAt(s.leaders[p], from), leaderAt(s.leaders[p], to)
	}
	r.ConsumeStall = stalls(consTimes, 0, s.produceEnd)
	if s.produceEnd > 0 {
		r.AckedPerSec = math.Round(float64(r.Acknowledged) / (float64(s.produceEnd) / 1e9))
	}
	var lastSeen int64
	for _, ts := range consTimes {
		for _, t := range ts {
			lastSeen = max(lastSeen, t)
		}
	}
	if lastSeen > 0 {
		r.ConsumedPerSec = math.Round(float64(r.ConsumedUnique) / (float64(lastSeen) / 1e9))
	}
	r.Events = s.events
	if r.Events == nil {
		r.Events = []Event{}
	}
	r.Phases = phases(s.recs, s.parts, s.events, s.produceEnd)
	r.LeaderMoves = leaderMoves(s.leaders, ackTimes, s.produceEnd)
	return r
}

// judge sets the verdict and exit code.
func (r *Report) judge(c Config) {
	ok := r.Lost <= c.MaxLost && (r.Duplicated == 0 || c.AllowDup) && r.Corrupt == 0 &&
		(r.Reordered == 0 || !c.FailOnReorder)
	r.Summary = fmt.Sprintf("%d lost, %d duplicates", r.Lost, r.Duplicated)
	for _, x := range []struct {
		n    int
		what string
	}{{r.Reordered, "reordered"}, {r.Corrupt, "corrupt"}, {r.Failed, "failed"}, {r.Pending, "unacknowledged"}} {
		if x.n > 0 {
			r.Summary += fmt.Sprintf(", %d %s", x.n, x.what)
		}
	}
	if limit := time.Duration(c.MaxAckStall); limit > 0 && r.ProduceStall.MaxMs > float64(limit)/float64(time.Millisecond) {
		ok = false
		r.Summary += fmt.Sprintf(", ack stall %.0fms over the %s limit", r.ProduceStall.MaxMs, limit)
	}
	if r.Sent > 0 && r.Acknowledged == 0 {
		// Nothing to lose proves nothing: a producer that never got an ack
		// (a refused login, no leader) is a failed run.
		ok = false
		r.Summary += ", nothing acknowledged"
	}
	r.Verdict, r.ExitCode = "PASS", 0
	if !ok {
		r.Verdict, r.ExitCode = "FAIL", 1
	}
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func writeJSON(path string, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printTable writes the human-readable report.
func printTable(w io.Writer, r *Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprint(v...)) }
	rowf := func(k, f string, v ...any) { row(k, fmt.Sprintf(f, v...)) }
	rowf("verdict", "%s: %s", r.Verdict, r.Summary)
	rowf("run", "%s  topic %s  %d partitions × %d  group %s", r.RunID, r.Config.Topic, r.Config.Partitions, r.Config.Replication, r.Config.Group)
	rowf("produced", "%d sent (target %d), %d acknowledged, %d failed, %d unacknowledged, in %.1fs", r.Sent, r.Target, r.Acknowledged, r.Failed, r.Pending, r.ProduceSeconds)
	rowf("consumed", "%d unique, %d deliveries", r.ConsumedUnique, r.Deliveries)
	rowf("lost", "%d%s", r.Lost, samples(r.LostSamples))
	rowf("duplicated", "%d (%d extra copies)%s", r.Duplicated, r.DuplicateCopies, samples(r.DupSamples))
	rowf("redelivered", "%d (same offset consumed again; at-least-once)%s", r.Redelivered, rewinds(r.Rewinds))
	rowf("reordered", "%d%s", r.Reordered, samples(r.ReorderSamples))
	rowf("corrupt", "%d", r.Corrupt)
	rowf("unacked but seen", "%d", r.UnackedSeen)
	rowf("offset mismatch", "%d", r.OffsetMismatch)
	if r.Foreign > 0 {
		rowf("foreign", "%d (other runs' records, ignored)", r.Foreign)
	}
	rowf("produce errors", "%s", errorList(r.ProduceErrors))
	rowf("retried errors", "%s", errorList(r.RetriedErrors))
	rowf("consume errors", "%s", errorList(r.ConsumeErrors))
	rowf("produce latency", "p50 %.1fms  p99 %.1fms  p999 %.1fms  max %.1fms", r.ProduceLatency.P50, r.ProduceLatency.P99, r.ProduceLatency.P999, r.ProduceLatency.Max)
	rowf("end-to-end latency", "p50 %.1fms  p99 %.1fms  max %.1fms", r.EndToEnd.P50, r.EndToEnd.P99, r.EndToEnd.Max)
	rowf("ack stall", "longest %.0fms (partition %d, %.3fs-%.3fs, acked by broker %s before, %s after), p99 gap %.1fms",
		r.ProduceStall.MaxMs, r.ProduceStall.Partition, r.ProduceStall.FromSec, r.ProduceStall.ToSec,
		brokerName(r.ProduceStall.LeaderBefore), brokerName(r.ProduceStall.LeaderAfter), r.ProduceStall.P99GapMs)
	rowf("consume stall", "longest %.0fms (partition %d at %.1fs), p99 gap %.1fms", r.ConsumeStall.MaxMs, r.ConsumeStall.Partition, r.ConsumeStall.FromSec, r.ConsumeStall.P99GapMs)
	rowf("throughput", "%.0f acked/s, %.0f consumed/s", r.AckedPerSec, r.ConsumedPerSec)
	printLeaderMoves(rowf, r.LeaderMoves)
	for _, e := range r.Events {
		rowf("event", "t=%.1fs %s", e.AtSec, e.Text)
	}
	for _, ph := range r.Phases {
		rowf("phase", "t=%.3fs-%.3fs from %s: produce p50 %.1fms  p99 %.1fms  p999 %.1fms  max %.1fms (%d acks); longest ack gap %.0fms (partition %d, %.3fs-%.3fs)",
			ph.FromSec, ph.ToSec, ph.From, ph.ProduceLatency.P50, ph.ProduceLatency.P99, ph.ProduceLatency.P999, ph.ProduceLatency.Max,
			ph.ProduceLatency.N, ph.AckStall.MaxMs, ph.AckStall.Partition, ph.AckStall.FromSec, ph.AckStall.ToSec)
	}
	tw.Flush()
}

func samples(s []SeqLoc) string {
	if len(s) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("  e.g.")
	for _, x := range s[:min(len(s), 5)] {
		fmt.Fprintf(&b, " seq %d@%d/%d", x.Seq, x.Partition, x.Offset)
	}
	return b.String()
}

// rewinds summarises where the consumer went back and by how much.
func rewinds(rs []Rewind) string {
	if len(rs) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  %d rewinds, e.g.", len(rs))
	for _, r := range rs[:min(len(rs), 3)] {
		fmt.Fprintf(&b, " p%d %d→%d at %.1fs", r.Partition, r.From, r.To, r.AtSec)
	}
	return b.String()
}

func errorList(es []ErrorCount) string {
	if len(es) == 0 {
		return "none"
	}
	var parts []string
	for _, e := range es {
		kind := "fatal"
		if e.Retriable {
			kind = "retriable"
		}
		parts = append(parts, fmt.Sprintf("%s×%d (%s)", e.Name, e.Count, kind))
	}
	return strings.Join(parts, ", ")
}

// Timeline is what the plot shows, per bucket of the run.
type Timeline struct {
	Bucket     time.Duration
	Acked      []float64 // records/s
	Consumed   []float64 // records/s
	P50, P99   []float64 // ms, NaN where nothing was acked
	Max        []float64
	FinalErr   []int
	RetriedErr []int
	ConsumeErr []int
	ProduceEnd float64 // s
	Events     []Event
	Title      string
	Subtitle   string
}

func buildTimeline(s snapshot, bucket time.Duration) *Timeline {
	bn := bucket.Nanoseconds()
	n := int(s.end/bn) + 1
	tl := &Timeline{Bucket: bucket, ProduceEnd: float64(s.produceEnd) / 1e9, Events: s.events,
		Acked: make([]float64, n), Consumed: make([]float64, n),
		P50: make([]float64, n), P99: make([]float64, n), Max: make([]float64, n),
		FinalErr: make([]int, n), RetriedErr: make([]int, n), ConsumeErr: make([]int, n)}
	perSec := 1 / bucket.Seconds()
	lats := make([][]int64, n)
	for _, rec := range s.recs {
		if rec.state != acked {
			continue
		}
		b := min(int(rec.done/bn), n-1)
		tl.Acked[b] += perSec
		lats[b] = append(lats[b], rec.done-rec.sent)
	}
	for b, l := range lats {
		if len(l) == 0 {
			tl.P50[b], tl.P99[b], tl.Max[b] = math.NaN(), math.NaN(), math.NaN()
			continue
		}
		x := latency(l)
		tl.P50[b], tl.P99[b], tl.Max[b] = x.P50, x.P99, x.Max
	}
	for b, c := range s.tr.buckets {
		tl.Consumed[min(b, n-1)] += float64(c) * perSec
	}
	for _, m := range slices.Concat(s.prodMarks, s.consMarks) {
		b := min(max(int(m.at/bn), 0), n-1)
		switch m.kind {
		case errFinal:
			tl.FinalErr[b]++
		case errConsume:
			tl.ConsumeErr[b]++
		default:
			tl.RetriedErr[b]++
		}
	}
	return tl
}

// brokerName prints a broker id, "?" when not known.
func brokerName(id int32) string {
	if id < 0 {
		return "?"
	}
	return strconv.Itoa(int(id))
}
