package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chronik-dev/chronik/kafka"
	"github.com/chronik-dev/chronik/raft"
)

// noticeLeaving tells peers this node began a graceful shutdown, so their
// leader rebalancing stops handing it leadership.
const noticeLeaving uint16 = 2

// maxParallelTransfers bounds leadership transfers in flight at once.
const maxParallelTransfers = 256

// ShutdownReport summarizes a graceful shutdown.
type ShutdownReport struct {
	Duration          time.Duration
	Transferred       int
	TransferFailed    int
	DrainTimedOut     bool
	WALSyncTimedOut   bool // stage 3 overran; Shutdown still waited for it
	TransferDurations []time.Duration
}

// Shutdown stops the node gracefully in the runbook's four stages:
//
//  1. DrainRequests: long polls return and requests received so far are
//     answered. Later requests keep being served, and the listener stays
//     open: while this node leads a partition, refusing a client (or its
//     reconnect, which franz-go makes whenever it reroutes a fetch) would
//     send it nowhere; served here, it gets the data or NOT_LEADER with the
//     new leader. The listener closes once leadership is gone (after 2).
//  2. TransferLeadership: every group this node leads (partitions, offsets
//     partitions, cluster metadata) is handed to its most caught-up in-sync
//     follower, in parallel. Proposals arriving mid-transfer are held and
//     then answered NOT_LEADER_OR_FOLLOWER with the new leader (KIP-951), so
//     clients move at once; entries already in the log commit under the new
//     leader and their requests succeed. The node no longer campaigns.
//     Clients that cannot follow hints or errors (kafka-go) are then
//     forwarded to while they still write here, for ForwardWait at most.
//  3. SyncWAL: Raft processing stops and every log and Raft state file is
//     fsynced and closed.
//  4. Shutdown: client connections, the admin server and the peer transport
//     close (peers get a goodbye and do not treat this as a crash).
//
// Each stage has its own timeout; when one expires the next stage starts.
func (b *Broker) Shutdown() ShutdownReport {
	start := time.Now()
	var rep ShutdownReport
	lg := b.logger
	lg.Info("Starting graceful shutdown for node " + itoa(int(b.cfg.NodeID)))

	lg.Info("Step 1/4: Draining in-flight requests")
	b.beginShutdown()
	b.host.SetStopping()
	for _, id := range b.peerIDs() {
		b.host.SendNotice(uint64(id), noticeLeaving, nil)
	}
	b.kafka.BeginDrain()
	dctx, cancel := context.WithTimeout(context.Background(), b.cfg.DrainTimeout)
	drainStart := time.Now()
	if err := b.kafka.Drain(dctx); err != nil {
		rep.DrainTimedOut = true
		lg.Warn("Drain timeout reached with " + itoa(int(b.kafka.InFlight())) + " in-flight requests remaining")
	} else {
		lg.Info("All in-flight requests drained in " + fmtDur(time.Since(drainStart)))
	}
	cancel()

	lg.Info("Step 2/4: Transferring leadership")
	b.awaitPeersServing(time.Now().Add(min(servingWait, b.cfg.TransferTimeout)))
	rep.Transferred, rep.TransferFailed, rep.TransferDurations = b.transferAll()
	if rep.Transferred > 0 {
		b.informClients()
	}
	// Clients that follow neither hints nor errors (kafka-go) are
	// forwarded to until their metadata timer moves them (forward.go).
	b.awaitForwarded()
	// Requests that arrived during the transfers are answered by now or
	// soon (held proposals fail over, appended ones commit under the new
	// leader); give them a moment before Raft stops.
	// New connections are refused from here on (by the kernel: never
	// accepted and then dropped); open ones are closed in step 4.
	b.kafka.StopAccepting()
	settle, cancel := context.WithTimeout(context.Background(), time.Second)
	b.kafka.DrainAll(settle)
	cancel()

	lg.Info("Step 3/4: Syncing WAL to disk")
	b.cancel()
	b.wg.Wait()
	b.coord.Close()
	walDone := make(chan error, 1)
	go func() { walDone <- b.stopReplicas() }()
	select {
	case err := <-walDone:
		walDone = nil
		if err != nil {
			lg.Error("WAL sync failed", "err", err)
		} else {
			lg.Info("WAL sync complete")
		}
	case <-time.After(b.cfg.WALSyncTimeout):
		rep.WALSyncTimedOut = true
		lg.Warn("WAL sync timeout after " + fmtDur(b.cfg.WALSyncTimeout))
	}

	lg.Info("Step 4/4: Shutting down")
	b.kafka.Close()
	b.fwd.close()
	if b.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		b.admin.Close(ctx)
		cancel()
	}
	if walDone != nil {
		// The timeout let step 4 go ahead, but the fsyncs and file closes
		// still run: returning now would let the process exit in the middle
		// of one. Wait for them; a second signal or the command's overall
		// deadline is what cuts a disk that never answers.
		lg.Warn("Waiting for the WAL sync still in progress before exiting")
		if err := <-walDone; err != nil {
			lg.Error("WAL sync failed", "err", err)
		} else {
			lg.Info("WAL sync complete (after the timeout)")
		}
	}
	b.closeOnce.Do(func() {
		b.host.Close()
		close(b.stopped)
	})
	rep.Duration = time.Since(start)
	b.shutdownDuration.Set(rep.Duration.Seconds())
	lg.Info("Graceful shutdown complete in " + fmtDur(rep.Duration) +
		" (transfers: " + itoa(rep.Transferred) + " successful, " + itoa(rep.TransferFailed) + " failed)")
	return rep
}

// informWindow: a connection that sent a request this recently before the
// transfers ended belongs to an active client, which is sent on to the new
// leaders before its connection closes. informWait bounds the wait.
const (
	informWindow = time.Second
	informWait   = 500 * time.Millisecond
)

// metadataWait bounds, from the end of the transfers, the wait for clients
// told NOT_LEADER for idempotent batches to ask for metadata or go quiet
// (kafka's AwaitMetadataRequests). librdkafka 2.0.2 asks 250 ms after the
// error; on a machine at load 20 that took over 500 ms, the connection
// closed first, and the refused reconnect that followed lengthened its
// back-off again.
const metadataWait = 1500 * time.Millisecond

// informClients keeps serving until every active client has made a request
// since leadership moved (and so got NOT_LEADER with the new leader), so no
// client finds this node gone without knowing where its partitions went.
// With steady traffic that takes one request round, milliseconds.
func (b *Broker) informClients() {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), informWait)
	defer cancel()
	// When every peer is stopping too (the whole cluster going down), the
	// new leaders are leaving as well: there is nowhere to send clients.
	peersLeft := b.watchPeersLeaving(ctx, cancel)
	waited, silent := b.kafka.AwaitActiveClients(ctx, start, informWindow)
	allLeaving := peersLeft()
	if !allLeaving {
		mctx, mcancel := context.WithDeadline(context.Background(), start.Add(metadataWait))
		if still := b.kafka.AwaitMetadataRequests(mctx); still > 0 {
			b.logger.Info(itoa(still) + " client connections told NOT_LEADER asked no metadata here within " + fmtDur(metadataWait))
		}
		mcancel()
	}
	switch {
	case waited == 0:
	case allLeaving:
		b.logger.Info("Every peer is stopping too; not waiting for " + itoa(silent) + " client connections to hear of new leaders")
	case silent == 0:
		b.logger.Info("Sent " + itoa(waited) + " active client connections to the new leaders in " + fmtDur(time.Since(start)))
	default:
		b.logger.Info(itoa(silent) + " of " + itoa(waited) + " active client connections sent no request within " + fmtDur(informWait) +
			"; they find the new leaders through metadata")
	}
}

// watchPeersLeaving calls cancel once every peer is stopping too, ending
// a wait for clients to move: there is nowhere left to send them. The
// returned function ends the watch and reports whether that happened.
func (b *Broker) watchPeersLeaving(ctx context.Context, cancel context.CancelFunc) func() bool {
	var allLeaving atomic.Bool
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			changed := b.peerEvents.wait()
			if !b.anyPeerStaying() {
				allLeaving.Store(true)
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
	return func() bool {
		cancel()
		<-watched
		return allLeaving.Load()
	}
}

// anyPeerStaying reports whether some peer is connected and not stopping.
func (b *Broker) anyPeerStaying() bool {
	for _, n := range b.peerIDs() {
		id := uint64(n)
		if b.host.PeerAlive(id) && !b.host.PeerLeaving(id) {
			return true
		}
	}
	return false
}

// transferAll hands off every group this node leads.
func (b *Broker) transferAll() (ok, failed int, durations []time.Duration) {
	var leading []*raft.Replica
	alone := 0
	for _, r := range b.host.Replicas() {
		st := r.Status()
		if !st.IsLeader() {
			continue
		}
		if len(st.Voters) < 2 {
			alone++ // no other replica to take over
			continue
		}
		leading = append(leading, r)
	}
	if alone > 0 {
		b.logger.Info(itoa(alone) + " partitions have no other replica; they are unavailable until this node is back")
	}
	if len(leading) == 0 {
		b.logger.Info("No partitions where we're the leader, skipping transfer")
		return 0, 0, nil
	}
	sort.Slice(leading, func(i, j int) bool { return leading[i].Name() < leading[j].Name() })
	b.logger.Info("Found " + itoa(len(leading)) + " partitions where we're the leader")
	deadline := time.Now().Add(b.cfg.TransferTimeout)
	clients := b.groupClients()
	var nOK, nFailed atomic.Int64
	var mu sync.Mutex
	failedNames := map[string]bool{}
	// The term each group had when its transfer succeeded. A transfer ends
	// when the new leader's first message arrives, which the local replica
	// may step a moment later: until then its status still shows it leading
	// in that term, which the verification below must not take for a group
	// that came back.
	movedFrom := map[string]uint64{}
	sem := make(chan struct{}, maxParallelTransfers)
	var wg sync.WaitGroup
	for _, r := range leading {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			term := r.Status().Term
			d, err := b.transferOne(r, deadline, clients[r.Group()])
			if err != nil {
				nFailed.Add(1)
				b.transfersFailed.Inc()
				mu.Lock()
				failedNames[r.Name()] = true
				mu.Unlock()
				return
			}
			nOK.Add(1)
			b.transfersOK.Inc()
			mu.Lock()
			durations = append(durations, d)
			movedFrom[r.Name()] = term
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Verify: nothing may still have this node as leader. A group can come
	// back here while peers move their own leaderships (several nodes stopping
	// at once); hand those off again, briefly. Groups whose transfer already
	// failed are known to be stuck and are not retried.
	verify := time.Now().Add(500 * time.Millisecond)
	for {
		var still []*raft.Replica
		for _, r := range b.host.Replicas() {
			if failedNames[r.Name()] {
				continue
			}
			st := r.Status()
			if t, moved := movedFrom[r.Name()]; moved && st.Term <= t {
				continue // it has not stepped its successor's message yet
			}
			if st.IsLeader() && len(st.Voters) > 1 {
				still = append(still, r)
			}
		}
		if len(still) == 0 {
			break
		}
		if time.Now().After(verify) {
			names := make([]string, len(still))
			for i, r := range still {
				names[i] = r.Name()
			}
			b.logger.Warn("still leader after transfers", "partitions", names)
			break
		}
		for _, r := range still {
			term := r.Status().Term
			d, err := b.transferOne(r, verify, clients[r.Group()])
			if err != nil {
				failedNames[r.Name()] = true
				nFailed.Add(1)
				b.transfersFailed.Inc()
				continue
			}
			nOK.Add(1)
			b.transfersOK.Inc()
			durations = append(durations, d)
			movedFrom[r.Name()] = term
		}
	}
	return int(nOK.Load()), int(nFailed.Load()), durations
}

// transferOne moves one group's leadership, trying followers from the most
// caught up down; clients are the group's clients here (groupClients).
func (b *Broker) transferOne(r *raft.Replica, deadline time.Time, clients []kafka.ClientKey) (time.Duration, error) {
	start := time.Now()
	tried := map[uint64]bool{}
	var lastErr error
	for time.Now().Before(deadline) {
		st := r.Status()
		if !st.IsLeader() {
			// Leadership moved on its own (e.g. a peer's election).
			b.logger.Info("Successfully transferred leadership for " + r.Name() + " in " + fmtDur(time.Since(start)))
			return time.Since(start), nil
		}
		target := b.pickTarget(st, tried, clients)
		if target == 0 {
			if len(tried) == 0 {
				// Not a timeout: every peer is down or leaving too (e.g. the
				// whole cluster is stopping). The group elects a leader when
				// peers return.
				err := errors.New("no live in-sync follower to take over")
				if lastErr != nil {
					err = fmt.Errorf("%w (last attempt: %v)", err, lastErr)
				}
				b.logger.Warn("No follower can take over leadership for "+r.Name()+"; it moves by election once peers are back", "err", err)
				return 0, err
			}
			// Every candidate failed once: go round again when something
			// that decides the choice changes (a peer, the ISR, progress),
			// or after a pause, since a transfer can also fail on timing.
			tried = map[uint64]bool{}
			b.awaitTransferChance(r, deadline)
			continue
		}
		if b.peerAge.isStarting(target) && time.Since(start) < servingWait {
			// The best target does not serve clients yet: keep leading
			// (and serving) until it or another one does, briefly.
			until := start.Add(servingWait)
			if deadline.Before(until) {
				until = deadline
			}
			b.awaitTransferChance(r, until)
			continue
		}
		tried[target] = true
		attempt := min(time.Until(deadline), 3*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), attempt)
		// The hand-over starts before the line is logged: a hundred
		// transfers at once queue on the logger, and the first message
		// need not wait for that.
		tr := r.BeginTransfer(target)
		b.logger.Info("Transferring leadership for " + r.Name() + " to node " + itoa(int(target)))
		stopWatch := b.abandonIfGone(ctx, cancel, target)
		err := tr.Wait(ctx)
		stopWatch()
		cancel()
		if err == nil {
			// Measured to when the outcome was known, not to when this
			// goroutine ran again: with a hundred transfers at once the
			// wake-ups queue behind each other and the logger.
			d := tr.EndedAt().Sub(start)
			if d <= 0 {
				d = time.Since(start)
			}
			b.logger.Info("Successfully transferred leadership for " + r.Name() + " in " + fmtDur(d))
			return d, nil
		}
		lastErr = err
		b.logger.Debug("leadership transfer attempt failed", "partition", r.Name(), "to", target, "err", err)
	}
	if lastErr == nil {
		lastErr = context.DeadlineExceeded
	}
	b.logger.Warn("Leadership transfer timeout for "+r.Name()+" after "+fmtDur(time.Since(start)), "err", lastErr)
	return 0, lastErr
}

// transferRetryPause bounds the wait before another round of transfer
// attempts when nothing observable changed.
const transferRetryPause = 100 * time.Millisecond

// awaitTransferChance waits until r's status or a peer changes, the retry
// pause passes or the deadline comes.
func (b *Broker) awaitTransferChance(r *raft.Replica, deadline time.Time) {
	t := time.NewTimer(min(transferRetryPause, time.Until(deadline)))
	defer t.Stop()
	select {
	case <-r.Changed():
	case <-b.peerEvents.wait():
	case <-t.C:
	}
}

// abandonIfGone cancels a transfer attempt as soon as its target announces
// that it is leaving too, or goes silent: a stopping node never takes over,
// and raft would otherwise hold the attempt for an election timeout. This
// matters when several nodes stop at once. The returned func ends the watch
// and waits for it.
func (b *Broker) abandonIfGone(ctx context.Context, cancel context.CancelFunc, target uint64) func() {
	done := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			changed := b.peerEvents.wait()
			if b.host.PeerLeaving(target) || !b.host.PeerAlive(target) {
				cancel()
				return
			}
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
	return func() { close(done); <-ended }
}

// settledPeer is how long a peer must have been connected before it is
// preferred as a transfer target over one that connected more recently.
const settledPeer = time.Second

// peerAges remembers since when each peer has been connected, and which
// peers said they do not serve clients yet (serving.go).
type peerAges struct {
	mu       sync.Mutex
	since    map[uint64]time.Time
	starting map[uint64]bool
}

func (pa *peerAges) note(id uint64, up bool) {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	if pa.since == nil {
		pa.since = map[uint64]time.Time{}
	}
	if up {
		pa.since[id] = time.Now()
	} else {
		delete(pa.since, id)
		delete(pa.starting, id)
	}
}

// age returns how long peer id has been connected, 0 if it is not.
func (pa *peerAges) age(id uint64) time.Duration {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	if t, ok := pa.since[id]; ok {
		return time.Since(t)
	}
	return 0
}

// Done is closed once the node has stopped.
func (b *Broker) Done() <-chan struct{} { return b.stopped }
