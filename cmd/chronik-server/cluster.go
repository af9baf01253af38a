package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/urfave/cli/v2"

	"github.com/chronik-dev/chronik/broker"
	"github.com/chronik-dev/chronik/internal/placement"
)

// clusterCommand groups the operator commands that grow, shrink, repair
// and rebalance a cluster. They speak the Kafka admin API (Metadata,
// DescribeCluster, AlterPartitionReassignments, ListPartitionReassignments,
// ElectLeaders), so they work over any listener with the usual TLS and SASL
// flags, and they keep no state: each run plans from what the cluster
// reports, so a command killed half-way is finished by running it again.
func clusterCommand() *cli.Command {
	// Fresh slices each: flag lists appended to must not share arrays.
	conn := func(more ...cli.Flag) []cli.Flag {
		fs := append(kafkaConnFlags(),
			&cli.StringFlag{Name: "cluster-config", Usage: "cluster TOML file: seeds (when --bootstrap is not given) and admin addresses", EnvVars: []string{"CHRONIK_CLUSTER_CONFIG"}},
			&cli.StringFlag{Name: "admin", Usage: "a node's admin address, for broker states and the metadata group's voters (default: from --cluster-config)"},
			&cli.DurationFlag{Name: "timeout", Value: time.Hour, Usage: "give up waiting after this long (moves in flight go on; run the command again to follow them)"},
		)
		return append(append(fs, adminClientFlags()...), more...)
	}
	moveFlags := func(more ...cli.Flag) []cli.Flag {
		return conn(append([]cli.Flag{
			&cli.IntFlag{Name: "batch", Value: 0, Usage: "submit at most this many moves at once (0: all; the cluster runs max_concurrent_moves of them at a time)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and exit"},
			&cli.DurationFlag{Name: "poll", Value: 500 * time.Millisecond, Usage: "how often to ask the cluster how the moves go"},
			&cli.BoolFlag{Name: "no-progress-bar", Usage: "plain progress lines even on a terminal"},
		}, more...)...)
	}
	return &cli.Command{
		Name:  "cluster",
		Usage: "grow, shrink, repair and rebalance a running cluster",
		Description: "Every command plans from what the cluster reports (Metadata, DescribeCluster and the moves in\n" +
			"progress from ListPartitionReassignments), so it can be run again after it, or the node it\n" +
			"talks to, was killed: it waits for the moves already in flight, then moves what is left.\n" +
			"Ctrl-C or --timeout leave the cluster consistent: moves in flight finish on their own, or\n" +
			"`chronik-server cluster cancel` rolls them back.",
		Subcommands: []*cli.Command{
			{Name: "status", Usage: "brokers (state, replicas, leaders) and the moves in progress", Flags: conn(), Action: clusterStatus},
			{Name: "plan-rebalance", Usage: "print the rebalance plan (rebalance --dry-run)", Flags: moveFlags(),
				Action: func(c *cli.Context) error { return clusterRebalance(c, true) }},
			{Name: "rebalance", Usage: "spread replicas and preferred leaders evenly over the active brokers", Flags: moveFlags(),
				Action: func(c *cli.Context) error { return clusterRebalance(c, c.Bool("dry-run")) }},
			{Name: "decommission", Usage: "move every replica off broker N, then mark it removed", ArgsUsage: "N", Flags: moveFlags(),
				Action: clusterDecommission},
			{Name: "replace", Usage: "give the replicas of broker N (dead) to broker M", ArgsUsage: "N --with M",
				Flags: moveFlags(&cli.IntFlag{Name: "with", Usage: "the broker taking N's replicas", Required: true}), Action: clusterReplace},
			{Name: "add-node", Usage: "check a new node's [[nodes]] entry, wait until it has joined, optionally rebalance", ArgsUsage: "N",
				Flags: moveFlags(&cli.BoolFlag{Name: "rebalance", Usage: "rebalance once the node has joined"}), Action: clusterAddNode},
			{Name: "cancel", Usage: "cancel the moves in progress (their partitions go back to their replicas before the move)",
				Flags: conn(&cli.StringSliceFlag{Name: "topic", Usage: "only this topic's moves (repeatable)"}), Action: clusterCancel},
		},
	}
}

// session is one command's connection to the cluster.
type session struct {
	c     *cli.Context
	cl    *kgo.Client
	adm   *kadm.Client
	admin []string // admin addresses to ask, in order
	// adminOf names the broker behind each admin address cluster.toml
	// lists, so a removed broker's stale view can be left out.
	adminOf map[string]int32
	out     io.Writer
	errw    io.Writer
	ctx     context.Context // ends on Ctrl-C, SIGTERM or --timeout
	stop    func()
}

func openSession(c *cli.Context) (*session, error) {
	s := &session{c: c, out: c.App.Writer, errw: c.App.ErrWriter}
	if s.errw == nil {
		s.errw = os.Stderr
	}
	if f := c.String("cluster-config"); f != "" {
		cf, err := broker.LoadClusterFile(f)
		if err != nil {
			return nil, err
		}
		var seeds []string
		for _, n := range cf.Nodes {
			if n.Kafka != "" {
				seeds = append(seeds, n.Kafka)
			}
			if n.Admin != "" {
				s.admin = append(s.admin, n.Admin)
				if s.adminOf == nil {
					s.adminOf = map[string]int32{}
				}
				s.adminOf[n.Admin] = n.ID
			}
		}
		if !c.IsSet("bootstrap") && len(seeds) > 0 {
			if err := c.Set("bootstrap", strings.Join(seeds, ",")); err != nil {
				return nil, err
			}
		}
	}
	if a := c.String("admin"); a != "" {
		s.admin = append([]string{a}, s.admin...)
	}
	a, err := newAdminHTTP(c, 2*time.Second)
	if err != nil {
		return nil, err
	}
	adminClient = a
	cl, err := kafkaClient(c)
	if err != nil {
		return nil, err
	}
	s.cl, s.adm = cl, kadm.NewClient(cl)
	ctx, stopSig := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, c.Duration("timeout"))
	s.ctx = ctx
	s.stop = func() { cancel(); stopSig(); cl.Close() }
	return s, nil
}

// adminNodes reads broker states from the first admin server that
// answers /nodes (nil without admin addresses, or when none answers).
func (s *session) adminNodes() map[int32]string {
	for _, a := range s.admin {
		var rows []struct {
			ID    int32  `json:"id"`
			State string `json:"state"`
		}
		if code, err := getJSON(a, "/nodes", &rows); err == nil && code == 200 {
			out := map[int32]string{}
			for _, r := range rows {
				out[r.ID] = r.State
			}
			return out
		}
	}
	return nil
}

// metadataVoters reads the metadata group's members from an admin
// server's /partitions; without one, every listed broker is taken as one
// (how Chronik bootstraps the group from cluster.toml).
func (s *session) metadataVoters(v *clusterView) ([]int32, string) {
	return s.metadataVotersSkipping(v, -1)
}

// metadataVotersSkipping is metadataVoters without asking broker skip: a
// broker just marked removed is cut off from the metadata group, and its
// view stops at the moment it was.
func (s *session) metadataVotersSkipping(v *clusterView, skip int32) ([]int32, string) {
	for _, a := range s.admin {
		if id, ok := s.adminOf[a]; ok && id == skip {
			continue
		}
		var rows []partitionRow
		if code, err := getJSON(a, "/partitions", &rows); err == nil && code == 200 {
			for _, r := range rows {
				if r.Topic == "__cluster_metadata" {
					return r.Replicas, "admin " + a
				}
			}
		}
	}
	var ids []int32
	for _, b := range v.Brokers {
		ids = append(ids, b.ID)
	}
	return ids, "every listed broker (no admin address answered)"
}

func (s *session) read() (*clusterView, error) {
	return readCluster(s.ctx, s.adm, s.cl, s.adminNodes())
}

// readMovable reads the cluster and insists it can move replicas; a dry
// run only notes that it cannot.
func (s *session) readMovable(dry bool) (*clusterView, error) {
	v, err := s.read()
	if err != nil {
		return nil, err
	}
	if v.MovesUnknown != nil {
		if !dry {
			return nil, fmt.Errorf("this cluster cannot move replicas: %v", v.MovesUnknown)
		}
		fmt.Fprintf(s.out, "note: this cluster cannot move replicas (%v); the plan is what it would do\n", v.MovesUnknown)
	}
	return v, nil
}

// interrupted explains what a Ctrl-C or a timeout leaves behind.
func (s *session) interrupted(err error, sum runSummary) error {
	why := "interrupted"
	if errors.Is(err, context.DeadlineExceeded) {
		why = "--timeout " + s.c.Duration("timeout").String() + " reached"
	}
	fmt.Fprintf(s.out, "%s after %s\n", why, sum)
	return cli.Exit(why+": the moves in flight go on in the cluster; run the same command again to follow and "+
		"finish them, or `chronik-server cluster cancel` to roll them back", 1)
}

// settle waits for every move already in progress (from an earlier run of
// this or another command, or another operator), so that a plan starts
// from replicas that are where they are going.
func (s *session) settle(v *clusterView) (*clusterView, error) {
	if len(v.Moving) == 0 {
		return v, nil
	}
	var found []placement.Move
	for _, p := range v.Parts {
		if m, ok := v.Moving[p.tp]; ok {
			from := make([]int32, 0, len(m.Replicas))
			for _, r := range m.Replicas {
				if !contains(m.Adding, r) {
					from = append(from, r)
				}
			}
			found = append(found, placement.Move{Topic: p.topic, Partition: p.partition, From: from, To: m.target()})
		}
	}
	fmt.Fprintf(s.out, "%d move(s) already in progress (an earlier run, or another operator): waiting for them first\n", len(found))
	mv := s.mover()
	sum, err := mv.run(s.ctx, nil, found)
	if err != nil {
		return nil, s.interrupted(err, sum)
	}
	fmt.Fprintf(s.out, "moves in progress finished: %s\n", sum)
	return s.readMovable(false)
}

func (s *session) mover() *mover {
	batch := max(s.c.Int("batch"), 0)
	poll := s.c.Duration("poll")
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	return &mover{adm: s.adm, cl: s.cl, prog: newProgress(s.errw, s.c.Bool("no-progress-bar")), batch: batch, poll: poll}
}

// leaderWait bounds how long a plan waits for its partitions to have
// leaders: an election or a hand-off (the last command's preferred-leader
// election, say) takes well under a second.
const leaderWait = 30 * time.Second

// waitLeaders waits until every partition to move has a leader, and
// refuses when one still has none after leaderWait: nothing can change its
// replicas until a quorum of them is back.
func (s *session) waitLeaders(v *clusterView, moves []placement.Move) error {
	deadline := time.Now().Add(leaderWait)
	for {
		var bad []string
		for _, m := range moves {
			for _, p := range v.Parts {
				if p.topic == m.Topic && p.partition == m.Partition && p.Leader < 0 {
					bad = append(bad, p.tp.String())
				}
			}
		}
		if len(bad) == 0 {
			return nil
		}
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			return cli.Exit(fmt.Sprintf("refused: partition(s) %s have no leader, so their replicas cannot change; "+
				"bring a majority of their replicas back first", strings.Join(bad, ", ")), 1)
		}
		fmt.Fprintf(s.errw, "waiting for a leader of %s\n", strings.Join(bad, ", "))
		select {
		case <-s.ctx.Done():
		case <-time.After(s.c.Duration("poll")):
		}
		nv, err := s.read()
		if err == nil {
			v = nv
		}
	}
}

// execute prints the plan and, unless dry, carries it out, then elects
// the preferred leaders of what moved.
func (s *session) execute(what string, v *clusterView, pl placement.Plan, dry bool) (runSummary, error) {
	printPlan(s.out, pl)
	if dry || len(pl.Moves) == 0 {
		if len(pl.Moves) == 0 {
			fmt.Fprintln(s.out, "nothing to move")
		}
		return runSummary{}, nil
	}
	if err := s.waitLeaders(v, pl.Moves); err != nil {
		return runSummary{}, err
	}
	mv := s.mover()
	if mv.batch > 0 {
		fmt.Fprintf(s.out, "%s: moving %d partition(s), at most %d at once\n", what, len(pl.Moves), mv.batch)
	} else {
		fmt.Fprintf(s.out, "%s: moving %d partition(s), as many at once as the cluster's max_concurrent_moves\n", what, len(pl.Moves))
	}
	sum, err := mv.run(s.ctx, pl.Moves, nil)
	if err != nil {
		return sum, s.interrupted(err, sum)
	}
	fmt.Fprintf(s.out, "%s complete: %s\n", what, sum)
	if err := electPreferred(s.ctx, s.adm, s.out, pl.Moves); err != nil {
		fmt.Fprintln(s.out, "warning:", err)
	}
	if sum.failed > 0 {
		return sum, cli.Exit(fmt.Sprintf("%s: %d move(s) failed (see above); run it again to retry", what, sum.failed), 1)
	}
	return sum, nil
}

// refusal turns a planner refusal into an exit with its reason.
func refusal(what string, err error) error {
	var re *placement.RefusedError
	if errors.As(err, &re) {
		return cli.Exit(what+" refused: "+re.Reason, 1)
	}
	return err
}

func brokerArg(c *cli.Context, cmd string) (int32, error) {
	a := c.Args().First()
	if a == "" {
		return 0, fmt.Errorf("%s: the broker id N is required", cmd)
	}
	id, err := strconv.ParseInt(a, 10, 32)
	if err != nil || id < 0 {
		return 0, fmt.Errorf("%s: %q is not a broker id", cmd, a)
	}
	return int32(id), nil
}

func contains(s []int32, x int32) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// interspersed lets flags follow the arguments of a subcommand
// (`cluster replace 3 --with 4`), which urfave/cli v2 would otherwise
// take as arguments: it moves each subcommand's arguments after its flags.
func interspersed(app *cli.App, args []string) []string {
	cmds, i := app.Commands, 1
	var cmd *cli.Command
	for i < len(args) {
		next := findCommand(cmds, args[i])
		if next == nil {
			break
		}
		cmd, cmds = next, next.Subcommands
		i++
	}
	if cmd == nil || len(cmd.Subcommands) > 0 {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	flags := append([]string(nil), args[:i]...)
	var rest []string
	for j := i; j < len(args); j++ {
		a := args[j]
		switch {
		case a == "--":
			rest = append(rest, args[j:]...)
			j = len(args)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && j+1 < len(args) {
				j++
				flags = append(flags, args[j])
			}
		default:
			rest = append(rest, a)
		}
	}
	return append(flags, rest...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
