package broker

import (
	"os"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chronik-dev/chronik/admin"
)

// adminSource implements admin.Source.
type adminSource struct{ b *Broker }

var _ admin.Source = adminSource{}

func (a adminSource) NodeID() int32 { return a.b.cfg.NodeID }

func (a adminSource) ShuttingDown() bool {
	select {
	case <-a.b.shutting:
		return true
	default:
		return false
	}
}

func (a adminSource) Ready() (bool, string) {
	if !a.b.ready.Load() {
		return false, "waiting for cluster metadata"
	}
	if a.b.meta.Status().Leader == 0 {
		return false, "no metadata leader"
	}
	return true, ""
}

func (a adminSource) Nodes() []admin.NodeStatus {
	return a.b.nodeStatuses()
}

func (a adminSource) Partitions() []admin.PartitionStatus { return a.b.partitionStatuses() }

func (a adminSource) Process() admin.ProcessInfo {
	return admin.ProcessInfo{PID: os.Getpid(), StartedAt: a.b.started}
}

// partitionStatuses describes every partition, the metadata group first.
func (b *Broker) partitionStatuses() []admin.PartitionStatus {
	var out []admin.PartitionStatus
	out = append(out, b.groupStatus(metaName[:len(metaName)-2], 0, b.metaPartition(), true))
	for _, t := range b.metaSM.topics() {
		for i, pm := range t.Partitions {
			out = append(out, b.groupStatus(t.Name, int32(i), pm, t.Internal))
		}
	}
	return out
}

func (b *Broker) groupStatus(topic string, index int32, pm partitionMeta, internal bool) admin.PartitionStatus {
	pi := b.partitionInfo(index, pm)
	ps := admin.PartitionStatus{Topic: topic, Partition: index, Replicas: pm.Replicas, InSyncReplicas: pi.ISR,
		LeaderEpoch: int64(pi.LeaderEpoch), HighWatermark: -1, LogStartOffset: -1, Internal: internal}
	if pi.Leader > 0 {
		ps.Leader = pi.Leader
	}
	if r := b.host.Replica(pm.Group); r != nil {
		ps.AppliedIndex = r.Status().Applied
		ps.LogStartOffset = r.Log().StartOffset()
	}
	if p := b.localPartition(pm.Group); p != nil {
		ps.HighWatermark = p.hw.Load()
	}
	if r := b.host.Replica(pm.Group); r != nil && r.Status().Failed {
		ps.Failed = b.failure(r.Name())
	}
	b.moveStatus(&ps, &pm)
	switch {
	case ps.Failed != "":
		ps.Status = admin.StatusFailed
	case ps.Leader == 0:
		ps.Status = "offline"
	case len(ps.InSyncReplicas) < pm.replicationFactor():
		ps.Status = "under_replicated"
	default:
		ps.Status = "healthy"
	}
	return ps
}

// onStorageError runs when a replica stopped after a storage error; the
// error is kept for /health and /partitions.
func (b *Broker) onStorageError(name string, err error) {
	b.logger.Error("partition stopped by a storage error; the node keeps serving the others", "partition", name, "err", err)
	b.failMu.Lock()
	b.failures[name] = err.Error()
	b.failMu.Unlock()
}

// failure is why replica name failed (its status says it did).
func (b *Broker) failure(name string) string {
	b.failMu.Lock()
	defer b.failMu.Unlock()
	if why := b.failures[name]; why != "" {
		return why
	}
	return "storage error"
}

// partitionCollector reports partition gauges at scrape time, so nothing
// needs updating on the hot path.
type partitionCollector struct{ b *Broker }

var (
	leaderCountDesc = prometheus.NewDesc("chronik_partition_leader_count",
		"Partitions (including internal ones) whose leader is the node.", []string{"node"}, nil)
	isrCountDesc = prometheus.NewDesc("chronik_partition_isr_count",
		"In-sync replicas of each partition, as this node knows them.", []string{"partition"}, nil)
	raftTermDesc = prometheus.NewDesc("chronik_raft_term",
		"Raft term (Kafka leader epoch) of each local replica.", []string{"partition"}, nil)
	raftAppliedDesc = prometheus.NewDesc("chronik_raft_applied_index",
		"Last applied Raft index of each local replica.", []string{"partition"}, nil)
	raftCommitDesc = prometheus.NewDesc("chronik_raft_commit_index",
		"Raft commit index of each local replica.", []string{"partition"}, nil)
	raftLeaderDesc = prometheus.NewDesc("chronik_raft_is_leader",
		"1 when the local replica leads its group.", []string{"partition"}, nil)
	hwDesc = prometheus.NewDesc("chronik_partition_high_watermark",
		"High watermark of each local data partition.", []string{"partition"}, nil)
	failedDesc = prometheus.NewDesc("chronik_partition_failed",
		"1 when the local replica stopped after a storage error (see /partitions for the error).", []string{"partition"}, nil)
)

func (c *partitionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{leaderCountDesc, isrCountDesc, raftTermDesc, raftAppliedDesc, raftCommitDesc, raftLeaderDesc, hwDesc, failedDesc} {
		ch <- d
	}
}

func (c *partitionCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	if b.meta == nil {
		return
	}
	counts := map[int32]int{}
	for _, n := range b.clusterNodes() {
		counts[n.ID] = 0
	}
	for _, ps := range b.partitionStatuses() {
		name := ps.Topic + "-" + strconv.Itoa(int(ps.Partition))
		if ps.Leader > 0 {
			counts[ps.Leader]++
		}
		ch <- prometheus.MustNewConstMetric(isrCountDesc, prometheus.GaugeValue, float64(len(ps.InSyncReplicas)), name)
		if ps.HighWatermark >= 0 {
			ch <- prometheus.MustNewConstMetric(hwDesc, prometheus.GaugeValue, float64(ps.HighWatermark), name)
		}
	}
	for node, n := range counts {
		ch <- prometheus.MustNewConstMetric(leaderCountDesc, prometheus.GaugeValue, float64(n), strconv.Itoa(int(node)))
	}
	for _, r := range b.host.Replicas() {
		st := r.Status()
		ch <- prometheus.MustNewConstMetric(raftTermDesc, prometheus.GaugeValue, float64(st.Term), r.Name())
		ch <- prometheus.MustNewConstMetric(raftAppliedDesc, prometheus.GaugeValue, float64(st.Applied), r.Name())
		ch <- prometheus.MustNewConstMetric(raftCommitDesc, prometheus.GaugeValue, float64(st.Commit), r.Name())
		lead := 0.0
		if st.IsLeader() {
			lead = 1
		}
		ch <- prometheus.MustNewConstMetric(raftLeaderDesc, prometheus.GaugeValue, lead, r.Name())
		failed := 0.0
		if st.Failed {
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.GaugeValue, failed, r.Name())
	}
}
