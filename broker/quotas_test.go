package broker

import (
	"testing"
	"time"

	"github.com/chronik-dev/chronik/kafka"
)

// TestSensorThrottle drives a sensor with a client that always sends again
// as soon as its throttle time has passed, on a simulated clock, and checks
// the rate it achieves over a minute is the limit within 1%, and that a
// new client may send one window's worth before it is throttled.
func TestSensorThrottle(t *testing.T) {
	const limit, chunk = 100_000.0, 10_000
	s := &sensor{limit: limit}
	now := time.Unix(1_000_000, 0)
	start := now
	sent := 0
	for i := 0; i < 1_000_000 && now.Sub(start) < time.Minute; i++ {
		d := s.throttle(now, chunk)
		sent += chunk
		if i < 9 && d != 0 {
			t.Fatalf("throttled after %d bytes, within the first window's allowance", sent)
		}
		now = now.Add(d + time.Millisecond)
	}
	got := float64(sent) / now.Sub(start).Seconds()
	if got < 0.99*limit || got > 1.01*limit {
		t.Fatalf("achieved %.0f B/s for a limit of %.0f", got, limit)
	}
	// Idle longer than the windows kept: the history is gone.
	now = now.Add(quotaSamples * quotaWindow)
	if r, _ := s.rate(now); r != 0 {
		t.Fatalf("rate %.0f after the windows expired", r)
	}
}

func TestQuotaKeyRoundTrip(t *testing.T) {
	odd := "a&b=c%<default>"
	for _, e := range [][]kafka.QuotaEntityPart{
		{{Type: kafka.QuotaClientID, Name: &odd}},
		{{Type: kafka.QuotaClientID}, {Type: kafka.QuotaUser, Name: &odd}},
		{{Type: kafka.QuotaUser}},
	} {
		k := quotaKey(e)
		back := parseQuotaKey(k)
		if quotaKey(back) != k || len(back) != len(e) {
			t.Fatalf("%q does not round-trip: %+v", k, back)
		}
		for i := range e {
			if (e[i].Name == nil) != (back[i].Name == nil) || (e[i].Name != nil && *e[i].Name != *back[i].Name) {
				t.Fatalf("%q: part %d came back %+v", k, i, back[i])
			}
		}
	}
}
