package main

import (
	"reflect"
	"slices"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestInterspersedFlags(t *testing.T) {
	app := &cli.App{Commands: []*cli.Command{clusterCommand(), usersCommand()}}
	for _, tc := range []struct{ in, want []string }{
		{[]string{"x", "cluster", "replace", "3", "--with", "4", "--dry-run"},
			[]string{"x", "cluster", "replace", "--with", "4", "--dry-run", "3"}},
		{[]string{"x", "cluster", "decommission", "1", "--batch=2", "--no-progress-bar", "--timeout", "5s"},
			[]string{"x", "cluster", "decommission", "--batch=2", "--no-progress-bar", "--timeout", "5s", "1"}},
		{[]string{"x", "cluster", "decommission", "--", "-1"}, []string{"x", "cluster", "decommission", "--", "-1"}},
		// Not a leaf cluster command: untouched.
		{[]string{"x", "cluster"}, []string{"x", "cluster"}},
		{[]string{"x", "--node-id", "1"}, []string{"x", "--node-id", "1"}},
	} {
		if got := interspersed(app, slices.Clone(tc.in)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPlanStartsFromMoveTargets(t *testing.T) {
	// Kafka lists a moving partition's replicas as the target, then the
	// replicas leaving: the plan starts from the target.
	m := moving{Replicas: []int32{4, 2, 3, 1}, Adding: []int32{4}, Removing: []int32{1}}
	if got := m.target(); !slices.Equal(got, []int32{4, 2, 3}) {
		t.Fatalf("target %v", got)
	}
	v := &clusterView{
		Brokers: []brokerView{{ID: 1, State: "active"}, {ID: 2, State: "draining"}, {ID: 3, State: "active"}, {ID: 4, State: "active"}},
		Parts: []partView{{tp: tp{"t", 0}, Leader: 2, Replicas: m.Replicas},
			{tp: tp{"t", 1}, Leader: 1, Replicas: []int32{1, 2}}},
		Moving: map[tp]moving{{"t", 0}: m},
	}
	bs, ps := v.planInput()
	var ids []int32
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	if !slices.Equal(ids, []int32{1, 3, 4}) {
		t.Errorf("eligible brokers %v: a draining broker is not one", ids)
	}
	if !slices.Equal(ps[0].Replicas, []int32{4, 2, 3}) || !slices.Equal(ps[1].Replicas, []int32{1, 2}) {
		t.Errorf("plan input %+v", ps)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
