package admin

import (
	"net/http"
	"strings"
	"testing"
)

// TestHealthShowsRejoiningNode: a node back with an empty data directory
// and groups left to rejoin makes the cluster degraded, says so, and is
// listed with its count in /health and /nodes.
func TestHealthShowsRejoiningNode(t *testing.T) {
	src := healthyCluster()
	src.nodes[2].State, src.nodes[2].Incarnation, src.nodes[2].RejoiningGroups = "active", "00000000000000b2", 7
	r := Evaluate(src)
	if r.Status != StatusDegraded || r.SafeToRestart || r.Rejoining["3"] != 7 {
		t.Fatalf("report %+v", r)
	}
	found := false
	for _, why := range r.Reasons {
		found = found || strings.Contains(why, "node 3 is rejoining") && strings.Contains(why, "7 groups left")
	}
	if !found {
		t.Fatalf("no reason names the rejoining node: %v", r.Reasons)
	}
	s := newTestServer(t, src, nil)
	code, _, _ := get(t, s.Handler(), http.MethodGet, "/health")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/health answered %d while a node rejoins", code)
	}
	_, list := getJSON[[]map[string]any](t, s.Handler(), "/nodes")
	if list[2]["rejoining_groups"] != float64(7) || list[2]["incarnation"] != "00000000000000b2" {
		t.Fatalf("/nodes node 3 = %v", list[2])
	}
	src.nodes[2].RejoiningGroups = 0
	if r := Evaluate(src); r.Status != StatusHealthy || r.Rejoining != nil {
		t.Fatalf("after the rejoin: %+v", r)
	}
}
