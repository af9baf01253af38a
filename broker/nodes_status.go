package broker

import (
	"slices"

	"github.com/chronik-dev/chronik/admin"
)

// nodeStatuses is /nodes: every broker of the cluster (cluster.toml and
// the registry), with its registry state and what it has left to rejoin.
func (b *Broker) nodeStatuses() []admin.NodeStatus {
	var out []admin.NodeStatus
	voters := b.metaVoters()
	for _, n := range b.clusterNodes() {
		ns := admin.NodeStatus{ID: n.ID, Kafka: n.Kafka, Admin: n.Admin, Connected: b.host.PeerAlive(uint64(n.ID)), State: n.State,
			MetadataVoter: slices.Contains(voters, n.ID)}
		if n.Reg != nil {
			ns.Incarnation = n.Reg.Incarnation
			ns.RejoiningGroups = len(n.Reg.Rejoin)
		}
		out = append(out, ns)
	}
	return out
}

// metaVoters is the metadata group's voters as this node knows them: its
// replica's configuration, or before that the voters it was bootstrapped
// with.
func (b *Broker) metaVoters() []int32 {
	if b.meta != nil {
		if vs := b.meta.Status().Voters; len(vs) > 0 {
			return toInt32s(vs)
		}
	}
	return b.ident().MetaVoters
}

// metaPartition is the metadata group as /partitions and /health list
// it: its voters, and during a vote move the target as a reassignment.
func (b *Broker) metaPartition() partitionMeta {
	voters := b.metaVoters()
	pm := partitionMeta{Group: metaGroup, Replicas: voters}
	if _, target := b.metaSM.metaVoterMove(); target != nil && !slices.Equal(target, voters) {
		pm.Replicas = append(slices.Clone(target), minus(voters, target)...)
		pm.Target, pm.Prior = target, voters
	}
	return pm
}
