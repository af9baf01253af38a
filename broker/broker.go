package broker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/chronik-dev/chronik/admin"
	"github.com/chronik-dev/chronik/coordinator"
	"github.com/chronik-dev/chronik/kafka"
	clog "github.com/chronik-dev/chronik/log"
	"github.com/chronik-dev/chronik/raft"
)

const clogCommand = clog.KindCommand

// Broker is one Chronik node: Raft host, partitions, group coordinator,
// Kafka listener and admin server.
type Broker struct {
	cfg    Config
	logger *slog.Logger
	reg    *prometheus.Registry

	tr     *raft.TCPTransport
	host   *raft.Host
	meta   *raft.Replica
	metaSM *metaSM
	view   *clusterView
	coord  *coordinator.Coordinator
	kafka  *kafka.Server
	admin  *admin.Server

	mu      sync.RWMutex
	parts   map[uint64]*partition
	byTP    map[tpKey]*partition
	offsets map[uint64]*offsetsPartition
	cfgs    map[string]*topicConfig

	reqSeq       atomic.Uint64
	reconcileCh  chan struct{}
	leadershipCh chan struct{}
	shutting     chan struct{}
	shutOnce     sync.Once
	stopped      chan struct{}
	ready        atomic.Bool
	ctx          context.Context
	cancel       context.CancelFunc
	wg           sync.WaitGroup

	started          time.Time
	pidMu            sync.Mutex
	pidNext, pidEnd  int64
	transfersOK      prometheus.Counter
	transfersFailed  prometheus.Counter
	shutdownDuration prometheus.Gauge
	closeOnce        sync.Once
}

type tpKey struct {
	topic string
	part  int32
}

// New builds a broker from cfg; Start runs it.
func New(cfg Config) (*Broker, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{cfg: cfg, logger: cfg.Logger, reg: cfg.Registry, view: newClusterView(),
		parts: map[uint64]*partition{}, byTP: map[tpKey]*partition{}, offsets: map[uint64]*offsetsPartition{},
		cfgs: map[string]*topicConfig{}, reconcileCh: make(chan struct{}, 1), leadershipCh: make(chan struct{}, 1),
		shutting: make(chan struct{}), stopped: make(chan struct{}), ctx: ctx, cancel: cancel, started: time.Now()}
	b.metaSM = newMetaSM(cfg.NodeID, b.metadataChanged)
	if err := b.registerMetrics(); err != nil {
		return nil, err
	}
	self, _ := cfg.Cluster.Node(cfg.NodeID)
	peers := map[uint64]string{}
	for _, n := range cfg.Cluster.Nodes {
		peers[uint64(n.ID)] = n.Raft
	}
	listen := self.RaftListen
	if listen == "" {
		listen = self.Raft
	}
	b.tr = raft.NewTCPTransport(uint64(cfg.NodeID), listen, peers, cfg.Logger)
	policy := raft.FsyncInterval
	if cfg.Fsync == FsyncAlways {
		policy = raft.FsyncAlways
	}
	host, err := raft.NewHost(raft.Config{
		ID: uint64(cfg.NodeID), Transport: b.tr, TickInterval: cfg.RaftTick,
		ElectionTicks: cfg.ElectionTicks, HeartbeatTicks: cfg.HeartbeatTicks,
		Fsync: policy, FsyncInterval: cfg.FsyncInterval, LagTime: cfg.ISRLagTime,
		RetentionInterval: cfg.RetentionInterval, AutoRebalance: cfg.AutoLeaderRebalance,
		RebalanceDelay: cfg.RebalanceDelay, Logger: cfg.Logger,
		// One hard-state file for every partition of the node, so a
		// leadership transfer waits on one fsync per side (raft/doc.go).
		StateDir: cfg.DataDir,
		OnStorageError: func(name string, err error) {
			b.logger.Error("partition stopped by a storage error; the node keeps serving the others", "partition", name, "err", err)
		},
		OnLeaderChange: b.onLeaderChange,
		OnNotice:       b.onNotice,
		OnPeer:         b.onPeer,
	})
	if err != nil {
		return nil, err
	}
	b.host = host
	b.coord = coordinator.New(coordinator.Config{
		Store:  offsetStore{b: b},
		Owns:   b.ownsGroup,
		Logger: cfg.Logger,
	})
	listenKafka := self.KafkaListen
	if listenKafka == "" {
		listenKafka = self.Kafka
	}
	b.kafka, err = kafka.NewServer(kafka.Config{Listen: listenKafka, MaxRequestSize: cfg.MaxRequestSize,
		Backend: b, Logger: cfg.Logger, Registerer: cfg.Registry})
	if err != nil {
		return nil, err
	}
	if self.Admin != "" || self.AdminListen != "" {
		listenAdmin := self.AdminListen
		if listenAdmin == "" {
			listenAdmin = self.Admin
		}
		b.admin, err = admin.New(admin.Config{Listen: listenAdmin, Source: adminSource{b}, Gatherer: cfg.Registry, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *Broker) registerMetrics() error {
	b.transfersOK = prometheus.NewCounter(prometheus.CounterOpts{Name: "chronik_leadership_transfers_total",
		Help: "Leadership transfers made during graceful shutdown, by result.", ConstLabels: prometheus.Labels{"result": "success"}})
	b.transfersFailed = prometheus.NewCounter(prometheus.CounterOpts{Name: "chronik_leadership_transfers_total",
		Help: "Leadership transfers made during graceful shutdown, by result.", ConstLabels: prometheus.Labels{"result": "failed"}})
	b.shutdownDuration = prometheus.NewGauge(prometheus.GaugeOpts{Name: "chronik_shutdown_duration_seconds",
		Help: "Duration of the last graceful shutdown (0 until one has happened)."})
	for _, c := range []prometheus.Collector{
		b.transfersOK, b.transfersFailed, b.shutdownDuration, &partitionCollector{b: b},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := b.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Start opens the metadata group, starts Raft, the listeners and the
// background loops.
func (b *Broker) Start() error {
	var peers []uint64
	for _, n := range b.cfg.Cluster.Nodes {
		peers = append(peers, uint64(n.ID))
	}
	if err := b.host.Start(); err != nil {
		return err
	}
	meta, err := b.host.AddReplica(raft.ReplicaConfig{Group: metaGroup, Name: metaName,
		Dir: filepath.Join(b.cfg.DataDir, metaName), Peers: peers, SM: b.metaSM,
		CompactToSnapshot: true, SnapshotEntries: 5000, ForwardProposals: true,
		Log: clog.Options{SegmentBytes: 16 << 20, Logger: b.logger}})
	if err != nil {
		b.host.Close()
		return err
	}
	b.meta = meta
	b.campaignIfPreferred(meta, peers)
	b.wg.Add(2)
	go b.reconcileLoop()
	go b.bootstrapLoop()
	// The listener is bound now (a port in use fails the start), but
	// accepts only once this node's partitions know their leaders (see
	// bootstrapLoop): a client served earlier would get answers without
	// leader hints and wait for its next metadata refresh.
	if err := b.kafka.Listen(); err != nil {
		b.host.Close()
		return err
	}
	if b.admin != nil {
		if err := b.admin.Start(); err != nil {
			b.kafka.Close()
			b.host.Close()
			return err
		}
	}
	b.logger.Info("chronik node started", "node", b.cfg.NodeID, "kafka", b.kafka.Addr().String(),
		"raft", b.tr.Addr(), "data_dir", b.cfg.DataDir, "fsync", string(b.cfg.Fsync))
	return nil
}

// KafkaAddr is the bound Kafka listener address.
func (b *Broker) KafkaAddr() string { return b.kafka.Addr().String() }

// AdminAddr is the bound admin address ("" when disabled).
func (b *Broker) AdminAddr() string {
	if b.admin == nil {
		return ""
	}
	return b.admin.Addr()
}

func (b *Broker) metadataChanged() {
	b.mu.Lock()
	b.cfgs = map[string]*topicConfig{}
	b.mu.Unlock()
	select {
	case b.reconcileCh <- struct{}{}:
	default:
	}
}

func (b *Broker) signalLeadership() {
	select {
	case b.leadershipCh <- struct{}{}:
	default:
	}
}

// reconcileLoop opens and removes local replicas to match the metadata,
// and releases consumer groups whose coordinator role moved away.
func (b *Broker) reconcileLoop() {
	defer b.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	// Changes are announced as they happen (onLeaderChange); this full
	// refresh covers notices lost while a connection was re-established.
	gossip := time.NewTicker(2 * time.Second)
	defer gossip.Stop()
	for {
		select {
		case <-b.reconcileCh:
			b.reconcile()
		case <-b.leadershipCh:
			b.coord.Release()
		case <-gossip.C:
			b.broadcastLed(0)
		case <-t.C:
			b.reconcile()
			b.coord.Release()
		case <-b.ctx.Done():
			return
		}
	}
}

type wantedReplica struct {
	topic    string
	index    int32
	replicas []int32
	internal bool
}

func (b *Broker) reconcile() {
	if b.host.Stopping() {
		return
	}
	want := map[uint64]wantedReplica{}
	for _, t := range b.metaSM.topics() {
		for i, pm := range t.Partitions {
			if slices.Contains(pm.Replicas, b.cfg.NodeID) {
				want[pm.Group] = wantedReplica{topic: t.Name, index: int32(i), replicas: pm.Replicas, internal: t.Internal}
			}
		}
	}
	b.mu.RLock()
	var stale []uint64
	for g := range b.parts {
		if _, ok := want[g]; !ok {
			stale = append(stale, g)
		}
	}
	for g := range b.offsets {
		if _, ok := want[g]; !ok {
			stale = append(stale, g)
		}
	}
	var missing []uint64
	for g := range want {
		if b.parts[g] == nil && b.offsets[g] == nil {
			missing = append(missing, g)
		}
	}
	b.mu.RUnlock()
	slices.Sort(missing)
	for _, g := range missing {
		if err := b.openReplica(g, want[g]); err != nil {
			b.logger.Error("cannot open partition replica", "topic", want[g].topic, "partition", want[g].index, "err", err)
		}
	}
	for _, g := range stale {
		b.removeReplica(g)
	}
}

func (b *Broker) replicaDir(topic string, index int32) string {
	return filepath.Join(b.cfg.DataDir, topic+"-"+strconv.Itoa(int(index)))
}

// openReplica creates this node's replica of a partition. A directory left
// by an older incarnation of the same topic name (another group id) is
// wiped first.
func (b *Broker) openReplica(g uint64, w wantedReplica) error {
	dir := b.replicaDir(w.topic, w.index)
	marker := filepath.Join(dir, "group")
	if data, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(data)) != strconv.FormatUint(g, 10) {
		b.logger.Info("removing data of a deleted topic incarnation", "dir", dir)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(marker); os.IsNotExist(err) {
		if err := clog.WriteFileSync(marker, []byte(strconv.FormatUint(g, 10)+"\n")); err != nil {
			return err
		}
	}
	peers := make([]uint64, len(w.replicas))
	for i, r := range w.replicas {
		peers[i] = uint64(r)
	}
	name := w.topic + "-" + strconv.Itoa(int(w.index))
	if w.topic == offsetsTopic {
		sm := newOffsetsSM()
		rep, err := b.host.AddReplica(raft.ReplicaConfig{Group: g, Name: name, Dir: dir, Peers: peers, SM: sm,
			CompactToSnapshot: true, SnapshotEntries: 10000, Log: clog.Options{SegmentBytes: 16 << 20, Logger: b.logger}})
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.offsets[g] = &offsetsPartition{index: w.index, group: g, rep: rep, sm: sm}
		b.mu.Unlock()
		b.campaignIfPreferred(rep, peers)
		return nil
	}
	p := newPartition(b, w.topic, w.index, g)
	cfg := b.topicConfig(w.topic)
	rep, err := b.host.AddReplica(raft.ReplicaConfig{Group: g, Name: name, Dir: dir, Peers: peers, SM: p,
		Log:       clog.Options{SegmentBytes: cfg.segmentBytes, SegmentAge: cfg.segmentAge, Logger: b.logger},
		Retention: func() (int64, time.Duration) { c := b.topicConfig(w.topic); return c.retentionBytes, c.retentionAge },
	})
	if err != nil {
		return err
	}
	p.rep = rep
	p.initHW()
	b.mu.Lock()
	b.parts[g] = p
	b.byTP[tpKey{w.topic, w.index}] = p
	b.mu.Unlock()
	b.campaignIfPreferred(rep, peers)
	return nil
}

// campaignIfPreferred makes the preferred replica of a new or restarted
// group stand for election at once, and again every few milliseconds while
// its peers may still be opening the group (their votes are lost until
// then): leadership starts where the rebalancer would put it, instead of
// landing at random and moving a few seconds later under the clients.
func (b *Broker) campaignIfPreferred(rep *raft.Replica, peers []uint64) {
	if len(peers) == 0 || peers[0] != uint64(b.cfg.NodeID) {
		return
	}
	rep.Campaign()
	if len(peers) == 1 {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-time.After(50 * time.Millisecond):
			case <-b.ctx.Done():
				return
			}
			if rep.Status().Leader != 0 {
				return
			}
			rep.Campaign()
		}
	}()
}

func (b *Broker) removeReplica(g uint64) {
	b.mu.Lock()
	if p := b.parts[g]; p != nil {
		delete(b.byTP, tpKey{p.topic, p.index})
		delete(b.parts, g)
	}
	delete(b.offsets, g)
	b.mu.Unlock()
	b.view.forget(g)
	if err := b.host.RemoveReplica(g); err != nil {
		b.logger.Warn("removing deleted partition's data failed", "group", g, "err", err)
	}
}

// joinTimeout is how long a node waits for a metadata leader before it
// reports that it cannot join the cluster (it keeps trying).
const joinTimeout = 30 * time.Second

// bootstrapLoop makes sure the internal offsets topic exists; the metadata
// leader creates it once.
func (b *Broker) bootstrapLoop() {
	defer b.wg.Done()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var noLeaderSince time.Time
	warned := false
	for {
		select {
		case <-t.C:
		case <-b.ctx.Done():
			return
		}
		if b.meta.Status().Leader == 0 {
			if noLeaderSince.IsZero() {
				noLeaderSince = time.Now()
			} else if !warned && time.Since(noLeaderSince) > joinTimeout {
				b.logger.Error("Failed to join cluster: no leader elected within "+fmtDur(joinTimeout),
					"hint", "check that a majority of the nodes in the cluster config run and reach each other's raft addresses")
				warned = true
			}
		} else {
			noLeaderSince, warned = time.Time{}, false
		}
		if _, ok := b.metaSM.topic(offsetsTopic); ok {
			settled := b.replicasSettled()
			if settled {
				b.kafka.Serve()
			}
			b.ready.Store(settled)
			continue
		}
		if time.Since(b.started) > settleGrace {
			b.kafka.Serve() // the cluster may be down: serve what can be served
		}
		st := b.meta.Status()
		if !st.IsLeader() || !st.LeaderReady {
			continue
		}
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		res := b.createTopics(ctx, []kafka.CreateTopic{{Name: offsetsTopic, Partitions: b.cfg.Cluster.OffsetsPartitions,
			ReplicationFactor: -1}}, false, true)
		cancel()
		if res[0].Err != 0 && res[0].Err != kerr.TopicAlreadyExists.Code {
			b.logger.Warn("creating the offsets topic failed; retrying", "err", kerr.ErrorForCode(res[0].Err))
		}
	}
}

// replicasSettled reports whether every partition this node hosts is open
// and knows its leader, so clients that connect now find leaders rather
// than LEADER_NOT_AVAILABLE (which makes franz-go wait 5 s to look again).
// After settleGrace it answers true regardless: a partition whose other
// replicas are down must not keep the node unready.
func (b *Broker) replicasSettled() bool {
	if time.Since(b.started) > settleGrace {
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

func (b *Broker) nextReq() uint64 {
	return uint64(b.cfg.NodeID)<<48 | (b.reqSeq.Add(1) & (1<<48 - 1))
}

// metaPropose runs a metadata command through the metadata Raft group (a
// follower forwards it to the leader) and returns its result. Attempts that
// get lost in a leader change are retried until ctx ends.
func (b *Broker) metaPropose(ctx context.Context, cmd metaCmd) (metaResult, error) {
	for {
		cmd.Req = b.nextReq()
		data, err := json.Marshal(&cmd)
		if err != nil {
			return metaResult{}, err
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = b.meta.Propose(actx, clog.KindCommand, data, true)
		cancel()
		if err == nil {
			if res, ok := b.metaSM.takeResult(cmd.Req); ok {
				return res, nil
			}
			return metaResult{}, errors.New("metadata command applied without a result")
		}
		if ctx.Err() != nil {
			return metaResult{}, ctx.Err()
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return metaResult{}, ctx.Err()
		}
	}
}

func newTopicID() [16]byte {
	var id [16]byte
	rand.Read(id[:])
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

func (b *Broker) nodeIDs() []int32 {
	out := make([]int32, 0, len(b.cfg.Cluster.Nodes))
	for _, n := range b.cfg.Cluster.Nodes {
		out = append(out, n.ID)
	}
	return out
}

// localPartition returns the local replica of a data partition group.
func (b *Broker) localPartition(g uint64) *partition {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.parts[g]
}

func (b *Broker) partitionByName(topic string, part int32) *partition {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.byTP[tpKey{topic, part}]
}

func (b *Broker) offsetsPartitions() []*offsetsPartition {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]*offsetsPartition, 0, len(b.offsets))
	for _, op := range b.offsets {
		out = append(out, op)
	}
	return out
}

// offsetsPartitionFor returns the local offsets partition of a group if
// this node leads it and has applied its own term (so it has every commit).
func (b *Broker) offsetsPartitionFor(group string) *offsetsPartition {
	t, ok := b.metaSM.topic(offsetsTopic)
	if !ok || len(t.Partitions) == 0 {
		return nil
	}
	idx := groupPartition(group, int32(len(t.Partitions)))
	g := t.Partitions[idx].Group
	b.mu.RLock()
	op := b.offsets[g]
	b.mu.RUnlock()
	if op == nil {
		return nil
	}
	if st := op.rep.Status(); !st.IsLeader() || !st.LeaderReady {
		return nil
	}
	return op
}

func (b *Broker) ownsGroup(group string) bool {
	return !b.host.Stopping() && b.offsetsPartitionFor(group) != nil
}

// viewHint is the known leader of a group for KIP-951 hints.
func (b *Broker) viewHint(g uint64) kafka.LeaderHint {
	if r := b.host.Replica(g); r != nil {
		if st := r.Status(); st.Leader != 0 && st.Leader != uint64(b.cfg.NodeID) {
			return kafka.LeaderHint{Leader: int32(st.Leader), Epoch: int32(st.Term)}
		}
	}
	if li, ok := b.view.get(g); ok && li.Leader > 0 && li.Leader != b.cfg.NodeID {
		return kafka.LeaderHint{Leader: li.Leader, Epoch: li.Epoch}
	}
	return kafka.LeaderHint{Leader: -1, Epoch: -1}
}

// Close stops the node at once, without the graceful stages (tests, and
// the forced path). Safe to call twice.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.beginShutdown()
		b.cancel()
		b.wg.Wait()
		b.kafka.Close()
		b.coord.Close()
		if b.admin != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			b.admin.Close(ctx)
			cancel()
		}
		err = b.host.Close()
		close(b.stopped)
	})
	return err
}

func (b *Broker) beginShutdown() {
	b.shutOnce.Do(func() { close(b.shutting) })
}

// addrHostPort splits an advertised address for Metadata.
func addrHostPort(addr string) (string, int32) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	port, _ := strconv.Atoi(p)
	return h, int32(port)
}
