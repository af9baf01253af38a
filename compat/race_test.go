package compat

import (
	"strings"
	"testing"
)

// TestRaceReportsParse checks the scanner that turns a race-enabled
// node's output into reports (the black-box race run depends on it).
func TestRaceReportsParse(t *testing.T) {
	rep := func(n string) string {
		return "==================\nWARNING: DATA RACE\nWrite at 0x00c by goroutine " + n + ":\n  main.f()\n" +
			"Previous read at 0x00c by goroutine 9:\n  main.g()\n==================\n"
	}
	out := "time=1 level=INFO msg=started\n" + rep("7") + "time=2 level=INFO msg=more\n" + rep("8")
	got := raceReports(out)
	if len(got) != 2 {
		t.Fatalf("found %d reports, want 2: %q", len(got), got)
	}
	for i, r := range got {
		if !strings.HasPrefix(r, raceMark) || !strings.Contains(r, "Previous read") || strings.Contains(r, "msg=") {
			t.Errorf("report %d cut wrong: %q", i, r)
		}
	}
	if n := len(raceReports("level=INFO msg=clean\n")); n != 0 {
		t.Fatalf("clean output gave %d reports", n)
	}
}
