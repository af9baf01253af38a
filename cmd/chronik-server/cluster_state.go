package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/chronik-dev/chronik/internal/placement"
)

// reqTimeout bounds each exchange with the cluster, so that a node that
// accepts connections but does not answer (one still starting, or frozen)
// costs a retry, not the command; upTimeout bounds the ApiVersions round
// that tells which brokers are up.
const (
	reqTimeout = 15 * time.Second
	upTimeout  = 3 * time.Second
)

// tp names a partition.
type tp struct {
	topic     string
	partition int32
}

func (p tp) String() string { return fmt.Sprintf("%s-%d", p.topic, p.partition) }

// brokerView is a broker as the cluster reports it.
type brokerView struct {
	ID    int32
	Addr  string
	Rack  string
	State string // "active", or the admin /nodes state (draining, removed)
	Up    bool   // answered ApiVersions just now
}

// partView is a partition as Metadata reports it.
type partView struct {
	tp
	Leader   int32
	Replicas []int32 // during a move: the target first, then the replicas leaving
	ISR      []int32
	Internal bool
}

// moving is a reassignment in progress (ListPartitionReassignments).
type moving struct {
	Replicas, Adding, Removing []int32
}

// target is where a moving partition is going: its replicas without the
// ones being removed, in order (Kafka lists the target first).
func (m moving) target() []int32 {
	var out []int32
	for _, r := range m.Replicas {
		if !slices.Contains(m.Removing, r) {
			out = append(out, r)
		}
	}
	return out
}

// clusterView is everything the commands plan from. It is read afresh
// each time: a command keeps no state of its own, so re-running it after
// it (or the node it talked to) died continues from what the cluster says.
type clusterView struct {
	ClusterID  string
	Controller int32
	Brokers    []brokerView // sorted by id
	Parts      []partView   // sorted by topic, partition
	Moving     map[tp]moving
	// MovesUnknown is set when the cluster does not serve
	// ListPartitionReassignments (its error).
	MovesUnknown error
}

func (v *clusterView) broker(id int32) (brokerView, bool) {
	for _, b := range v.Brokers {
		if b.ID == id {
			return b, true
		}
	}
	return brokerView{}, false
}

// current is a partition's replica list with moves in flight taken as
// done: what a plan starts from.
func (v *clusterView) current(p partView) []int32 {
	if m, ok := v.Moving[p.tp]; ok {
		return m.target()
	}
	return p.Replicas
}

// planInput turns the view into the planner's input: the active brokers
// and every partition with its current (or target) replicas.
func (v *clusterView) planInput() ([]placement.Broker, []placement.Partition) {
	var bs []placement.Broker
	for _, b := range v.Brokers {
		if b.State == "active" {
			bs = append(bs, placement.Broker{ID: b.ID, Rack: b.Rack})
		}
	}
	var ps []placement.Partition
	for _, p := range v.Parts {
		ps = append(ps, placement.Partition{Topic: p.topic, Partition: p.partition, Replicas: v.current(p)})
	}
	return bs, ps
}

// load counts the replicas and leaderships each broker holds now.
func (v *clusterView) load() map[int32]placement.Load {
	out := map[int32]placement.Load{}
	for _, p := range v.Parts {
		for _, r := range v.current(p) {
			l := out[r]
			l.Replicas++
			out[r] = l
		}
		if p.Leader >= 0 {
			l := out[p.Leader]
			l.Leaders++
			out[p.Leader] = l
		}
	}
	return out
}

// readCluster reads brokers (DescribeCluster), partitions (Metadata) and
// moves in progress (ListPartitionReassignments). states, when not nil,
// gives brokers' states from the admin /nodes endpoint.
func readCluster(ctx context.Context, adm *kadm.Client, cl *kgo.Client, states map[int32]string) (*clusterView, error) {
	ctx, cancel := context.WithTimeout(ctx, reqTimeout)
	defer cancel()
	v := &clusterView{Moving: map[tp]moving{}}
	dreq := kmsg.NewPtrDescribeClusterRequest()
	dresp, err := dreq.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("DescribeCluster: %w", err)
	}
	if err := kerr.ErrorForCode(dresp.ErrorCode); err != nil {
		return nil, fmt.Errorf("DescribeCluster: %w", err)
	}
	v.ClusterID, v.Controller = dresp.ClusterID, dresp.ControllerID
	up := reachable(ctx, adm, cl)
	for _, b := range dresp.Brokers {
		bv := brokerView{ID: b.NodeID, Addr: fmt.Sprintf("%s:%d", b.Host, b.Port), State: "active", Up: up[b.NodeID]}
		if b.Rack != nil {
			bv.Rack = *b.Rack
		}
		if b.IsFenced {
			bv.State = "fenced"
		}
		if s, ok := states[b.NodeID]; ok && s != "" {
			bv.State = s
		}
		v.Brokers = append(v.Brokers, bv)
	}
	sort.Slice(v.Brokers, func(i, j int) bool { return v.Brokers[i].ID < v.Brokers[j].ID })
	parts, err := controllerMetadata(ctx, cl, v.Controller, nil)
	if err != nil {
		return nil, err
	}
	set := kadm.TopicsSet{}
	for _, p := range parts {
		v.Parts = append(v.Parts, p)
		set.Add(p.topic, p.partition)
	}
	if len(set) == 0 {
		return v, nil
	}
	rs, err := adm.ListPartitionReassignments(ctx, set)
	if err != nil {
		v.MovesUnknown = fmt.Errorf("ListPartitionReassignments: %w", err)
		return v, nil
	}
	rs.Each(func(r kadm.ListPartitionReassignmentsResponse) {
		if len(r.AddingReplicas) > 0 || len(r.RemovingReplicas) > 0 || len(r.Replicas) > 0 {
			v.Moving[tp{r.Topic, r.Partition}] = moving{Replicas: r.Replicas, Adding: r.AddingReplicas, Removing: r.RemovingReplicas}
		}
	})
	return v, nil
}

// controllerMetadata reads topics (all when nil) from the controller, the
// metadata group's leader, whose view is the newest: a node that has just
// joined answers Metadata before it has caught up, and a plan made from
// its view would be wrong. Any node answers when there is no controller.
// Partitions come sorted by topic, partition.
func controllerMetadata(ctx context.Context, cl *kgo.Client, controller int32, topics []string) ([]partView, error) {
	req := kmsg.NewPtrMetadataRequest()
	if topics != nil {
		req.Topics = []kmsg.MetadataRequestTopic{}
		for _, t := range topics {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(t)
			req.Topics = append(req.Topics, rt)
		}
	}
	var resp *kmsg.MetadataResponse
	var err error
	if controller >= 0 {
		resp, err = req.RequestWith(ctx, cl.Broker(int(controller)))
	}
	if controller < 0 || err != nil {
		resp, err = req.RequestWith(ctx, cl)
	}
	if err != nil {
		return nil, fmt.Errorf("Metadata: %w", err)
	}
	var out []partView
	for _, t := range resp.Topics {
		name := ""
		if t.Topic != nil {
			name = *t.Topic
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return nil, fmt.Errorf("Metadata: topic %s: %w", name, err)
		}
		for _, p := range t.Partitions {
			out = append(out, partView{tp: tp{name, p.Partition}, Leader: p.Leader, Replicas: p.Replicas, ISR: p.ISR, Internal: t.IsInternal})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].topic != out[j].topic {
			return out[i].topic < out[j].topic
		}
		return out[i].partition < out[j].partition
	})
	return out, nil
}

// controllerID asks any node which broker is the controller (-1: none).
func controllerID(ctx context.Context, cl *kgo.Client) int32 {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return -1
	}
	return resp.ControllerID
}

// reachable asks every broker for its API versions: the ones that answer
// are up.
func reachable(ctx context.Context, adm *kadm.Client, cl *kgo.Client) map[int32]bool {
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	out := map[int32]bool{}
	// ApiVersions asks the brokers the client knows: refresh that list
	// first (an uncached Metadata request updates it), so a node that
	// joined after the client connected is asked too.
	mreq := kmsg.NewPtrMetadataRequest()
	mreq.Topics = []kmsg.MetadataRequestTopic{}
	mreq.RequestWith(ctx, cl)
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return out
	}
	vs.Each(func(v kadm.BrokerApiVersions) {
		out[v.NodeID] = v.Err == nil
	})
	return out
}

// supports reports whether every broker that answers serves key.
func supports(ctx context.Context, adm *kadm.Client, key int16) bool {
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	vs, err := adm.ApiVersions(ctx)
	if err != nil {
		return false
	}
	ok, any := true, false
	vs.Each(func(v kadm.BrokerApiVersions) {
		if v.Err != nil {
			return
		}
		any = true
		if _, _, served := v.KeyVersions(key); !served {
			ok = false
		}
	})
	return ok && any
}
