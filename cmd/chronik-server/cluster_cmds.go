package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/urfave/cli/v2"

	"github.com/chronik-dev/chronik/broker"
	"github.com/chronik-dev/chronik/internal/placement"
)

func clusterStatus(c *cli.Context) error {
	s, err := openSession(c)
	if err != nil {
		return err
	}
	defer s.stop()
	v, err := s.read()
	if err != nil {
		return err
	}
	printStatus(s, v)
	return nil
}

func printStatus(s *session, v *clusterView) {
	fmt.Fprintf(s.out, "cluster %s, controller %d, %d partition(s)\n", v.ClusterID, v.Controller, len(v.Parts))
	tw := tabwriter.NewWriter(s.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BROKER\tADDRESS\tRACK\tSTATE\tUP\tREPLICAS\tLEADERS")
	load := v.load()
	listed := map[int32]bool{}
	for _, b := range v.Brokers {
		listed[b.ID] = true
		rack := b.Rack
		if rack == "" {
			rack = "-"
		}
		up := "yes"
		if !b.Up {
			up = "NO"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\n", b.ID, b.Addr, rack, b.State, up, load[b.ID].Replicas, load[b.ID].Leaders)
	}
	for _, id := range sortedKeys(load) {
		if !listed[id] {
			fmt.Fprintf(tw, "%d\t-\t-\tnot listed\tNO\t%d\t%d\n", id, load[id].Replicas, load[id].Leaders)
		}
	}
	tw.Flush()
	if voters, from := s.metadataVoters(v); len(voters) > 0 {
		fmt.Fprintf(s.out, "metadata voters: %v (from %s)\n", voters, from)
	}
	switch {
	case v.MovesUnknown != nil:
		fmt.Fprintf(s.out, "moves in progress: unknown (%v)\n", v.MovesUnknown)
	case len(v.Moving) == 0:
		fmt.Fprintln(s.out, "moves in progress: none")
	default:
		fmt.Fprintf(s.out, "moves in progress: %d\n", len(v.Moving))
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tREPLICAS\tADDING\tREMOVING\tLEADER")
		for _, p := range v.Parts {
			if m, ok := v.Moving[p.tp]; ok {
				fmt.Fprintf(tw, "%s\t%d\t%v\t%v\t%v\t%d\n", p.topic, p.partition, m.Replicas, m.Adding, m.Removing, p.Leader)
			}
		}
		tw.Flush()
	}
	var offline []string
	for _, p := range v.Parts {
		if p.Leader < 0 {
			offline = append(offline, p.tp.String())
		}
	}
	if len(offline) > 0 {
		fmt.Fprintf(s.out, "partitions without a leader: %s\n", strings.Join(offline, ", "))
	}
}

func clusterRebalance(c *cli.Context, dry bool) error {
	s, err := openSession(c)
	if err != nil {
		return err
	}
	defer s.stop()
	_, err = rebalance(s, dry)
	return err
}

func rebalance(s *session, dry bool) (runSummary, error) {
	v, err := s.readMovable(dry)
	if err != nil {
		return runSummary{}, err
	}
	if !dry {
		if v, err = s.settle(v); err != nil {
			return runSummary{}, err
		}
	} else if len(v.Moving) > 0 {
		fmt.Fprintf(s.out, "%d move(s) in progress; the plan takes them as done\n", len(v.Moving))
	}
	bs, ps := v.planInput()
	pl, err := placement.Rebalance(bs, ps)
	if err != nil {
		return runSummary{}, refusal("rebalance", err)
	}
	return s.execute("rebalance", v, pl, dry)
}

func clusterDecommission(c *cli.Context) error {
	n, err := brokerArg(c, "decommission")
	if err != nil {
		return err
	}
	s, err := openSession(c)
	if err != nil {
		return err
	}
	defer s.stop()
	dry := c.Bool("dry-run")
	v, err := s.readMovable(dry)
	if err != nil {
		return err
	}
	if !dry {
		if v, err = s.settle(v); err != nil {
			return err
		}
	}
	voters, from := s.metadataVoters(v)
	var live []int32
	for _, b := range v.Brokers {
		if b.Up {
			live = append(live, b.ID)
		}
	}
	if err := placement.MetadataQuorumAfter(voters, live, n); err != nil {
		return refusal(fmt.Sprintf("decommission %d (metadata voters from %s)", n, from), err)
	}
	if _, listed := v.broker(n); listed && !dry && !v.holds(n) {
		// Empty already (a dead broker replaced, say): only the removal,
		// which moves its metadata vote first if it has one.
		return s.retire(n)
	}
	bs, ps := v.planInput()
	pl, err := placement.Decommission(bs, ps, n)
	if err != nil {
		return refusal(fmt.Sprintf("decommission %d", n), err)
	}
	if slices.Contains(voters, n) {
		fmt.Fprintf(s.out, "note: broker %d votes in the cluster metadata group %v (from %s); its vote moves to another broker (or goes, where 3 voters stay) before it is marked removed\n", n, voters, from)
	}
	start := time.Now()
	if _, err := s.execute(fmt.Sprintf("decommission %d", n), v, pl, dry); err != nil || dry {
		return err
	}
	if err := s.retire(n); err != nil {
		return err
	}
	if voters, from := s.metadataVotersSkipping(v, n); len(voters) > 0 {
		fmt.Fprintf(s.out, "metadata voters now %v (from %s)\n", voters, from)
	}
	fmt.Fprintf(s.out, "decommission %d took %s\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}

// unregister sends UnregisterBroker for n until it is answered for good:
// the cluster first moves a metadata voter's vote to another broker, and
// answers REASSIGNMENT_IN_PROGRESS while that goes on. It returns why n
// was not marked removed ("" when it was).
func (s *session) unregister(v *clusterView, n int32) string {
	// Asked of another broker: n itself, once removed, is cut off from
	// the metadata and could not see its own removal apply.
	var to kmsg.Requestor = s.cl
	pick := int32(-1)
	for _, b := range v.Brokers {
		if b.ID != n && b.Up && (pick < 0 || b.ID == v.Controller) {
			pick = b.ID // the controller, else the first one up
		}
	}
	if pick >= 0 {
		to = s.cl.Broker(int(pick))
	}
	last := ""
	for {
		req := kmsg.NewPtrUnregisterBrokerRequest()
		req.BrokerID = n
		// The broker waits up to 10 s for a vote move before answering.
		rctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
		resp, err := req.RequestWith(rctx, to)
		cancel()
		switch {
		case err != nil:
			return err.Error()
		case resp.ErrorCode == kerr.ReassignmentInProgress.Code:
			msg := kerrName(resp.ErrorCode)
			if resp.ErrorMessage != nil {
				msg = *resp.ErrorMessage
			}
			if msg != last {
				fmt.Fprintln(s.errw, msg)
				last = msg
			}
			select {
			case <-s.ctx.Done():
				return msg + " (" + s.ctx.Err().Error() + ")"
			case <-time.After(s.c.Duration("poll")):
			}
			continue
		case resp.ErrorCode == kerr.BrokerIDNotRegistered.Code && s.unlisted(n):
			// An earlier attempt (the client retries one whose connection
			// was cut: n itself may have answered) removed it already.
			return ""
		case resp.ErrorCode != 0:
			why := kerrName(resp.ErrorCode)
			if resp.ErrorMessage != nil {
				why += ": " + *resp.ErrorMessage
			}
			return why
		}
		return ""
	}
}

// retire checks that n holds no replica any more and marks it removed
// with UnregisterBroker (Kafka's API for it) where the cluster serves it.
func (s *session) retire(n int32) error {
	v, err := s.read()
	if err != nil {
		return err
	}
	var left []string
	for _, p := range v.Parts {
		if slices.Contains(v.current(p), n) {
			left = append(left, p.tp.String())
		}
	}
	if len(left) > 0 {
		return cli.Exit(fmt.Sprintf("broker %d still holds replicas of %s; run the command again", n, strings.Join(left, ", ")), 1)
	}
	fmt.Fprintf(s.out, "broker %d holds no replicas\n", n)
	if !supports(s.ctx, s.adm, 64) {
		fmt.Fprintf(s.out, "this cluster does not serve UnregisterBroker: broker %d is empty and can be stopped; "+
			"remove its [[nodes]] entry from cluster.toml afterwards\n", n)
		return nil
	}
	why := s.unregister(v, n)
	if why != "" {
		return cli.Exit(fmt.Sprintf("broker %d holds no replicas, but the cluster did not mark it removed (%s); "+
			"keep it running, and run the command again once that is resolved", n, why), 1)
	}
	fmt.Fprintf(s.out, "broker %d marked removed; it can be stopped now\n", n)
	return nil
}

func clusterReplace(c *cli.Context) error {
	n, err := brokerArg(c, "replace")
	if err != nil {
		return err
	}
	with := int32(c.Int("with"))
	s, err := openSession(c)
	if err != nil {
		return err
	}
	defer s.stop()
	dry := c.Bool("dry-run")
	v, err := s.readMovable(dry)
	if err != nil {
		return err
	}
	if b, ok := v.broker(with); !ok || !b.Up {
		return cli.Exit(fmt.Sprintf("replace refused: broker %d is not listed or does not answer; start it first (see `cluster add-node`)", with), 1)
	}
	if !dry {
		if v, err = s.settle(v); err != nil {
			return err
		}
	}
	bs, ps := v.planInput()
	pl, err := placement.Replace(bs, ps, n, with)
	if err != nil {
		return refusal(fmt.Sprintf("replace %d", n), err)
	}
	if _, err := s.execute(fmt.Sprintf("replace %d with %d", n, with), v, pl, dry); err != nil || dry {
		return err
	}
	if err := s.moveMetaVote(v, n, with); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "broker %d's replicas are on %d now; `chronik-server cluster decommission %d` marks it removed\n", n, with, n)
	return nil
}

func clusterAddNode(c *cli.Context) error {
	n, err := brokerArg(c, "add-node")
	if err != nil {
		return err
	}
	f := c.String("cluster-config")
	if f == "" {
		return fmt.Errorf("add-node: --cluster-config is required: the new node needs its own [[nodes]] entry in it")
	}
	cf, err := broker.LoadClusterFile(f)
	if err != nil {
		return err
	}
	spec, ok := cf.Node(n)
	if !ok {
		fmt.Fprintf(c.App.Writer, "node %d has no [[nodes]] entry in %s. Add one (addresses as the node's host reaches them),\n"+
			"copy the file to the new node, and start it there:\n\n"+
			"[[nodes]]\nid = %d\nkafka = \"HOST:9092\"\nraft = \"HOST:9093\"\nadmin = \"HOST:3000\"\n# rack = \"...\"\n\n"+
			"  chronik-server --node-id %d --cluster-config cluster.toml --data-dir /var/lib/chronik\n", n, f, n, n)
		return cli.Exit(fmt.Sprintf("add-node: no [[nodes]] entry for %d in %s", n, f), 1)
	}
	var missing []string
	for name, addr := range map[string]string{"kafka": spec.Kafka, "raft": spec.Raft, "admin": spec.Admin} {
		if addr == "" && (name != "kafka" || len(spec.Listeners) == 0) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return cli.Exit(fmt.Sprintf("add-node: node %d's entry in %s has no %s address", n, f, strings.Join(missing, ", ")), 1)
	}
	rack := spec.Rack
	if rack == "" {
		rack = "none"
	}
	s, err := openSession(c)
	if err != nil {
		return err
	}
	defer s.stop()
	fmt.Fprintf(s.out, "node %d: kafka %s, raft %s, admin %s, rack %s\n", n, spec.Kafka, spec.Raft, spec.Admin, rack)
	fmt.Fprintf(s.out, "start it with: chronik-server --node-id %d --cluster-config %s --data-dir DIR\n", n, f)
	start := time.Now()
	if err := s.waitRegistered(n); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "node %d has joined (listed in DescribeCluster and answering) after %s\n", n, time.Since(start).Round(time.Millisecond))
	if !c.Bool("rebalance") {
		fmt.Fprintf(s.out, "it holds no replicas yet: `chronik-server cluster rebalance` gives it its share\n")
		return nil
	}
	_, err = rebalance(s, c.Bool("dry-run"))
	return err
}

// waitRegistered waits until broker n is listed by DescribeCluster as
// active and answers, printing what it waits for when that changes.
func (s *session) waitRegistered(n int32) error {
	tick := time.NewTicker(s.c.Duration("poll"))
	defer tick.Stop()
	last := ""
	for {
		status := s.joinStatus(n)
		if status == "" {
			return nil
		}
		if status != last {
			fmt.Fprintln(s.errw, status)
			last = status
		}
		select {
		case <-s.ctx.Done():
			return cli.Exit(fmt.Sprintf("add-node: node %d has not joined: %s (%v)", n, status, s.ctx.Err()), 1)
		case <-tick.C:
		}
	}
}

// joinStatus says what broker n still lacks to have joined ("" = nothing).
func (s *session) joinStatus(n int32) string {
	v, err := readCluster(s.ctx, s.adm, s.cl, s.adminNodes())
	if err != nil {
		return err.Error()
	}
	b, ok := v.broker(n)
	switch {
	case !ok:
		return fmt.Sprintf("waiting for node %d to register", n)
	case !b.Up:
		return fmt.Sprintf("node %d is registered but does not answer yet", n)
	case b.State != "active":
		return fmt.Sprintf("node %d is %s", n, b.State)
	}
	return ""
}

func clusterCancel(c *cli.Context) error {
	s, err := openSession(c)
	if err != nil {
		return err
	}
	defer s.stop()
	v, err := s.readMovable(false)
	if err != nil {
		return err
	}
	only := c.StringSlice("topic")
	var req kadm.AlterPartitionAssignmentsReq
	set := kadm.TopicsSet{}
	for _, p := range v.Parts {
		if _, ok := v.Moving[p.tp]; ok && (len(only) == 0 || slices.Contains(only, p.topic)) {
			req.Assign(p.topic, p.partition, nil)
			set.Add(p.topic, p.partition)
		}
	}
	if len(set) == 0 {
		fmt.Fprintln(s.out, "no moves in progress")
		return nil
	}
	rctx, cancel := context.WithTimeout(s.ctx, reqTimeout)
	defer cancel()
	resp, err := s.adm.AlterPartitionAssignments(rctx, req)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range resp.Sorted() {
		switch {
		case r.Err == nil:
			fmt.Fprintf(s.out, "cancelling %s-%d\n", r.Topic, r.Partition)
		case errors.Is(r.Err, kerr.NoReassignmentInProgress):
			fmt.Fprintf(s.out, "%s-%d finished meanwhile\n", r.Topic, r.Partition)
		default:
			failed++
			fmt.Fprintf(s.out, "%s-%d: %v %s\n", r.Topic, r.Partition, r.Err, r.ErrMessage)
		}
	}
	// Wait until the cancelled moves are no longer listed.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		lctx, lcancel := context.WithTimeout(s.ctx, reqTimeout)
		rs, err := s.adm.ListPartitionReassignments(lctx, set)
		lcancel()
		left := 0
		if err == nil {
			rs.Each(func(r kadm.ListPartitionReassignmentsResponse) {
				if len(r.AddingReplicas) > 0 || len(r.RemovingReplicas) > 0 {
					left++
				}
			})
			if left == 0 {
				break
			}
		}
		select {
		case <-s.ctx.Done():
			return cli.Exit(fmt.Sprintf("cancel: %d move(s) still listed after --timeout", left), 1)
		case <-tick.C:
		}
	}
	fmt.Fprintf(s.out, "cancelled: no move in progress on those partitions\n")
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("cancel: %d partition(s) could not be cancelled", failed), 1)
	}
	return nil
}

// kerrName is an error code's Kafka name (INVALID_REQUEST), without the
// long description kerr's errors carry.
func kerrName(code int16) string {
	var ke *kerr.Error
	if errors.As(kerr.ErrorForCode(code), &ke) {
		return ke.Message
	}
	return fmt.Sprintf("error code %d", code)
}
