package coordinator

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// parkedJoin starts a JoinGroup that waits out a long initial rebalance
// delay, and returns once it is parked.
func parkedJoin(t *testing.T, h *harness, ctx context.Context, group string) <-chan *kmsg.JoinGroupResponse {
	t.Helper()
	ch := h.joinAsync(ctx, joinReq(group, "", withVersion(3)))
	eventually(t, "the join to park", func() bool { return h.describe(group).State == "PreparingRebalance" })
	return ch
}

func TestReleaseAnswersParkedJoin(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.InitialRebalanceDelay = time.Hour })
	parked := parkedJoin(t, h, context.Background(), "moving")
	kept := parkedJoin(t, h, context.Background(), "staying")

	h.c.Release() // still owned: nothing happens
	select {
	case r := <-parked:
		t.Fatalf("join answered while still owned: %v", errName(r.ErrorCode))
	default:
	}

	h.disown("moving")
	h.c.Release()
	r := recv(t, parked)
	wantErr(t, "released join", r.ErrorCode, kerr.NotCoordinator.Code)
	if r.MemberID == "" {
		t.Fatal("released join lost its member id")
	}
	if st := h.c.Stats(); st.Groups != 1 || st.ByState["PreparingRebalance"] != 1 {
		t.Fatalf("after release: %+v", st)
	}
	wantErr(t, "describe moved group", h.describe("moving").ErrorCode, kerr.NotCoordinator.Code)

	h.c.Close()
	wantErr(t, "join at close", recv(t, kept).ErrorCode, kerr.NotCoordinator.Code)
}

func TestReleaseAnswersParkedSync(t *testing.T) {
	h := newHarness(t, nil)
	ids, _ := h.stableGroup("g", "a", "b")
	// The leader rejoins; b rejoins too, then parks in SyncGroup.
	ca := h.joinAsync(clientCtx("a"), joinReq("g", ids[0]))
	h.waitState("g", "PreparingRebalance")
	rb := h.join("b", joinReq("g", ids[1]))
	recv(t, ca)
	sb := h.syncAsync(context.Background(), syncReq("g", ids[1], rb.Generation, nil))
	eventually(t, "b to park in sync", func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		return h.c.groups["g"].members[ids[1]].sync != nil
	})
	h.disown("g")
	h.c.Release()
	wantErr(t, "released sync", recv(t, sb).ErrorCode, kerr.NotCoordinator.Code)
}

func TestCloseIsIdempotent(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.InitialRebalanceDelay = time.Hour })
	parked := parkedJoin(t, h, context.Background(), "g")
	h.c.Close()
	h.c.Close()
	wantErr(t, "parked join", recv(t, parked).ErrorCode, kerr.NotCoordinator.Code)
	wantErr(t, "join after close", h.join("c", joinReq("g", "")).ErrorCode, kerr.NotCoordinator.Code)
	wantErr(t, "commit after close", commitErr(h.commit("g", "", -1, map[TopicPartition]int64{{"t", 0}: 1})), kerr.NotCoordinator.Code)
	if st := h.c.Stats(); st.Groups != 0 {
		t.Fatalf("groups after close: %+v", st)
	}
}

func TestCanceledContextEndsWait(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.InitialRebalanceDelay = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	parked := parkedJoin(t, h, ctx, "g")
	cancel()
	wantErr(t, "canceled join", recv(t, parked).ErrorCode, kerr.NotCoordinator.Code)
}

func TestInitialRebalanceDelay(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.InitialRebalanceDelay = 300 * time.Millisecond })
	start := time.Now()
	first := h.joinAsync(clientCtx("a"), joinReq("g", "", withVersion(3)))
	h.waitState("g", "PreparingRebalance")
	second := h.joinAsync(clientCtx("b"), joinReq("g", "", withVersion(3)))
	ra, rb := recv(t, first), recv(t, second)
	if ra.Generation != 1 || rb.Generation != 1 {
		t.Fatalf("both members should land in generation 1: %d %d", ra.Generation, rb.Generation)
	}
	leader := ra
	if rb.LeaderID == rb.MemberID {
		leader = rb
	}
	if len(leader.Members) != 2 {
		t.Fatalf("leader sees %d members", len(leader.Members))
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("the first rebalance did not wait for the initial delay")
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		h := newHarness(t, func(c *Config) { c.InitialRebalanceDelay = 50 * time.Millisecond })
		ids, gen := h.stableGroup("g1", "a", "b")
		h.commit("g1", ids[0], gen, map[TopicPartition]int64{{"t1", 0}: 1})
		h.join("p", joinReq("g2", "")) // a pending member with a timer
		ctx, cancel := context.WithCancel(context.Background())
		parked := h.joinAsync(ctx, joinReq("g1", ids[0])) // rebalance timer
		h.waitState("g1", "PreparingRebalance")
		cancel()
		recv(t, parked)
		h.c.Close()
	}()
	eventually(t, "goroutines to return to the baseline", func() bool {
		return runtime.NumGoroutine() <= base
	})
}

// TestCloseWaitsForWriter: a snapshot save in flight at Close must be over
// before Close returns, so nothing touches the store (the broker's Raft
// replicas) once the broker goes on to stop them.
func TestCloseWaitsForWriter(t *testing.T) {
	h := newHarness(t, nil)
	entered, release, exited := make(chan struct{}, 1), make(chan struct{}), make(chan struct{}, 1)
	h.store.mu.Lock()
	h.store.saveHook = func(string, []byte) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		select {
		case exited <- struct{}{}:
		default:
		}
	}
	h.store.mu.Unlock()
	h.stableGroup("g", "a")
	recv(t, entered)
	closed := make(chan struct{})
	go func() { h.c.Close(); close(closed) }()
	select {
	case <-closed:
		close(release)
		t.Fatal("Close returned while a snapshot save was running")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	recv(t, closed)
	select {
	case <-exited:
	default:
		t.Fatal("Close returned before the save ended")
	}
}
