package compat

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const kcatBin = "/usr/bin/kcat"

func needKcat(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(kcatBin); err != nil {
		t.Fatalf("kcat is missing (%v): install it with `apt-get install kcat` (or `make deps`)", err)
	}
}

// kcatRun runs kcat with args (and stdin, if any).
func kcatRun(c *cluster, timeout time.Duration, stdin []byte, args ...string) (stdout, stderr string, err error, timedOut bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args = append([]string{"-b", strings.Join(c.bootstrap(), ",")}, args...)
	cmd := exec.CommandContext(ctx, kcatBin, args...)
	cmd.WaitDelay = 2 * time.Second
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = cmd.Run()
	return so.String(), se.String(), err, ctx.Err() != nil
}

// kcat runs kcat and returns its stdout. It fails the test if kcat exits
// non-zero, reports an error or outlives timeout.
func kcat(t testing.TB, c *cluster, timeout time.Duration, stdin []byte, args ...string) string {
	t.Helper()
	out, stderr, err, timedOut := kcatRun(c, timeout, stdin, args...)
	if timedOut {
		t.Fatalf("kcat %s: timed out after %v\nstderr: %s", strings.Join(args, " "), timeout, stderr)
	}
	if err != nil {
		t.Fatalf("kcat %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr)
	}
	if strings.Contains(stderr, "failed") || strings.Contains(stderr, "ERROR") {
		t.Fatalf("kcat %s reported errors:\n%s", strings.Join(args, " "), stderr)
	}
	return out
}

// kcatOffset asks kcat's query mode (ListOffsets) for the offset of
// topic/partition at timestamp ts (-1 latest, -2 earliest).
func kcatOffset(t testing.TB, c *cluster, topic string, partition int, ts int64) int64 {
	t.Helper()
	out := kcat(t, c, 20*time.Second, nil, "-Q", "-t", fmt.Sprintf("%s:%d:%d", topic, partition, ts))
	// "kcat-ts [0] offset 50"
	f := strings.Fields(out)
	if len(f) != 4 || f[0] != topic || f[1] != fmt.Sprintf("[%d]", partition) || f[2] != "offset" {
		t.Fatalf("kcat -Q %s:%d:%d: unexpected output %q", topic, partition, ts, out)
	}
	o, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		t.Fatalf("kcat -Q %s:%d:%d: %q", topic, partition, ts, out)
	}
	return o
}

func TestKcatProduceConsume(t *testing.T) {
	needKcat(t)
	c := startCluster(t, 3)
	const topic, n, parts = "kcat", 10000, 6
	createTopic(t, c, topic, parts, 3, nil)
	var in bytes.Buffer
	want := map[string]int{} // value -> sequence
	for i := 0; i < n; i++ {
		v := testValue("kc", i)
		if bytes.ContainsAny(v, ": \n") {
			t.Fatalf("value %q contains a delimiter", v)
		}
		want[string(v)] = i
		fmt.Fprintf(&in, "%d:%s\n", i, v)
	}
	file := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(file, in.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	kcat(t, c, 60*time.Second, nil, "-P", "-t", topic, "-K", ":", "-l",
		"-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5", file)

	// Every partition's log end offset (ListOffsets latest) adds up to n:
	// nothing extra was written.
	total := int64(0)
	for p := 0; p < parts; p++ {
		total += kcatOffset(t, c, topic, p, -1)
	}
	if total != n {
		t.Fatalf("the partitions hold %d records, want %d", total, n)
	}
	// Read exactly n records. (-e would be the natural way to stop, but
	// kcat never sees the end of a partition: see TestKcatReproEmptyFetch.)
	out := kcat(t, c, 60*time.Second, nil, "-C", "-t", topic, "-c", strconv.Itoa(n), "-q", "-o", "beginning",
		"-f", "%p %o %k %s\n")
	seen := map[string]bool{}
	next := make([]int64, parts) // offsets of each partition must be dense from 0
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		f := strings.Split(line, " ")
		if len(f) != 4 {
			t.Fatalf("kcat output line %q", line)
		}
		p, _ := strconv.Atoi(f[0])
		o, _ := strconv.ParseInt(f[1], 10, 64)
		i, ok := want[f[3]]
		if !ok {
			t.Fatalf("read a value never produced at %d/%d: %q", p, o, f[3])
		}
		if f[2] != strconv.Itoa(i) {
			t.Fatalf("value %q read with key %q", f[3], f[2])
		}
		if seen[f[3]] {
			t.Fatalf("value read twice: %q", f[3])
		}
		seen[f[3]] = true
		if p < 0 || p >= parts || o != next[p] {
			t.Fatalf("record %q at %d/%d, expected the next offset of partition %d to be %v", f[3], p, o, p, next)
		}
		next[p]++
	}
	if len(seen) != n {
		t.Fatalf("read back %d distinct of %d", len(seen), n)
	}
	for p, k := range next {
		if k == 0 {
			t.Fatalf("partition %d got no records: %v", p, next)
		}
	}
}

func TestKcatListOffsetsByTimestamp(t *testing.T) {
	needKcat(t)
	c := startCluster(t, 3)
	const topic, n = "kcat-ts", 100
	createTopic(t, c, topic, 1, 3, nil)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	cl := newFranz(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Several produce requests with several records each, so lookups
	// have to look inside batches and across them.
	for i := 0; i < n; i += 10 {
		var rs []*kgo.Record
		for j := i; j < i+10; j++ {
			rs = append(rs, &kgo.Record{Topic: topic, Partition: 0, Value: testValue("kt", j), Timestamp: base.Add(time.Duration(j) * time.Second)})
		}
		if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	ms := func(d time.Duration) int64 { return base.Add(d).UnixMilli() }

	// Query mode: ListOffsets by timestamp, -1 latest, -2 earliest.
	query := func(ts int64) int64 { return kcatOffset(t, c, topic, 0, ts) }
	for _, tc := range []struct {
		name string
		ts   int64
		want int64
	}{
		{"earliest", -2, 0},
		{"latest", -1, n},
		{"first timestamp", ms(0), 0},
		{"before all", ms(-time.Hour), 0},
		{"exact middle", ms(50 * time.Second), 50},
		{"between 41 and 42", ms(41*time.Second + 500*time.Millisecond), 42},
		{"last", ms((n - 1) * time.Second), n - 1},
		{"after all", ms(n * time.Second), -1},
	} {
		if got := query(tc.ts); got != tc.want {
			t.Errorf("kcat -Q %s (%d): offset %d, want %d", tc.name, tc.ts, got, tc.want)
		}
	}

	// Consume mode: start at a timestamp, stop before another.
	consume := func(args ...string) []string {
		t.Helper()
		out := kcat(t, c, 20*time.Second, nil, append([]string{"-C", "-t", topic, "-p", "0", "-q", "-f", "%o %T %s\n"}, args...)...)
		return strings.Fields(strings.ReplaceAll(out, "\n", " "))
	}
	check := func(name string, got []string, from, to int) {
		t.Helper()
		if len(got) != 3*(to-from) {
			t.Fatalf("%s: got %d fields, want records %d..%d: %q", name, len(got), from, to-1, got)
		}
		for i := from; i < to; i++ {
			rec := got[3*(i-from) : 3*(i-from)+3]
			if rec[0] != strconv.Itoa(i) || rec[1] != strconv.FormatInt(ms(time.Duration(i)*time.Second), 10) || rec[2] != string(testValue("kt", i)) {
				t.Fatalf("%s: record %d read as %q", name, i, rec)
			}
		}
	}
	check("-o s@middle", consume("-o", fmt.Sprintf("s@%d", ms(50*time.Second)), "-c", "1"), 50, 51)
	check("-o s@between", consume("-o", fmt.Sprintf("s@%d", ms(41*time.Second+500*time.Millisecond)), "-c", "1"), 42, 43)
	check("-o s@ -o e@", consume("-o", fmt.Sprintf("s@%d", ms(20*time.Second)), "-o", fmt.Sprintf("e@%d", ms(30*time.Second))), 20, 30)
	check("-o beginning", consume("-o", "beginning", "-c", "1"), 0, 1)
	check("-o -1", consume("-o", "-1", "-c", "1"), n-1, n)
	// (-o end and s@ past the last record would need -e to stop: see
	// TestKcatReproEmptyFetch; "latest" and "after all" above cover them.)
}

// TestKcatReproEmptyFetch reproduces a broker bug: a Fetch that finds no
// records (the fetch offset is the high watermark) is answered with the
// partition's Records field null (size -1) instead of empty (size 0).
// librdkafka rejects that ("Protocol parse failure for Fetch v11 ...
// invalid MessageSetSize -1"), backs off and retries, so it never reaches
// the end of a partition: `kcat -C -e` on an empty (or fully read) topic
// never exits, and confluent-kafka never reports _PARTITION_EOF.
// Real Kafka sends an empty record set.
func TestKcatReproEmptyFetch(t *testing.T) {
	needKcat(t)
	c := startCluster(t, 3)
	const topic = "kcat-empty"
	createTopic(t, c, topic, 1, 3, nil)
	out, stderr, err, timedOut := kcatRun(c, 8*time.Second, nil, "-C", "-t", topic, "-o", "beginning", "-e", "-d", "fetch")
	var protoErrs []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "PROTOERR") {
			protoErrs = append(protoErrs, l)
		}
	}
	if timedOut || err != nil || len(protoErrs) > 0 {
		if len(protoErrs) > 4 {
			protoErrs = protoErrs[:4]
		}
		t.Fatalf("kcat -C -e on an empty partition: timed out %v, err %v, output %q; librdkafka protocol errors:\n%s",
			timedOut, err, out, strings.Join(protoErrs, "\n"))
	}
}
