package coordinator

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// memStore is an in-memory OffsetStore.
type memStore struct {
	mu        sync.Mutex
	offsets   map[string]map[TopicPartition]Offset
	snapshots map[string][]byte
	commitErr error // returned by Commit and Delete when set
	saveErr   error // returned by SaveGroup when set
	// saveHook, when set, runs at the start of every SaveGroup, outside mu.
	saveHook func(group string, data []byte)
	saves    int // successful SaveGroup calls
}

func newMemStore() *memStore {
	return &memStore{
		offsets:   make(map[string]map[TopicPartition]Offset),
		snapshots: make(map[string][]byte),
	}
}

func (s *memStore) SaveGroup(_ context.Context, group string, data []byte) error {
	s.mu.Lock()
	hook := s.saveHook
	s.mu.Unlock()
	if hook != nil {
		hook(group, data)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saveErr != nil {
		return s.saveErr
	}
	s.snapshots[group] = append([]byte(nil), data...)
	s.saves++
	return nil
}

func (s *memStore) LoadGroup(group string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.snapshots[group]; ok {
		return append([]byte(nil), d...)
	}
	return nil
}

func (s *memStore) Commit(_ context.Context, group string, offsets map[TopicPartition]Offset) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.commitErr != nil {
		return s.commitErr
	}
	g := s.offsets[group]
	if g == nil {
		g = make(map[TopicPartition]Offset)
		s.offsets[group] = g
	}
	for tp, o := range offsets {
		g[tp] = o
	}
	return nil
}

func (s *memStore) Delete(_ context.Context, group string, tps []TopicPartition) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.commitErr != nil {
		return s.commitErr
	}
	if len(tps) == 0 {
		delete(s.offsets, group)
		delete(s.snapshots, group)
		return nil
	}
	for _, tp := range tps {
		delete(s.offsets[group], tp)
	}
	if len(s.offsets[group]) == 0 {
		delete(s.offsets, group)
	}
	return nil
}

func (s *memStore) Offsets(group string) map[TopicPartition]Offset {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[TopicPartition]Offset, len(s.offsets[group]))
	for tp, o := range s.offsets[group] {
		out[tp] = o
	}
	return out
}

func (s *memStore) Groups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for g := range s.offsets {
		out = append(out, g)
	}
	return out
}

func (s *memStore) setErr(err error) {
	s.mu.Lock()
	s.commitErr = err
	s.mu.Unlock()
}

// harness is a coordinator over a memStore whose ownership tests can revoke.
type harness struct {
	t     *testing.T
	c     *Coordinator
	store *memStore

	// joinOpts apply to every JoinGroup stableGroup sends.
	joinOpts []joinOpt

	mu       sync.Mutex
	disowned map[string]bool
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, store: newMemStore(), disowned: make(map[string]bool)}
	cfg := Config{
		Store:             h.store,
		Owns:              h.owns,
		MinSessionTimeout: 10 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	h.c = New(cfg)
	t.Cleanup(h.c.Close)
	return h
}

func (h *harness) owns(group string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.disowned[group]
}

func (h *harness) disown(group string) {
	h.mu.Lock()
	h.disowned[group] = true
	h.mu.Unlock()
}

func consumerMeta(topics ...string) []byte {
	m := kmsg.NewConsumerMemberMetadata()
	m.Topics = topics
	return m.AppendTo(nil)
}

type joinOpt func(*kmsg.JoinGroupRequest)

func withVersion(v int16) joinOpt { return func(r *kmsg.JoinGroupRequest) { r.Version = v } }
func withSession(d time.Duration) joinOpt {
	return func(r *kmsg.JoinGroupRequest) { r.SessionTimeoutMillis = int32(d / time.Millisecond) }
}
func withRebalance(d time.Duration) joinOpt {
	return func(r *kmsg.JoinGroupRequest) { r.RebalanceTimeoutMillis = int32(d / time.Millisecond) }
}
func withInstance(id string) joinOpt {
	return func(r *kmsg.JoinGroupRequest) { r.InstanceID = kmsg.StringPtr(id) }
}
func withProtocols(ps ...kmsg.JoinGroupRequestProtocol) joinOpt {
	return func(r *kmsg.JoinGroupRequest) { r.Protocols = ps }
}

func proto(name string, md []byte) kmsg.JoinGroupRequestProtocol {
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name = name
	p.Metadata = md
	return p
}

func joinReq(group, memberID string, opts ...joinOpt) *kmsg.JoinGroupRequest {
	r := kmsg.NewPtrJoinGroupRequest()
	r.Version = 9
	r.Group = group
	r.MemberID = memberID
	r.SessionTimeoutMillis = 10_000
	r.RebalanceTimeoutMillis = 5_000
	r.ProtocolType = "consumer"
	r.Protocols = []kmsg.JoinGroupRequestProtocol{proto("range", consumerMeta("t1"))}
	for _, o := range opts {
		o(r)
	}
	return r
}

func clientCtx(clientID string) context.Context {
	return WithClient(context.Background(), clientID, "/127.0.0.1")
}

func (h *harness) join(clientID string, req *kmsg.JoinGroupRequest) *kmsg.JoinGroupResponse {
	h.t.Helper()
	return recv(h.t, h.joinAsync(clientCtx(clientID), req))
}

func (h *harness) joinAsync(ctx context.Context, req *kmsg.JoinGroupRequest) <-chan *kmsg.JoinGroupResponse {
	ch := make(chan *kmsg.JoinGroupResponse, 1)
	go func() { ch <- h.c.Handle(ctx, req).(*kmsg.JoinGroupResponse) }()
	return ch
}

// newMemberID runs the KIP-394 handshake and returns the member id to join
// with.
func (h *harness) memberID(group, clientID string) string {
	h.t.Helper()
	resp := h.join(clientID, joinReq(group, ""))
	if resp.ErrorCode != kerr.MemberIDRequired.Code {
		h.t.Fatalf("first join: got error %v, want MEMBER_ID_REQUIRED", kerr.ErrorForCode(resp.ErrorCode))
	}
	return resp.MemberID
}

func syncReq(group, memberID string, gen int32, assign map[string]string) *kmsg.SyncGroupRequest {
	r := kmsg.NewPtrSyncGroupRequest()
	r.Version = 5
	r.Group = group
	r.MemberID = memberID
	r.Generation = gen
	r.ProtocolType = kmsg.StringPtr("consumer")
	r.Protocol = kmsg.StringPtr("range")
	for id, a := range assign {
		ga := kmsg.NewSyncGroupRequestGroupAssignment()
		ga.MemberID = id
		ga.MemberAssignment = []byte(a)
		r.GroupAssignment = append(r.GroupAssignment, ga)
	}
	return r
}

func (h *harness) syncAsync(ctx context.Context, req *kmsg.SyncGroupRequest) <-chan *kmsg.SyncGroupResponse {
	ch := make(chan *kmsg.SyncGroupResponse, 1)
	go func() { ch <- h.c.Handle(ctx, req).(*kmsg.SyncGroupResponse) }()
	return ch
}

func (h *harness) sync(req *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse {
	h.t.Helper()
	return recv(h.t, h.syncAsync(context.Background(), req))
}

func (h *harness) heartbeat(group, memberID string, gen int32, instance *string) int16 {
	r := kmsg.NewPtrHeartbeatRequest()
	r.Version = 4
	r.Group = group
	r.MemberID = memberID
	r.Generation = gen
	r.InstanceID = instance
	return h.c.Handle(context.Background(), r).(*kmsg.HeartbeatResponse).ErrorCode
}

func (h *harness) describe(group string) kmsg.DescribeGroupsResponseGroup {
	r := kmsg.NewPtrDescribeGroupsRequest()
	r.Version = 5
	r.Groups = []string{group}
	return h.c.Handle(context.Background(), r).(*kmsg.DescribeGroupsResponse).Groups[0]
}

func (h *harness) commit(group, memberID string, gen int32, offsets map[TopicPartition]int64) *kmsg.OffsetCommitResponse {
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version = 8
	r.Group = group
	r.MemberID = memberID
	r.Generation = gen
	for tp, o := range offsets {
		t := kmsg.NewOffsetCommitRequestTopic()
		t.Topic = tp.Topic
		p := kmsg.NewOffsetCommitRequestTopicPartition()
		p.Partition = tp.Partition
		p.Offset = o
		p.LeaderEpoch = 3
		p.Metadata = kmsg.StringPtr("md")
		t.Partitions = append(t.Partitions, p)
		r.Topics = append(r.Topics, t)
	}
	return h.c.Handle(context.Background(), r).(*kmsg.OffsetCommitResponse)
}

// commitErrs returns the distinct partition errors of a commit response.
func commitErrs(resp *kmsg.OffsetCommitResponse) map[int16]int {
	out := make(map[int16]int)
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			out[p.ErrorCode]++
		}
	}
	return out
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a response")
		panic("unreachable")
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) waitState(group, state string) {
	h.t.Helper()
	eventually(h.t, group+" to be "+state, func() bool { return h.describe(group).State == state })
}

func errName(code int16) string {
	if code == 0 {
		return "NONE"
	}
	return kerr.ErrorForCode(code).Error()
}

func wantErr(t *testing.T, what string, got, want int16) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %s, want %s", what, errName(got), errName(want))
	}
}

// stableGroup brings ids members (joined in that order, the first leading)
// to a Stable generation in which member i is assigned "assign-<id>". It
// returns the member ids and the generation.
func (h *harness) stableGroup(group string, clients ...string) ([]string, int32) {
	h.t.Helper()
	var ids []string
	var gen int32
	for _, client := range clients {
		id := h.memberID(group, client)
		chans := []<-chan *kmsg.JoinGroupResponse{h.joinAsync(clientCtx(client), joinReq(group, id, h.joinOpts...))}
		if len(ids) > 0 {
			// The newcomer's join opened a rebalance; the others rejoin.
			h.waitState(group, "PreparingRebalance")
			for i, old := range ids {
				chans = append(chans, h.joinAsync(clientCtx(clients[i]), joinReq(group, old, h.joinOpts...)))
			}
		}
		ids = append(ids, id)
		var leader *kmsg.JoinGroupResponse
		for _, ch := range chans {
			r := recv(h.t, ch)
			wantErr(h.t, "join", r.ErrorCode, 0)
			gen = r.Generation
			if r.LeaderID == r.MemberID {
				leader = r
			}
		}
		if leader == nil {
			h.t.Fatal("no member was told it leads")
		}
		assign := make(map[string]string)
		for _, m := range leader.Members {
			assign[m.MemberID] = "assign-" + m.MemberID
		}
		var syncs []<-chan *kmsg.SyncGroupResponse
		for _, m := range ids {
			if m != leader.MemberID {
				syncs = append(syncs, h.syncAsync(context.Background(), syncReq(group, m, gen, nil)))
			}
		}
		syncs = append(syncs, h.syncAsync(context.Background(), syncReq(group, leader.MemberID, gen, assign)))
		for _, ch := range syncs {
			wantErr(h.t, "sync", recv(h.t, ch).ErrorCode, 0)
		}
	}
	return ids, gen
}
