package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chronik-dev/chronik/internal/certgen"
)

const testRun = 0xfeed

func value(run, seq uint64) []byte {
	return encode(payload{run: run, seq: seq, sentUnix: 1}, 64)
}

func TestCodec(t *testing.T) {
	v := encode(payload{run: 7, seq: 42, sentUnix: 99}, 10) // below the minimum
	if len(v) != minValueLen {
		t.Fatalf("len %d, want %d", len(v), minValueLen)
	}
	v = encode(payload{run: 7, seq: 42, sentUnix: 99}, 200)
	if p, err := decode(v); err != nil || p != (payload{7, 42, 99}) {
		t.Fatalf("round trip: %+v %v", p, err)
	}
	for i := range v {
		bad := bytes.Clone(v)
		bad[i] ^= 0x10
		if _, err := decode(bad); err == nil {
			t.Fatalf("flipped byte %d not detected", i)
		}
	}
	if _, err := decode(v[:len(v)-1]); !errors.Is(err, errCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := decode([]byte("hello world")); !errors.Is(err, errForeign) {
		t.Fatalf("foreign: %v", err)
	}
}

// scenario feeds a tracker every kind of delivery and returns the analysed
// report.
func scenario(t *testing.T) Report {
	t.Helper()
	tr := newTracker(testRun, func() uint64 { return 12 }, 100*time.Millisecond)
	at := int64(0)
	see := func(p int32, off int64, v []byte) {
		at += int64(time.Millisecond)
		tr.observe(p, off, v, at)
	}
	for seq := range uint64(5) { // seqs 0-4 on partition 0, offsets 0-4
		see(0, int64(seq), value(testRun, seq))
	}
	see(0, 2, value(testRun, 2))  // redelivery after a rebalance
	see(0, 5, value(testRun, 3))  // duplicate: seq 3 stored again at offset 5
	see(0, 5, value(testRun, 3))  // ...and that copy redelivered
	see(0, 6, value(testRun, 9))  // seq 9
	see(0, 7, value(testRun, 6))  // seq 6 after 9 on the same partition: reordered
	see(1, 0, value(testRun, 5))  // partition 1 has its own order
	see(1, 1, value(testRun, 10)) // never acked, but seen
	see(1, 2, value(testRun, 99)) // valid checksum, never sent: corrupt
	bad := value(testRun, 11)
	bad[30] ^= 1
	see(1, 3, bad)                    // checksum mismatch: corrupt
	see(1, 4, value(1234, 0))         // another run: foreign
	see(1, 5, []byte("not verify's")) // another tool: foreign

	ms := int64(time.Millisecond)
	ack := func(p int32, off int64, at int64) sendRec {
		return sendRec{sent: at - ms, done: at, partition: p, offset: off, state: acked}
	}
	recs := []sendRec{
		ack(0, 0, 10*ms), ack(0, 1, 20*ms), ack(0, 2, 30*ms), ack(0, 3, 40*ms),
		ack(0, 40, 50*ms), // seq 4: consumed at offset 4, so the ack's offset is wrong
		ack(1, 0, 60*ms),
		ack(0, 7, 70*ms),
		ack(1, 9, 80*ms), // seq 7: acked, never consumed: lost
		{state: failed},  // seq 8: failed, never seen
		ack(0, 6, 90*ms),
		{state: failed},  // seq 10: failed but seen
		{state: pending}, // seq 11: still pending at the end
	}
	s := snapshot{recs: recs, tr: tr, parts: 2, produceEnd: 100 * ms, end: 200 * ms,
		final: tally{}, retried: tally{}, consErrs: tally{}}
	return analyze(s)
}

func TestClassification(t *testing.T) {
	r := scenario(t)
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"sent", r.Sent, 12}, {"acknowledged", r.Acknowledged, 9}, {"failed", r.Failed, 2}, {"pending", r.Pending, 1},
		{"lost", r.Lost, 1}, {"duplicated", r.Duplicated, 1}, {"duplicate copies", r.DuplicateCopies, 1},
		{"redelivered", r.Redelivered, 2}, {"reordered", r.Reordered, 1}, {"corrupt", r.Corrupt, 2},
		{"unacked seen", r.UnackedSeen, 1}, {"offset mismatch", r.OffsetMismatch, 1}, {"foreign", r.Foreign, 2},
		{"consumed unique", r.ConsumedUnique, 9}, {"deliveries", r.Deliveries, 12},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if len(r.LostSamples) != 1 || r.LostSamples[0] != (SeqLoc{7, 1, 9}) {
		t.Errorf("lost samples %+v", r.LostSamples)
	}
	if len(r.ReorderSamples) != 1 || r.ReorderSamples[0].Seq != 6 {
		t.Errorf("reorder samples %+v", r.ReorderSamples)
	}
	// Two rewinds: to offset 2 after 4, and to 5 after the duplicate at 5.
	if len(r.Rewinds) != 2 || r.Rewinds[0].From != 4 || r.Rewinds[0].To != 2 || r.Rewinds[1].To != 5 {
		t.Errorf("rewinds %+v", r.Rewinds)
	}
	if len(r.DupSamples) != 1 || r.DupSamples[0] != (SeqLoc{3, 0, 5}) {
		t.Errorf("dup samples %+v", r.DupSamples)
	}
	if r.ProduceLatency.P50 != 1 || r.ProduceLatency.Max != 1 || r.ProduceLatency.N != 9 {
		t.Errorf("latency %+v", r.ProduceLatency)
	}
}

func TestJudge(t *testing.T) {
	r := scenario(t) // 1 lost, 1 duplicated, 1 reordered, 2 corrupt
	for _, c := range []struct {
		cfg  Config
		want int
	}{
		{Config{}, 1},
		{Config{MaxLost: 1, AllowDup: true}, 1}, // corrupt still fails
	} {
		r.judge(c.cfg)
		if r.ExitCode != c.want {
			t.Errorf("%+v: exit %d, want %d", c.cfg, r.ExitCode, c.want)
		}
	}
	clean := Report{Lost: 1, Duplicated: 2, Reordered: 3}
	for _, c := range []struct {
		cfg  Config
		want int
	}{
		{Config{MaxLost: 1}, 1},
		{Config{MaxLost: 1, AllowDup: true}, 0},
		{Config{MaxLost: 0, AllowDup: true}, 1},
		{Config{MaxLost: 1, AllowDup: true, FailOnReorder: true}, 1},
	} {
		clean.judge(c.cfg)
		if clean.ExitCode != c.want {
			t.Errorf("%+v: exit %d, want %d", c.cfg, clean.ExitCode, c.want)
		}
	}
	stalled := Report{ProduceStall: Stall{MaxMs: 1500}}
	if stalled.judge(Config{}); stalled.ExitCode != 0 {
		t.Errorf("no stall limit: exit %d", stalled.ExitCode)
	}
	if stalled.judge(Config{MaxAckStall: dur(2 * time.Second)}); stalled.ExitCode != 0 {
		t.Errorf("stall under the limit: exit %d", stalled.ExitCode)
	}
	if stalled.judge(Config{MaxAckStall: dur(time.Second)}); stalled.ExitCode != 1 || !strings.Contains(stalled.Summary, "ack stall 1500ms") {
		t.Errorf("stall over the limit: exit %d, summary %q", stalled.ExitCode, stalled.Summary)
	}
	unacked := Report{Sent: 500, Pending: 500}
	if unacked.judge(Config{}); unacked.ExitCode != 1 || !strings.Contains(unacked.Summary, "nothing acknowledged") {
		t.Errorf("nothing acknowledged: exit %d, summary %q", unacked.ExitCode, unacked.Summary)
	}
	if clean.Summary != "1 lost, 2 duplicates, 3 reordered" {
		t.Errorf("summary %q", clean.Summary)
	}
}

func TestStalls(t *testing.T) {
	ms := int64(time.Millisecond)
	s := stalls([][]int64{{100 * ms, 1000 * ms, 200 * ms}, {150 * ms, 300 * ms}}, 0, 2000*ms)
	// Gaps: p0 100, 100, 800 (times are sorted first); p1 150, 150.
	if s.MaxMs != 800 || s.Partition != 0 || s.FromSec != 0.2 || s.ToSec != 1 || s.P99GapMs != 800 {
		t.Errorf("stall %+v", s)
	}
	s = stalls([][]int64{{100 * ms}, nil}, 0, 2000*ms) // a silent partition stalls throughout
	if s.MaxMs != 2000 || s.Partition != 1 || s.FromSec != 0 {
		t.Errorf("silent partition: %+v", s)
	}
	if s := stalls(nil, 0, 10); s != (Stall{}) {
		t.Errorf("no partitions: %+v", s)
	}
	gaps := make([]int64, 200)
	for i := range gaps {
		gaps[i] = int64(i + 1)
	}
	if p := percentile(gaps, 0.99); p != 198 {
		t.Errorf("p99 of 1..200 = %d", p)
	}
	if p := percentile(nil, 0.5); p != 0 {
		t.Errorf("empty percentile %d", p)
	}
}

// TestStallLeaders: the report names the broker that acked the stalled
// partition before the gap and the one that acked after it.
func TestStallLeaders(t *testing.T) {
	ms := int64(time.Millisecond)
	ch := []leaderChange{{at: 10 * ms, broker: 2}, {at: 500 * ms, broker: 3}, {at: 900 * ms, broker: 1}}
	for _, c := range []struct {
		at   int64
		want int32
	}{{5 * ms, -1}, {10 * ms, 2}, {499 * ms, 2}, {500 * ms, 3}, {2000 * ms, 1}} {
		if got := leaderAt(ch, c.at); got != c.want {
			t.Errorf("leaderAt(%dms) = %d, want %d", c.at/ms, got, c.want)
		}
	}
	recs := []sendRec{
		{sent: 0, done: 100 * ms, state: acked, partition: 0, offset: 0},
		{sent: 0, done: 150 * ms, state: acked, partition: 1, offset: 0},
		{sent: 0, done: 200 * ms, state: acked, partition: 0, offset: 1},
		{sent: 0, done: 900 * ms, state: acked, partition: 0, offset: 2},
		{sent: 0, done: 450 * ms, state: acked, partition: 1, offset: 1},
	}
	s := snapshot{recs: recs, tr: newTracker(testRun, func() uint64 { return 5 }, 100*time.Millisecond), parts: 2,
		produceEnd: 1000 * ms, end: 1000 * ms, final: tally{}, retried: tally{}, consErrs: tally{},
		leaders: [][]leaderChange{{{at: 90 * ms, broker: 2}, {at: 899 * ms, broker: 3}}, {{at: 140 * ms, broker: 1}}}}
	r := analyze(s)
	st := r.ProduceStall
	if st.Partition != 0 || st.MaxMs != 700 || st.LeaderBefore != 2 || st.LeaderAfter != 3 {
		t.Errorf("stall %+v; want partition 0, 700ms, broker 2 before, 3 after", st)
	}
}

func TestSVGWellFormed(t *testing.T) {
	nan := math.NaN()
	tl := &Timeline{
		Bucket:     100 * time.Millisecond,
		Acked:      []float64{0, 2000, 1990, 0, 2100},
		Consumed:   []float64{0, 1900, 2000, 50000, 2100}, // a redelivery burst
		P50:        []float64{nan, 3, 4, nan, 2},
		P99:        []float64{nan, 9, 1200, nan, 5},
		Max:        []float64{nan, 12, 1500, nan, 8},
		FinalErr:   []int{0, 0, 1, 0, 0},
		RetriedErr: []int{0, 0, 4, 2, 0},
		ConsumeErr: []int{0, 0, 0, 1, 0},
		ProduceEnd: 0.4,
		Events: []Event{
			{AtSec: 0.1, Text: `stop node 2 <graceful> & "quoted"`},
			{AtSec: 0.12, Text: "overlapping label"},
			{AtSec: -3, Text: "before the run: not drawn"},
		},
		Title:    "chronik-verify FAIL: 1 lost, 0 duplicates <&>",
		Subtitle: "sub",
	}
	var b bytes.Buffer
	if err := writeSVG(&b, tl); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	dec := xml.NewDecoder(strings.NewReader(out))
	var root string
	texts := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, out)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "text" {
				texts++
			}
		}
	}
	if root != "svg" || texts < 10 {
		t.Errorf("root %q, %d texts", root, texts)
	}
	for _, want := range []string{"&lt;graceful&gt; &amp; &#34;quoted&#34;", "consumed peak 50k/s (clipped)", "1 lost, 0 duplicates &lt;&amp;&gt;", "log scale", "stroke-dasharray"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	for _, bad := range []string{"NaN", "Inf", "before the run"} {
		if strings.Contains(out, bad) {
			t.Errorf("output contains %q", bad)
		}
	}
	// An empty run still draws.
	b.Reset()
	if err := writeSVG(&b, &Timeline{Bucket: 100 * time.Millisecond}); err != nil || xml.Unmarshal(b.Bytes(), new(struct{})) != nil {
		t.Errorf("empty timeline: %v", err)
	}
}

func TestEvents(t *testing.T) {
	now := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	e, ok := parseEvent("2026-11-25T21:00:01.123Z stop node 2\n", now)
	if !ok || e.Text != "stop node 2" || e.Untimed || e.Time.Sub(now) != 1123*time.Millisecond {
		t.Errorf("%+v", e)
	}
	if e, ok := parseEvent("restart node 3", now); !ok || !e.Untimed || e.Text != "restart node 3" || !e.Time.Equal(now) {
		t.Errorf("untimed %+v", e)
	}
	if _, ok := parseEvent("  \n", now); ok {
		t.Error("blank line parsed")
	}

	path := filepath.Join(t.TempDir(), "events.log")
	tail := &eventTail{path: path, t0: now, log: io.Discard}
	tail.poll() // no file yet
	os.WriteFile(path, []byte("2026-11-25T21:00:02Z first\n2026-11-25T21:00:03Z sec"), 0o644)
	tail.poll()
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("ond\n")
	f.Close()
	got := tail.list()
	if len(got) != 2 || got[0].Text != "first" || got[1].Text != "second" || got[1].AtSec != 3 {
		t.Errorf("tail %+v", got)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Setenv("CHRONIK_SASL_USER", "")
	for _, args := range [][]string{
		{"--rate", "-1"}, {"--duration", "0s"}, {"--partitions", "0"}, {"--bogus"}, {"extra"}, {"--brokers", ""},
		{"--sasl-mechanism", "SCRAM-SHA-512"}, {"--sasl-mechanism", "GSSAPI", "--sasl-user", "u"},
		{"--tls-ca", "/nonexistent/ca.pem"},
	} {
		if code := run(args, io.Discard, io.Discard); code != exitSetup {
			t.Errorf("%v: exit %d, want %d", args, code, exitSetup)
		}
	}
	c, err := parseFlags([]string{"--topic", "t1"}, io.Discard)
	if err != nil || c.Group != "t1-verify" || c.Size != 200 || c.Rate != 2000 {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

// TestRunKfake runs the whole tool against franz-go's in-memory broker.
func TestRunKfake(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for a few seconds")
	}
	fake, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	dir := t.TempDir()
	rep, plot, events := filepath.Join(dir, "r.json"), filepath.Join(dir, "p.svg"), filepath.Join(dir, "ev.log")
	os.WriteFile(events, []byte(time.Now().Add(500*time.Millisecond).UTC().Format(time.RFC3339Nano)+" half a second in\n"), 0o644)
	var out bytes.Buffer
	code := run([]string{"--brokers", strings.Join(fake.ListenAddrs(), ","), "--topic", "kf", "--partitions", "3",
		"--replication", "3", "--rate", "500", "--duration", "1500ms", "--settle", "5s", "--progress", "0",
		"--report", rep, "--plot", plot, "--events", events}, &out, io.Discard)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, out.String())
	}
	var r Report
	b, err := os.ReadFile(rep)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	// The pacing is on time: a loaded machine sends a few records fewer
	// in the 1.5 s (749 of 750 seen). What must hold is that every record
	// sent is acknowledged and consumed once.
	if r.Verdict != "PASS" || r.Lost != 0 || r.Sent < r.Target/2 || r.Acknowledged != r.Sent ||
		r.ConsumedUnique != r.Sent || r.Target != 750 || len(r.Events) != 1 {
		t.Errorf("report %+v", r)
	}
	if b, err := os.ReadFile(plot); err != nil || xml.Unmarshal(b, new(struct{})) != nil || !bytes.Contains(b, []byte("half a second in")) {
		t.Errorf("plot: %v", err)
	}
}

// TestRunKfakeSASLSSL runs the tool over TLS with a SCRAM-SHA-512 login
// (kfake's listeners with a certificate from a fresh CA), and checks that
// a wrong password fails setup.
func TestRunKfakeSASLSSL(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for a few seconds")
	}
	dir := t.TempDir()
	ca, err := certgen.NewCA("verify test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Sign(certgen.Options{CommonName: "kfake", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Write(dir, "srv"); err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, "srv.pem"), filepath.Join(dir, "srv.key"))
	if err != nil {
		t.Fatal(err)
	}
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(-1),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "admin", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	args := []string{"--brokers", strings.Join(fake.ListenAddrs(), ","), "--topic", "sec", "--partitions", "2",
		"--replication", "1", "--rate", "200", "--duration", "1s", "--settle", "5s", "--progress", "0",
		"--setup-timeout", "10s", "--tls-ca", filepath.Join(dir, "ca.pem"),
		"--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", "admin"}
	t.Setenv("CHRONIK_SASL_PASSWORD", "s3cret")
	rep := filepath.Join(dir, "r.json")
	var out bytes.Buffer
	if code := run(append(args, "--report", rep), &out, io.Discard); code != exitOK {
		t.Fatalf("exit %d\n%s", code, out.String())
	}
	var r Report
	b, err := os.ReadFile(rep)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	if r.Verdict != "PASS" || r.Acknowledged != 200 || r.ConsumedUnique != 200 {
		t.Errorf("report %+v", r)
	}
	t.Setenv("CHRONIK_SASL_PASSWORD", "wrong")
	if code := run(args, io.Discard, io.Discard); code != exitSetup {
		t.Errorf("wrong password: exit %d, want %d", code, exitSetup)
	}
}

func TestPhases(t *testing.T) {
	ms := int64(time.Millisecond)
	ack := func(p int32, sent, done int64) sendRec {
		return sendRec{sent: sent * ms, done: done * ms, partition: p, state: acked}
	}
	recs := []sendRec{
		ack(0, 0, 10), ack(1, 5, 20), ack(0, 100, 110), ack(1, 110, 120),
		// The roll: partition 0 waits 400 ms, its record 390 ms.
		ack(1, 500, 510), ack(0, 120, 510), ack(0, 900, 905),
		{sent: 950 * ms, done: 960 * ms, partition: 1, state: failed},
	}
	events := []Event{{AtSec: 0.2, Text: "SIGTERM to node 2"}, {AtSec: 0.8, Text: "node 2 back"}, {AtSec: 5, Text: "after the end"}}
	ph := phases(recs, 2, events, 1000*ms)
	if len(ph) != 3 {
		t.Fatalf("%d phases, want 3: %+v", len(ph), ph)
	}
	if ph[0].From != "start" || ph[1].From != `"SIGTERM to node 2"` || ph[2].FromSec != 0.8 || ph[2].ToSec != 1 {
		t.Errorf("bounds: %+v", ph)
	}
	if l := ph[1].ProduceLatency; l.N != 2 || l.Max != 390 || l.P999 != 390 {
		t.Errorf("roll latency %+v", l)
	}
	if s := ph[1].AckStall; s.MaxMs != 400 || s.Partition != 0 || s.FromSec != 0.11 || s.ToSec != 0.51 {
		t.Errorf("roll stall %+v", s)
	}
	if l := ph[2].ProduceLatency; l.N != 1 || l.Max != 5 {
		t.Errorf("last phase latency %+v (the failed record is not a latency)", l)
	}
	if phases(recs, 2, nil, 1000*ms) != nil {
		t.Error("phases without events")
	}
}

// TestLeaderMoves: each change of the broker acking a partition is listed
// with the ack gap it ended, the first leader is not a move.
func TestLeaderMoves(t *testing.T) {
	ms := int64(time.Millisecond)
	leaders := [][]leaderChange{
		{{at: 10 * ms, broker: 1}, {at: 300 * ms, broker: 2}, {at: 2000 * ms, broker: 1}},
		{{at: 20 * ms, broker: 3}, {at: 150 * ms, broker: 1}},
	}
	acks := [][]int64{{900 * ms, 10 * ms, 100 * ms, 310 * ms}, {20 * ms, 140 * ms, 150 * ms}}
	got := leaderMoves(leaders, acks, 1000*ms)
	want := []LeaderMove{
		{Partition: 1, AtSec: 0.15, From: 3, To: 1, GapMs: 10, GapFrom: 0.14, GapTo: 0.15},
		{Partition: 0, AtSec: 0.3, From: 1, To: 2, GapMs: 210, GapFrom: 0.1, GapTo: 0.31},
	}
	if !slices.Equal(got, want) {
		t.Errorf("moves\n got %+v\nwant %+v", got, want)
	}
	if acks[0][0] != 900*ms {
		t.Error("leaderMoves sorted its input")
	}
}
