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
)

// Debian's python3 with python3-confluent-kafka; a pyenv python3 earlier
// on PATH may lack the module.
const pythonBin = "/usr/bin/python3"

func needPython(t testing.TB) {
	t.Helper()
	out, err := exec.Command(pythonBin, "-c", "import confluent_kafka; print(confluent_kafka.version()[0], confluent_kafka.libversion()[0])").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import confluent_kafka (%v: %s): install it with `apt-get install python3-confluent-kafka` (or `make deps`)", pythonBin, err, out)
	}
}

// runPython runs testdata/script with args and fails the test on a
// non-zero exit or after timeout.
func runPython(t testing.TB, timeout time.Duration, script string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, pythonBin, append([]string{filepath.Join("testdata", script)}, args...)...)
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s: timed out after %v\nstdout: %s\nstderr: %s", script, timeout, stdout.String(), stderr.String())
	}
	if err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", script, err, stdout.String(), stderr.String())
	}
	t.Logf("%s took %v", script, time.Since(start).Round(time.Millisecond))
	if s := stderr.String(); s != "" {
		t.Logf("%s stderr:\n%s", script, s)
	}
	return stdout.String()
}

// pyRecord is one "partition offset value" line the script wrote.
type pyRecord struct {
	partition, offset int64
	value             string
}

func readPyRecords(t testing.TB, path string) []pyRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []pyRecord
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 {
			t.Fatalf("%s: bad line %q", path, line)
		}
		p, err1 := strconv.ParseInt(f[0], 10, 64)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: bad line %q", path, line)
		}
		out = append(out, pyRecord{p, o, f[2]})
	}
	return out
}

// TestPythonProduceConsumeGroup: confluent-kafka produces 10,000 records
// idempotently, a group member reads them all back, commits and closes,
// and a fresh member of the same group gets only newer records.
func TestPythonProduceConsumeGroup(t *testing.T) {
	needPython(t)
	c := startCluster(t, 3)
	const topic, group, n, parts = "python", "python-g", 10000, 6
	createTopic(t, c, topic, parts, 3, nil)
	dir := t.TempDir()
	var vals, extra bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&vals, "%s\n", testValue("py", i))
	}
	for p := 0; p < parts; p++ {
		fmt.Fprintf(&extra, "%s\n", testValue("py-new", p))
	}
	valsFile, extraFile := filepath.Join(dir, "values.txt"), filepath.Join(dir, "extra.txt")
	if err := os.WriteFile(valsFile, vals.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(extraFile, extra.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	runPython(t, 150*time.Second, "python_roundtrip.py", strings.Join(c.bootstrap(), ","), topic,
		strconv.Itoa(parts), group, valsFile, extraFile, dir)

	want := map[string]bool{}
	for i := 0; i < n; i++ {
		want[string(testValue("py", i))] = true
	}
	acked := map[string][2]int64{}
	for _, r := range readPyRecords(t, filepath.Join(dir, "produced.txt")) {
		if !want[r.value] {
			t.Fatalf("delivery report for a value never produced: %q", r.value)
		}
		if _, dup := acked[r.value]; dup {
			t.Fatalf("value delivered twice: %q", r.value)
		}
		acked[r.value] = [2]int64{r.partition, r.offset}
	}
	if len(acked) != n {
		t.Fatalf("%d of %d delivered", len(acked), n)
	}
	seen := map[string]bool{}
	hwm := make([]int64, parts)
	for _, r := range readPyRecords(t, filepath.Join(dir, "consumed.txt")) {
		pos, ok := acked[r.value]
		if !ok {
			t.Fatalf("consumed a value never produced at %d/%d: %q", r.partition, r.offset, r.value)
		}
		if pos != [2]int64{r.partition, r.offset} {
			t.Fatalf("value %q consumed at %d/%d, delivered at %v", r.value, r.partition, r.offset, pos)
		}
		if seen[r.value] {
			t.Fatalf("value consumed twice: %q", r.value)
		}
		seen[r.value] = true
		hwm[r.partition] = max(hwm[r.partition], r.offset+1)
	}
	if len(seen) != n {
		t.Fatalf("consumed %d distinct of %d", len(seen), n)
	}

	// Committed offsets: every partition's high watermark.
	b, err := os.ReadFile(filepath.Join(dir, "committed.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != parts {
		t.Fatalf("committed.txt: %q", b)
	}
	for _, line := range lines {
		var p, committed, lo, hi int64
		if _, err := fmt.Sscanf(line, "%d %d %d %d", &p, &committed, &lo, &hi); err != nil {
			t.Fatalf("committed.txt line %q: %v", line, err)
		}
		if committed != hwm[p] || lo != 0 || hi != hwm[p] {
			t.Fatalf("partition %d: committed %d, watermarks %d..%d, consumed up to %d", p, committed, lo, hi, hwm[p])
		}
	}

	// The fresh member got exactly the new records, one per partition, each
	// at its partition's old high watermark.
	fresh := readPyRecords(t, filepath.Join(dir, "fresh.txt"))
	got := map[string]bool{}
	for _, r := range fresh {
		if !strings.HasPrefix(r.value, "py-new-") {
			t.Fatalf("fresh member got an already committed record at %d/%d: %q", r.partition, r.offset, r.value)
		}
		if r.value != string(testValue("py-new", int(r.partition))) || r.offset != hwm[r.partition] {
			t.Fatalf("fresh member got %q at %d/%d", r.value, r.partition, r.offset)
		}
		got[r.value] = true
	}
	if len(got) != parts || len(fresh) != parts {
		t.Fatalf("fresh member got %d records (%d distinct), want %d", len(fresh), len(got), parts)
	}
}

func TestPythonAdminTopics(t *testing.T) {
	needPython(t)
	c := startCluster(t, 3)
	out := runPython(t, 120*time.Second, "python_admin.py", strings.Join(c.bootstrap(), ","), "python-admin")
	if strings.TrimSpace(out) != "ok" {
		t.Fatalf("python_admin.py printed %q", out)
	}
}
