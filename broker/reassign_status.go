package broker

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronik-dev/chronik/admin"
)

// Visibility of moves: /partitions and /health show each moving
// partition's target, adding and removing replicas, and, on the node
// driving it, the learners and how far behind they are; the metrics below
// count the same.

// moveStatus fills the reassignment fields of a partition's status.
func (b *Broker) moveStatus(ps *admin.PartitionStatus, pm *partitionMeta) {
	if r := b.host.Replica(pm.Group); r != nil {
		if st := r.Status(); st.IsLeader() {
			ps.Learners = toInt32s(st.Learners)
		}
	}
	if !pm.moving() {
		return
	}
	ps.Target, ps.Adding, ps.Removing, ps.Queued = pm.Target, pm.adding(), pm.removing(), pm.queued()
	ps.EntriesBehind = -1
	if pr, ok := b.mover.progress(pm.Group); ok {
		ps.EntriesBehind = 0
		for _, n := range pr.Behind {
			ps.EntriesBehind += int64(n)
		}
	}
}

var (
	reassigningDesc = prometheus.NewDesc("chronik_partitions_reassigning",
		"Partitions whose reassignment is running (the cluster's metadata, the same on every node).", nil, nil)
	queuedDesc = prometheus.NewDesc("chronik_reassignments_queued",
		"Reassignments waiting for a slot (max_concurrent_moves; the cluster's metadata, the same on every node).", nil, nil)
	entriesBehindDesc = prometheus.NewDesc("chronik_reassignment_entries_behind",
		"Entries the replicas a move adds trail the leader's log, per partition whose move this node drives.", []string{"partition"}, nil)
	learnersDesc = prometheus.NewDesc("chronik_raft_learners",
		"Learners (non-voting replicas catching up) of each group this node leads.", []string{"partition"}, nil)
)

// moveCollector reports the reassignment gauges at scrape time.
type moveCollector struct{ b *Broker }

func (c moveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- reassigningDesc
	ch <- queuedDesc
	ch <- entriesBehindDesc
	ch <- learnersDesc
}

func (c moveCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	moving, queued := 0, 0
	for _, t := range b.metaSM.topics() {
		for i := range t.Partitions {
			pm := &t.Partitions[i]
			if pm.queued() {
				queued++
			}
			if !pm.running() {
				continue
			}
			moving++
			if pr, ok := b.mover.progress(pm.Group); ok {
				behind := 0.0
				for _, n := range pr.Behind {
					behind += float64(n)
				}
				ch <- prometheus.MustNewConstMetric(entriesBehindDesc, prometheus.GaugeValue, behind, t.Name+"-"+strconv.Itoa(i))
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(reassigningDesc, prometheus.GaugeValue, float64(moving))
	ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(queued))
	for _, r := range b.host.Replicas() {
		if st := r.Status(); st.IsLeader() {
			ch <- prometheus.MustNewConstMetric(learnersDesc, prometheus.GaugeValue, float64(len(st.Learners)), r.Name())
		}
	}
}
