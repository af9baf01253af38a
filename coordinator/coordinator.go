package coordinator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Config configures a Coordinator.
type Config struct {
	// Store keeps committed offsets durably; required.
	Store OffsetStore
	// Owns reports whether this node is currently the coordinator for group
	// (the broker maps a group to a partition of its internal offsets topic
	// and answers true while this node leads that partition). Required. It is
	// never called with the coordinator's lock held.
	Owns func(group string) bool
	// Logger receives rebalance and membership events; nil discards them.
	Logger *slog.Logger
	// MinSessionTimeout and MaxSessionTimeout bound the session timeout a
	// member may ask for (Kafka's group.min.session.timeout.ms and
	// group.max.session.timeout.ms); zero means 6s and 30m.
	MinSessionTimeout, MaxSessionTimeout time.Duration
	// InitialRebalanceDelay is how long the first rebalance of an empty group
	// waits for more members (Kafka's group.initial.rebalance.delay.ms,
	// whose default there is 3s); zero completes the first join at once.
	InitialRebalanceDelay time.Duration
	// Topics returns every topic (but internal ones) with its id and
	// partition count, for KIP-848 server-side assignment. Never called
	// with the coordinator's lock held. Nil: no topics.
	Topics func() map[string]TopicMeta
	// Migration is group.consumer.migration.policy: whether classic
	// groups with members are upgraded online to KIP-848 consumer groups
	// and back (migrate.go). Empty is Kafka's default, bidirectional.
	Migration MigrationPolicy
}

const (
	defaultMinSessionTimeout = 6 * time.Second
	defaultMaxSessionTimeout = 30 * time.Minute

	// newMemberJoinTimeout bounds how long a brand-new member may sit in
	// JoinGroup: it cannot heartbeat yet and a dead client would otherwise
	// hold the rebalance (Kafka uses the same fixed five minutes).
	newMemberJoinTimeout = 5 * time.Minute

	// emptyGroupRetention is how long an Empty group's in-memory state
	// (generation, protocol type) outlives its last member, like Kafka's
	// periodic cleanup of empty groups.
	emptyGroupRetention = 10 * time.Minute

	// maxOffsetMetadata is Kafka's offset.metadata.max.bytes default.
	maxOffsetMetadata = 4096
)

// KeyRange is one API key Handle serves and its supported versions.
type KeyRange struct{ Key, Min, Max int16 }

// Keys reports the API keys Handle serves and the version range for each.
func Keys() []KeyRange {
	r := func(req kmsg.Request, implemented int16) KeyRange {
		return KeyRange{Key: req.Key(), Min: 0, Max: min(implemented, req.MaxVersion())}
	}
	return []KeyRange{
		r(kmsg.NewPtrOffsetCommitRequest(), 9),
		r(kmsg.NewPtrOffsetFetchRequest(), 9),
		r(kmsg.NewPtrJoinGroupRequest(), 9),
		r(kmsg.NewPtrHeartbeatRequest(), 4),
		r(kmsg.NewPtrLeaveGroupRequest(), 5),
		r(kmsg.NewPtrSyncGroupRequest(), 5),
		r(kmsg.NewPtrDescribeGroupsRequest(), 5),
		r(kmsg.NewPtrListGroupsRequest(), 5),
		r(kmsg.NewPtrDeleteGroupsRequest(), 2),
		r(kmsg.NewPtrOffsetDeleteRequest(), 0),
		r(kmsg.NewPtrConsumerGroupHeartbeatRequest(), 1),
		r(kmsg.NewPtrConsumerGroupDescribeRequest(), 1),
	}
}

// Stats is a snapshot of the in-memory groups, for metrics and admin.
type Stats struct {
	Groups  int            // groups held in memory
	ByState map[string]int // state name ("Empty", "Stable", ...) to group count
	Members int            // members across all groups
	Pending int            // member ids handed out by MEMBER_ID_REQUIRED, not yet joined
}

// Coordinator is the classic consumer-group coordinator of one node.
type Coordinator struct {
	cfg    Config
	log    *slog.Logger
	closed atomic.Bool
	// epoch changes (under mu) each time Release starts, so a handler that
	// checked Owns before a leadership change can tell and check again.
	epoch atomic.Uint64

	// ctx ends at Close; snapshot saves run under it.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	groups  map[string]*group
	joinSeq uint64                // orders members by arrival, for leader succession
	writers map[string]*writer    // groups with durable writes queued or in flight
	loads   map[string]*loadState // groups whose snapshot is being read

	// consumers are the KIP-848 groups (made on first use); a name is in
	// groups or here, never both. Under mu.
	consumers map[string]*cgroup

	// writing counts the running writers (runWriter); Close waits for them,
	// so nothing touches the store after it returns.
	writing sync.WaitGroup
}

// New returns a coordinator serving groups for which cfg.Owns answers true.
func New(cfg Config) *Coordinator {
	if cfg.MinSessionTimeout <= 0 {
		cfg.MinSessionTimeout = defaultMinSessionTimeout
	}
	if cfg.MaxSessionTimeout <= 0 {
		cfg.MaxSessionTimeout = defaultMaxSessionTimeout
	}
	if cfg.Topics == nil {
		cfg.Topics = func() map[string]TopicMeta { return nil }
	}
	if cfg.InitialRebalanceDelay < 0 {
		cfg.InitialRebalanceDelay = 0
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Coordinator{
		cfg:     cfg,
		log:     log.With("component", "coordinator"),
		ctx:     ctx,
		cancel:  cancel,
		groups:  make(map[string]*group),
		writers: make(map[string]*writer),
		loads:   make(map[string]*loadState),
	}
}

// Handle serves one group request and returns its response, with the
// response's version set to the request's version. It blocks as the protocol
// requires (JoinGroup waits for the rebalance, SyncGroup for the leader's
// assignment) but always returns when ctx ends (answering NOT_COORDINATOR) or
// the coordinator is released or closed. ctx should therefore live as long as
// the client connection, not carry a short deadline. It returns nil for a
// request key or version that Keys does not list.
func (c *Coordinator) Handle(ctx context.Context, req kmsg.Request) kmsg.Response {
	if !served(req) {
		return nil
	}
	var resp kmsg.Response
	switch r := req.(type) {
	case *kmsg.OffsetCommitRequest:
		resp = c.offsetCommit(ctx, r)
	case *kmsg.OffsetFetchRequest:
		resp = c.offsetFetch(r)
	case *kmsg.JoinGroupRequest:
		resp = c.joinGroup(ctx, r)
	case *kmsg.HeartbeatRequest:
		resp = c.heartbeat(r)
	case *kmsg.LeaveGroupRequest:
		resp = c.leaveGroup(r)
	case *kmsg.SyncGroupRequest:
		resp = c.syncGroup(ctx, r)
	case *kmsg.DescribeGroupsRequest:
		resp = c.describeGroups(r)
	case *kmsg.ListGroupsRequest:
		resp = c.listGroups(r)
	case *kmsg.DeleteGroupsRequest:
		resp = c.deleteGroups(ctx, r)
	case *kmsg.OffsetDeleteRequest:
		resp = c.offsetDelete(ctx, r)
	case *kmsg.ConsumerGroupHeartbeatRequest:
		resp = c.consumerHeartbeat(ctx, r)
	case *kmsg.ConsumerGroupDescribeRequest:
		resp = c.consumerDescribe(r)
	default:
		return nil
	}
	resp.SetVersion(req.GetVersion())
	return resp
}

func served(req kmsg.Request) bool {
	v := req.GetVersion()
	for _, k := range Keys() {
		if k.Key == req.Key() {
			return v >= k.Min && v <= k.Max
		}
	}
	return false
}

// Release drops the in-memory state of every group for which Owns now answers
// false (the node lost the coordinator role: leadership of the offsets
// partition moved). Requests parked in such a group (JoinGroup, SyncGroup)
// are answered NOT_COORDINATOR at once, so clients re-find the coordinator.
// The group's saved snapshot stays in the store for the next coordinator;
// snapshot saves not yet started are abandoned.
func (c *Coordinator) Release() {
	c.mu.Lock()
	c.epoch.Add(1)
	names := make([]string, 0, len(c.groups))
	for name := range c.groups {
		names = append(names, name)
	}
	for name := range c.consumers {
		names = append(names, name)
	}
	for name := range c.writers {
		if c.groups[name] == nil && c.consumers[name] == nil { // a forgotten group with a save pending
			names = append(names, name)
		}
	}
	c.mu.Unlock()

	var lost []string
	for _, name := range names {
		if !c.cfg.Owns(name) {
			lost = append(lost, name)
		}
	}
	if len(lost) == 0 {
		return
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	for _, name := range lost {
		if g := c.groups[name]; g != nil {
			c.log.Info("releasing group: no longer its coordinator", "group", name, "state", g.state.String(), "members", len(g.members))
			g.drop(kerr.NotCoordinator.Code)
			delete(c.groups, name)
		}
		if g := c.consumers[name]; g != nil {
			c.log.Info("releasing consumer group: no longer its coordinator", "group", name, "epoch", g.epoch, "members", len(g.members))
			g.drop()
			delete(c.consumers, name)
		}
		c.dropSavesLocked(name)
	}
}

// Close stops every group timer and answers parked requests NOT_COORDINATOR;
// later requests are answered NOT_COORDINATOR too. Safe to call twice.
// Writes in flight end with Close (their contexts end with it) and Close
// returns once they have.
func (c *Coordinator) Close() {
	c.closed.Store(true)
	c.cancel()
	c.mu.Lock()
	for name, g := range c.groups {
		g.drop(kerr.NotCoordinator.Code)
		delete(c.groups, name)
	}
	for name, g := range c.consumers {
		g.drop()
		delete(c.consumers, name)
	}
	for name := range c.writers {
		c.dropSavesLocked(name)
	}
	c.mu.Unlock()
	c.writing.Wait()
}

// Stats reports the number of groups by state and of members.
func (c *Coordinator) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Groups: len(c.groups), ByState: make(map[string]int)}
	for _, g := range c.groups {
		s.ByState[g.state.String()]++
		s.Members += len(g.members)
		s.Pending += len(g.pending)
	}
	return s
}

// owns reports whether this node coordinates group right now.
func (c *Coordinator) owns(group string) bool {
	return !c.closed.Load() && c.cfg.Owns(group)
}

// lockGroup is lockOwner for the group requests that need a group id: it
// returns 0 with c.mu held, or the error code to answer with.
func (c *Coordinator) lockGroup(group string) int16 {
	if group == "" {
		return kerr.InvalidGroupID.Code
	}
	if !c.lockOwner(group) {
		return kerr.NotCoordinator.Code
	}
	return 0
}

// lockOwner takes c.mu if this node coordinates group and reports whether it
// did. Owns is consulted without the lock; the epoch check makes sure no
// Release started in between, so a handler never creates state for a group
// that a concurrent Release has already decided to drop. A group not in
// memory is first loaded from its saved snapshot, if it has one (the store
// is read without the lock).
func (c *Coordinator) lockOwner(group string) bool {
	for {
		e := c.epoch.Load()
		if !c.owns(group) {
			return false
		}
		c.mu.Lock()
		if c.closed.Load() {
			c.mu.Unlock()
			return false
		}
		if c.epoch.Load() == e {
			if c.groups[group] != nil || c.consumers[group] != nil {
				return true
			}
			if c.loadLocked(group, e) {
				return true
			}
		}
		c.mu.Unlock()
	}
}

// await waits for a parked request's response. When ctx ends first it answers
// with onCancel; the group may still fill the channel later, which is
// harmless because nobody reads it and it never blocks the writer.
func await(ctx context.Context, w *waiter, onCancel func() kmsg.Response) kmsg.Response {
	select {
	case resp := <-w.ch:
		return resp
	case <-ctx.Done():
		select {
		case resp := <-w.ch:
			return resp
		default:
			return onCancel()
		}
	}
}

type clientKey struct{}

type clientInfo struct{ id, host string }

// WithClient returns a context carrying the client id and address of the
// connection a request came from. The coordinator uses them to build member
// ids (clientID-uuid, as Kafka does) and to report members in DescribeGroups.
func WithClient(ctx context.Context, clientID, clientHost string) context.Context {
	return context.WithValue(ctx, clientKey{}, clientInfo{id: clientID, host: clientHost})
}

func clientFrom(ctx context.Context) clientInfo {
	ci, _ := ctx.Value(clientKey{}).(clientInfo)
	return ci
}

// newMemberID builds a member id as Kafka does: the instance id for static
// members, else the client id, then a random UUID.
func newMemberID(clientID string, instanceID *string) string {
	prefix := clientID
	if instanceID != nil {
		prefix = *instanceID
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%s-%x-%x-%x-%x-%x", prefix, b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// storeErrorCode maps an OffsetStore failure to the error clients get. Kafka
// answers a timed-out write REQUEST_TIMED_OUT and a lost leadership
// NOT_COORDINATOR; anything unexpected is reported as NOT_COORDINATOR too,
// which every client treats as retriable after finding the coordinator again.
func storeErrorCode(err error) int16 {
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, kerr.RequestTimedOut),
		errors.As(err, &timeout) && timeout.Timeout():
		return kerr.RequestTimedOut.Code
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return kerr.InvalidCommitOffsetSize.Code
	case errors.Is(err, kerr.NotEnoughReplicas), errors.Is(err, kerr.NotEnoughReplicasAfterAppend):
		return kerr.CoordinatorNotAvailable.Code
	default:
		return kerr.NotCoordinator.Code
	}
}

// hasOffsets reports whether group has any committed offset; such a group
// exists for Kafka even with no members (it is Empty).
func (c *Coordinator) hasOffsets(group string) bool {
	return len(c.cfg.Store.Offsets(group)) > 0
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
