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
	// reloaders read the peer and admin TLS files again (security.go);
	// set during New, read-only after.
	reloaders []func() error

	tr     *raft.TCPTransport
	host   *raft.Host
	meta   *raft.Replica
	metaSM *metaSM
	view   *clusterView
	coord  *coordinator.Coordinator
	kafka  *kafka.Server
	users  *users // SCRAM credentials (scram.go)
	admin  *admin.Server
	fwd    *forwarder // Produce forwarding for clients without leader hints
	mover  *mover     // drives the reassignments this node leads (mover.go)
	rejoin rejoinState
	mb     membership // identity and broker registry (identity.go, register.go)
	// startMu orders Start's steps after the join decision with Close.
	startMu sync.Mutex

	mu      sync.RWMutex
	parts   map[uint64]*partition
	byTP    map[tpKey]*partition
	offsets map[uint64]*offsetsPartition
	cfgs    map[string]*topicConfig
	quotas  quotaTracker

	failMu   sync.Mutex
	failures map[string]string // replica name -> the storage error that stopped it
	removed  removedGroups     // groups this node was removed from (reassign_replicas.go)
	throttle atomic.Int64      // the learner rate handed to Raft (throttle.go)

	// peerEvents fires when a peer connects, goes away or announces that
	// it is leaving; leaderEvents when a leader this node knows of (local
	// Raft or the view) or the metadata changed.
	peerEvents, leaderEvents *event
	peerAge                  peerAges    // since when each peer is connected (transfer targets)
	peerClients              peerClients // each peer's live client connections (clients.go)
	servingSent              atomic.Bool // this node announced that it serves clients
	elect                    electState  // ElectLeaders asks in flight (elect.go)

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
	// stopReplicas is shutdown stage 3 (host.StopReplicas); tests slow it.
	stopReplicas func() error
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
	id, err := loadIdentity(&cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{cfg: cfg, logger: cfg.Logger, reg: cfg.Registry, view: newClusterView(),
		parts: map[uint64]*partition{}, byTP: map[tpKey]*partition{}, offsets: map[uint64]*offsetsPartition{},
		cfgs: map[string]*topicConfig{}, failures: map[string]string{}, peerEvents: newEvent(), leaderEvents: newEvent(), reconcileCh: make(chan struct{}, 1), leadershipCh: make(chan struct{}, 1),
		shutting: make(chan struct{}), stopped: make(chan struct{}), ctx: ctx, cancel: cancel, started: time.Now(),
		mb: newMembership(id)}
	b.metaSM = newMetaSM(cfg.NodeID, b.metadataChanged)
	b.fwd = newForwarder(b)
	b.mover = newMover(b)
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
	if err := b.securePeers(); err != nil {
		return nil, err
	}
	b.admitGuests()
	policy := raft.FsyncInterval
	if cfg.Fsync == FsyncAlways {
		policy = raft.FsyncAlways
	}
	host, err := raft.NewHost(raft.Config{
		ID: uint64(cfg.NodeID), Transport: b.tr, TickInterval: cfg.RaftTick,
		ElectionTicks: cfg.ElectionTicks, HeartbeatTicks: cfg.HeartbeatTicks,
		Fsync: policy, FsyncInterval: cfg.FsyncInterval, LagTime: cfg.ISRLagTime,
		// The broker hands leadership to preferred replicas itself, in the
		// metadata's order (rebalance.go); Raft knows only the order given
		// at open, which a move makes stale.
		RetentionInterval: cfg.RetentionInterval, AutoRebalance: false,
		RebalanceDelay: cfg.RebalanceDelay, Logger: cfg.Logger,
		// One hard-state file for every partition of the node, so a
		// leadership transfer waits on one fsync per side (raft/doc.go).
		StateDir:       cfg.DataDir,
		OnStorageError: b.onStorageError,
		OnLeaderChange: b.onLeaderChange,
		OnNotice:       b.onNotice,
		OnPeer:         b.onPeer,
		OnRemoved:      b.onRemoved,
		LearnerRate:    cfg.ReplicationThrottle,
		Incarnation:    id.incarnation(),
	})
	if err != nil {
		return nil, err
	}
	b.host = host
	b.throttle.Store(cfg.ReplicationThrottle)
	b.stopReplicas = host.StopReplicas
	b.coord = coordinator.New(coordinator.Config{
		Store:     offsetStore{b: b},
		Owns:      b.ownsGroup,
		Topics:    b.groupTopics,
		Logger:    cfg.Logger,
		Migration: coordinator.MigrationPolicy(b.migrationPolicy()),
	})
	listeners, err := cfg.kafkaListeners(self)
	if err != nil {
		return nil, err
	}
	b.users = newUsers(b, cfg.BootstrapUsers)
	b.kafka, err = kafka.NewServer(kafka.Config{Listeners: listeners, MaxRequestSize: cfg.MaxRequestSize,
		Limits: cfg.KafkaLimits, Backend: b, Logger: cfg.Logger, Registerer: cfg.Registry,
		Credentials: b.users, SASLMechanisms: cfg.SASLMechanisms, MaxReauth: cfg.SASLMaxReauth,
		TellMovedOnce: cfg.ForwardWait > 0})
	if err != nil {
		return nil, err
	}
	if self.Admin != "" || self.AdminListen != "" {
		listenAdmin := self.AdminListen
		if listenAdmin == "" {
			listenAdmin = self.Admin
		}
		acfg, err := b.adminConfig(listenAdmin)
		if err != nil {
			return nil, err
		}
		b.admin, err = admin.New(acfg)
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
		b.transfersOK, b.transfersFailed, b.shutdownDuration, b.fwd.count, &partitionCollector{b: b}, quotaCollector{&b.quotas}, moveCollector{b}, rejoinCollector{b},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := b.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Start binds the listeners, opens the metadata group and starts Raft and
// the background loops. When a step fails (a port in use, say), what the
// earlier steps started is stopped again: a failed Start leaves nothing
// running, and Close after it is a no-op.
func (b *Broker) Start() (err error) {
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	if err := b.host.Start(); err != nil {
		return err
	}
	// The listener is bound now (a port in use fails the start), but
	// accepts only once this node's partitions know their leaders (see
	// bootstrapLoop): a client served earlier would get answers without
	// leader hints and wait for its next metadata refresh.
	if err := b.kafka.Listen(); err != nil {
		return err
	}
	// A fresh data directory asks the peers whether the cluster exists
	// (join.go); Close ends the wait.
	if err := b.decideMode(b.ctx); err != nil {
		return err
	}
	b.startMu.Lock()
	defer b.startMu.Unlock()
	if b.ctx.Err() != nil {
		return b.ctx.Err()
	}
	id := b.ident()
	peers := make([]uint64, 0, len(id.MetaVoters))
	for _, n := range id.MetaVoters {
		peers = append(peers, uint64(n))
	}
	meta, err := b.host.AddReplica(raft.ReplicaConfig{Group: metaGroup, Name: metaName,
		Dir: filepath.Join(b.cfg.DataDir, metaName), Peers: peers, SM: b.metaSM,
		CompactToSnapshot: true, SnapshotEntries: 5000, ForwardProposals: true,
		Joining: id.Mode == modeJoin,
		Log:     clog.Options{SegmentBytes: 16 << 20, Logger: b.logger}})
	if err != nil {
		return err
	}
	b.meta = meta
	if id.Mode != modeJoin {
		b.campaignIfPreferred(meta, peers)
	}
	b.wg.Add(8)
	go b.clientsLoop(b.ctx)
	go b.admitLoop(b.ctx)
	go b.reconcileLoop()
	go b.bootstrapLoop()
	go b.registerLoop()
	go b.proxyLoop()
	go b.rejoinLoop()
	go b.mover.loop(b.ctx)
	if b.cfg.AutoLeaderRebalance {
		b.wg.Add(1)
		go (&rebalancer{b: b, busy: map[uint64]bool{}}).loop(b.ctx)
	}
	if b.admin != nil {
		if err := b.admin.Start(); err != nil {
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
	b.leaderEvents.fire()
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
			b.syncPeers()
			b.reconcile()
			b.applySegmentLimits()
			b.applyThrottle()
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
	origin   []int32 // set once the partition has moved (meta_reassign.go)
	internal bool
	joining  bool // open gagged: this node rejoins the group (rejoin.go)
}

func (b *Broker) reconcile() {
	if b.host.Stopping() {
		return
	}
	want := map[uint64]wantedReplica{}
	topics := b.metaSM.topics()
	b.forgetRemoved(topics)
	for _, t := range topics {
		for i, pm := range t.Partitions {
			if b.wantsReplica(&pm) {
				want[pm.Group] = wantedReplica{topic: t.Name, index: int32(i), replicas: pm.Replicas, origin: pm.Origin, internal: t.Internal}
			}
		}
	}
	if !b.markRejoins(want) {
		return // join mode, not registered yet: which groups to rejoin is unknown
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
	// Removals first: a topic deleted and recreated under the same name
	// reuses the directory (and the name), so the old incarnation must be
	// closed and its files gone before the new one opens there.
	for _, g := range stale {
		b.removeReplica(g)
	}
	slices.Sort(missing)
	for _, g := range missing {
		if err := b.openReplica(g, want[g]); err != nil {
			b.logger.Error("cannot open partition replica", "topic", want[g].topic, "partition", want[g].index, "err", err)
		}
	}
	b.purgeLeftovers(topics)
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
	peers, joining := replicaPeers(dir, w)
	joining = joining || w.joining // a node back with an empty disk rejoins (rejoin.go)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(marker); os.IsNotExist(err) {
		if err := clog.WriteFileSync(marker, []byte(strconv.FormatUint(g, 10)+"\n")); err != nil {
			return err
		}
	}
	if err := b.writeMetaIndex(dir); err != nil {
		return err
	}
	prefer := toUint64s(w.replicas)
	if joining {
		prefer = nil // gagged until promoted: it cannot campaign
	}
	name := w.topic + "-" + strconv.Itoa(int(w.index))
	if w.topic == offsetsTopic {
		sm := newOffsetsSM()
		rep, err := b.host.AddReplica(raft.ReplicaConfig{Group: g, Name: name, Dir: dir, Peers: peers, Joining: joining, SM: sm,
			CompactToSnapshot: true, SnapshotEntries: 10000, Log: clog.Options{SegmentBytes: 16 << 20, Logger: b.logger}})
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.offsets[g] = &offsetsPartition{index: w.index, group: g, rep: rep, sm: sm}
		b.mu.Unlock()
		b.campaignIfPreferred(rep, prefer)
		return nil
	}
	p := newPartition(b, w.topic, w.index, g)
	cfg := b.topicConfig(w.topic)
	rep, err := b.host.AddReplica(raft.ReplicaConfig{Group: g, Name: name, Dir: dir, Peers: peers, Joining: joining, SM: p,
		Log:       clog.Options{SegmentBytes: cfg.segmentBytes, SegmentAge: cfg.segmentAge, Logger: b.logger},
		Retention: p.retention,
	})
	if err != nil {
		return err
	}
	p.attach(rep)
	b.mu.Lock()
	b.parts[g] = p
	b.byTP[tpKey{w.topic, w.index}] = p
	b.mu.Unlock()
	b.campaignIfPreferred(rep, prefer)
	return nil
}

func (b *Broker) removeReplica(g uint64) {
	b.mu.Lock()
	if p := b.parts[g]; p != nil {
		if k := (tpKey{p.topic, p.index}); b.byTP[k] == p {
			delete(b.byTP, k)
		}
		delete(b.parts, g)
	}
	delete(b.offsets, g)
	b.mu.Unlock()
	if _, live := b.metaSM.group(g); !live {
		// A partition moved off this node keeps its leader in the view:
		// clients still sent here get a leader hint, not a wait for their
		// next metadata refresh.
		b.view.forget(g)
	}
	if err := b.host.RemoveReplica(g); err != nil {
		b.logger.Warn("removing deleted partition's data failed", "group", g, "err", err)
	}
}

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
		if err := b.awaitMetaLeader(ctx); err != nil {
			return metaResult{}, err
		}
	}
}

// metaRetryPause spaces out retries of a metadata command whose attempt
// failed although a leader was known (a leader change under way).
const metaRetryPause = 50 * time.Millisecond

// awaitMetaLeader waits, after a failed metadata proposal, until the
// metadata group's status changes or metaRetryPause passes, and in any
// case until a leader is known, or ctx ends.
func (b *Broker) awaitMetaLeader(ctx context.Context) error {
	pause := time.NewTimer(metaRetryPause)
	defer pause.Stop()
	paused := false
	for {
		changed := b.meta.Changed()
		if paused && b.meta.Status().Leader != 0 {
			return nil
		}
		select {
		case <-changed:
			paused = true
		case <-pause.C:
			paused = true
		case <-ctx.Done():
			return ctx.Err()
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

// nodeIDs lists the brokers new replicas may go to: every broker of the
// cluster but draining ones (meta_brokers.go).
func (b *Broker) nodeIDs() []int32 {
	var out []int32
	for _, n := range b.clusterNodes() {
		if n.State != brokerDraining {
			out = append(out, n.ID)
		}
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

// Close stops the node at once, without the graceful stages (tests, and
// the forced path). Safe to call twice.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.beginShutdown()
		b.cancel()
		b.startMu.Lock() // a Start past its join decision finishes first
		b.startMu.Unlock()
		b.wg.Wait()
		b.kafka.Close()
		b.fwd.close()
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
