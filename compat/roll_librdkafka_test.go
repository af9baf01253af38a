package compat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pyRollProducer is testdata/python_roll_producer.py running: librdkafka
// producing until its standard input is closed.
type pyRollProducer struct {
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	out    string
	stderr bytes.Buffer

	mu     sync.Mutex
	acked  int
	errs   int
	status string // the last line it printed
	lines  chan struct{}
	exited chan struct{}
}

func startPyRollProducer(t *testing.T, c *cluster, topic string, parts, rate int) *pyRollProducer {
	t.Helper()
	pr := &pyRollProducer{out: filepath.Join(t.TempDir(), "delivered.txt"), lines: make(chan struct{}, 1), exited: make(chan struct{})}
	args := []string{filepath.Join("testdata", "python_roll_producer.py"), strings.Join(c.bootstrap(), ","), topic,
		strconv.Itoa(parts), strconv.Itoa(rate), pr.out}
	logPath := os.Getenv("CHRONIK_TEST_CLIENT_LOG")
	if logPath != "" {
		args = append(args, "debug=broker,topic,msg,protocol")
	}
	// More librdkafka settings, for trying what changes its stalls.
	args = append(args, strings.Fields(os.Getenv("CHRONIK_TEST_RDKAFKA_CONF"))...)
	pr.cmd = exec.Command(pythonBin, args...)
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		pr.cmd.Stderr = f
	} else {
		pr.cmd.Stderr = &pr.stderr
	}
	stdin, err := pr.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := pr.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr.stdin = stdin
	if err := pr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var a, e int
			line := sc.Text()
			pr.mu.Lock()
			pr.status = line
			if _, err := fmt.Sscanf(line, "acked %d errors %d", &a, &e); err == nil {
				pr.acked, pr.errs = a, e
			}
			pr.mu.Unlock()
			select {
			case pr.lines <- struct{}{}:
			default:
			}
		}
		pr.cmd.Wait()
		close(pr.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-pr.exited:
		default:
			pr.cmd.Process.Kill()
			<-pr.exited
		}
	})
	return pr
}

// waitAcked waits until the producer has reported n delivered records.
func (pr *pyRollProducer) waitAcked(t *testing.T, n int, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		pr.mu.Lock()
		acked := pr.acked
		pr.mu.Unlock()
		if acked >= n {
			return
		}
		select {
		case <-pr.lines:
		case <-pr.exited:
			t.Fatalf("librdkafka producer exited early: %s\n%s", pr.status, pr.stderr.String())
		case <-deadline:
			t.Fatalf("librdkafka producer: %d of %d delivered after %v", acked, n, d)
		}
	}
}

// finish closes the producer's input, waits for it to flush and exit, and
// reads its delivery reports into a clientLoad. Gaps count only up to the
// close: after it, the producer only flushes.
func (pr *pyRollProducer) finish(t *testing.T) *clientLoad {
	t.Helper()
	closed := time.Now()
	pr.stdin.Close()
	select {
	case <-pr.exited:
	case <-time.After(90 * time.Second):
		t.Fatalf("librdkafka producer did not exit 90 s after its input closed")
	}
	if !pr.cmd.ProcessState.Success() {
		t.Fatalf("librdkafka producer: %v (%s)\n%s", pr.cmd.ProcessState, pr.status, pr.stderr.String())
	}
	b, err := os.ReadFile(pr.out)
	if err != nil {
		t.Fatal(err)
	}
	load := newClientLoad()
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.SplitN(line, " ", 5)
		switch {
		case len(f) == 5 && f[0] == "ok":
			p, err1 := strconv.ParseInt(f[1], 10, 32)
			ns, err2 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("bad delivery line %q", line)
			}
			if at := time.Unix(0, ns); at.Before(closed) {
				load.okAt(f[4], int32(p), at)
			} else {
				load.mu.Lock()
				load.acked[f[4]] = true
				load.mu.Unlock()
			}
		case len(f) >= 3 && f[0] == "err":
			load.fail(fmt.Errorf("%s", strings.Join(f[2:], " ")))
		default:
			t.Fatalf("bad delivery line %q", line)
		}
		load.sent++
	}
	return load
}

// TestRollingRestartLibrdkafka rolls the cluster at the fast pace (see
// rollFast) under confluent-kafka-python (librdkafka) with acks=all and
// enable.idempotence. No delivery may fail and no acknowledged record be
// lost or repeated. The issue only asks for its longest per-partition gap
// between delivery reports to be reported; the bound is 3x 1 s, so that a
// stall of librdkafka's own metadata back-off would show.
func TestRollingRestartLibrdkafka(t *testing.T) {
	needPython(t)
	c := startCluster(t, 3)
	const topic, parts = "roll-rdk", 30
	createTopic(t, c, topic, parts, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	pr := startPyRollProducer(t, c, topic, parts, 1500)
	pr.waitAcked(t, 1500, 30*time.Second)
	// Delivery reports are read only once the producer exits, so the
	// rolls' spans are kept and their gaps looked up afterwards.
	type span struct{ from, to time.Time }
	var spans []span
	tl := rollClientsFastEach(t, c, topic, func(_ *rollTimeline, _ int, from, to time.Time) {
		spans = append(spans, span{from, to})
	})
	time.Sleep(time.Second)
	if len(spans) > 0 {
		// A gap still open when the last roll ended belongs to it.
		spans[len(spans)-1].to = time.Now()
	}
	load := pr.finish(t)
	t.Log("librdkafka: " + load.summary())
	load.logWorst(t, "librdkafka", tl)
	if len(spans) > 1 {
		var worst []time.Duration
		for i, s := range spans {
			w, p, at := load.worstBetween(s.from, s.to)
			worst = append(worst, w)
			t.Logf("librdkafka: roll %d (%v, rebalance included): longest gap between delivery reports on a partition %v, partition %d from %s (%s)",
				i+1, s.to.Sub(s.from).Round(time.Millisecond), w.Round(time.Millisecond), p, tl.rel(at), tl.around(at))
		}
		t.Logf("librdkafka: longest gap per roll %v", roundAll(worst))
	}
	if s := pr.stderr.String(); s != "" {
		t.Logf("librdkafka stderr:\n%s", s)
	}
	if len(load.errs) > 0 {
		t.Errorf("librdkafka saw delivery errors during the roll: %v", load.errs)
	}
	lost, dup := checkAcked(t, c, topic, load.acked)
	if lost != 0 || dup != 0 {
		t.Fatalf("librdkafka: lost %d acknowledged records, %d duplicates", lost, dup)
	}
	if w, limit := load.worst(), 3*time.Second*raceSlack; w > limit {
		t.Errorf("librdkafka: a partition went %v without a delivery report; want under %v", w.Round(time.Millisecond), limit)
	}
}

// allBrokersDown is what librdkafka reports when no broker connection of
// the client is up, and what kcat exits on unless given -E.
const allBrokersDown = "All broker connections are down"

// TestRollingRestartKcat rolls the cluster at the fast pace under kcat
// producing lines from its input (librdkafka again, as a CLI user runs
// it: acks=all, idempotent). kcat reports no delivery times, so only
// delivery is checked: no failure reported, every line written once.
//
// kcat runs with -E: at this pace librdkafka 2.0.2 often reports every
// broker down for a moment, and kcat exits on that by default. The client
// connects only to the brokers it needs; the restarted nodes lead nothing
// until the rebalance after the roll, and the stopping node forwards its
// writes, so the client hears of the new leaders only when that node
// closes its listener, when no other connection is up (see the README's
// rolling-restart section). The test logs whether it happened.
func TestRollingRestartKcat(t *testing.T) {
	needKcat(t)
	c := startCluster(t, 3)
	const topic = "roll-kcat"
	createTopic(t, c, topic, 12, 3, nil)
	c.waitAllHealthy(30 * time.Second)
	cmd := exec.Command(kcatBin, "-b", strings.Join(c.bootstrap(), ","), "-P", "-E", "-t", topic,
		"-X", "acks=all", "-X", "enable.idempotence=true")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	stop, written := make(chan struct{}), make(chan int, 1)
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		n := 0
		defer func() { written <- n }()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := fmt.Fprintf(in, "kcat-%d-%s\n", n, strings.Repeat("c", 100)); err != nil {
				return
			}
			n++
		}
	}()
	time.Sleep(time.Second)
	rollClientsFast(t, c, topic)
	time.Sleep(time.Second)
	close(stop)
	n := <-written
	in.Close()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("kcat: %v\n%s", err, stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("kcat did not exit 90 s after its input closed\n%s", stderr.String())
	}
	if s := stderr.String(); strings.Contains(s, "Delivery failed") {
		t.Errorf("kcat reported failures during the roll:\n%s", s)
	}
	t.Logf("kcat: librdkafka reported every broker down %d times", strings.Count(stderr.String(), allBrokersDown))
	want := make(map[string]bool, n)
	for i := 0; i < n; i++ {
		want[fmt.Sprintf("kcat-%d-%s", i, strings.Repeat("c", 100))] = true
	}
	lost, dup := checkAcked(t, c, topic, want)
	t.Logf("kcat: wrote %d lines during the roll; %d lost, %d duplicates", n, lost, dup)
	if lost != 0 || dup != 0 {
		t.Fatalf("kcat: %d of %d lines lost, %d duplicates", lost, n, dup)
	}
}
