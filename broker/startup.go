package broker

import (
	"context"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/kafka"
	"github.com/chronik-dev/chronik/raft"
)

// Startup: the preferred replicas stand for election at once, the metadata
// leader creates the offsets topic, and the node serves clients and says it
// is ready once its partitions know their leaders.

// campaignIfPreferred makes the preferred replica of a new or restarted
// group stand for election at once, and again every campaignRetry while no
// leader is known and its peers may still be opening the group (their
// votes are lost until then): leadership starts where the rebalancer would
// put it, instead of landing at random and moving a few seconds later
// under the clients. A vote that never arrived shows no event here, so the
// retry is timed; the end of the wait, a known leader, is watched.
//
// With the automatic rebalance off, a restarted group (one that has had a
// term) does not campaign: as with Kafka's auto.leader.rebalance.enable
// off, leadership stays where it went until an operator runs a preferred
// election (ElectLeaders).
func (b *Broker) campaignIfPreferred(rep *raft.Replica, peers []uint64) {
	if len(peers) == 0 || peers[0] != uint64(b.cfg.NodeID) {
		return
	}
	if !b.cfg.AutoLeaderRebalance && rep.Status().Term > 0 {
		return
	}
	rep.Campaign()
	if len(peers) == 1 {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		giveUp := time.NewTimer(2 * time.Second)
		defer giveUp.Stop()
		retry := time.NewTicker(campaignRetry)
		defer retry.Stop()
		for {
			changed := rep.Changed()
			if rep.Status().Leader != 0 {
				return
			}
			select {
			case <-changed:
			case <-retry.C:
				rep.Campaign()
			case <-giveUp.C:
				return
			case <-b.ctx.Done():
				return
			}
		}
	}()
}

// campaignRetry is how often a preferred replica without a leader stands
// again (raft ignores a campaign while one is under way).
const campaignRetry = 50 * time.Millisecond

// joinTimeout is how long a node waits for a metadata leader before it
// reports that it cannot join the cluster (it keeps trying).
const joinTimeout = 30 * time.Second

// bootstrapLoop makes sure the internal offsets topic exists (the metadata
// leader creates it once), opens the listener and keeps the readiness flag
// current. It runs on changes: of leaders and metadata, of the metadata
// group's status, and at the two deadlines (settleGrace, joinTimeout).
func (b *Broker) bootstrapLoop() {
	defer b.wg.Done()
	settle := time.NewTimer(time.Until(b.started.Add(settleGrace)))
	defer settle.Stop()
	j := joinWatch{timer: time.NewTimer(joinTimeout)}
	defer j.timer.Stop()
	var retry <-chan time.Time
	for {
		changed, metaChanged := b.leaderEvents.wait(), b.meta.Changed()
		j.check(b)
		if !b.bootstrapStep() {
			retry = time.After(100 * time.Millisecond)
		}
		select {
		case <-changed:
		case <-metaChanged:
		case <-settle.C:
		case <-j.timer.C:
		case <-retry:
			retry = nil
		case <-b.ctx.Done():
			return
		}
	}
}

// bootstrapStep serves clients and sets readiness once the offsets topic
// exists, and creates it if this node leads the metadata group. It reports
// false when creating the topic failed (to be retried).
func (b *Broker) bootstrapStep() bool {
	if _, ok := b.metaSM.topic(offsetsTopic); ok {
		settled := b.replicasSettled()
		if settled {
			b.kafka.Serve()
			b.announceServing()
		}
		b.ready.Store(settled)
		return true
	}
	if time.Since(b.started) >= settleGrace {
		b.kafka.Serve() // the cluster may be down: serve what can be served
		b.announceServing()
	}
	st := b.meta.Status()
	if !st.IsLeader() || !st.LeaderReady {
		return true
	}
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	res := b.createTopics(ctx, []kafka.CreateTopic{{Name: offsetsTopic, Partitions: b.cfg.Cluster.OffsetsPartitions,
		ReplicationFactor: -1}}, false, true)
	cancel()
	if res[0].Err != 0 && res[0].Err != kerr.TopicAlreadyExists.Code {
		b.logger.Warn("creating the offsets topic failed; retrying", "err", kerr.ErrorForCode(res[0].Err))
		return false
	}
	return true
}

// joinWatch reports, once per outage, a metadata group that has had no
// leader for joinTimeout; its timer fires when that time is up.
type joinWatch struct {
	timer         *time.Timer
	noLeaderSince time.Time
	warned        bool
}

func (j *joinWatch) check(b *Broker) {
	if b.meta.Status().Leader != 0 {
		j.noLeaderSince, j.warned = time.Time{}, false
		return
	}
	if j.noLeaderSince.IsZero() {
		j.noLeaderSince = time.Now()
		j.timer.Reset(joinTimeout)
		return
	}
	if !j.warned && time.Since(j.noLeaderSince) >= joinTimeout {
		b.logger.Error("Failed to join cluster: no leader elected within "+fmtDur(joinTimeout),
			"hint", "check that a majority of the nodes in the cluster config run and reach each other's raft addresses")
		j.warned = true
	}
}

// replicasSettled reports whether every partition this node hosts is open
// and knows its leader, so clients that connect now find leaders rather
// than LEADER_NOT_AVAILABLE (which makes franz-go wait 5 s to look again).
// After settleGrace it answers true regardless: a partition whose other
// replicas are down must not keep the node unready.
func (b *Broker) replicasSettled() bool {
	if time.Since(b.started) >= settleGrace {
		return true
	}
	if b.meta.Status().Leader == 0 {
		return false
	}
	for _, t := range b.metaSM.topics() {
		for _, pm := range t.Partitions {
			if !slices.Contains(pm.Replicas, b.cfg.NodeID) {
				continue
			}
			r := b.host.Replica(pm.Group)
			if r == nil || r.Status().Leader == 0 {
				return false
			}
		}
	}
	return true
}

// settleGrace bounds how long readiness waits for local partitions to
// elect leaders after a start.
const settleGrace = 5 * time.Second
