// Package raft runs Chronik's Raft groups: one group per partition (and one
// for cluster metadata, one per consumer-offsets partition), each a
// go.etcd.io/raft/v3 RawNode over a log.Log. A Host drives every replica on
// a node from a small pool of workers; the groups share the node's
// connections, timers and fsync rounds, so thousands of groups cost no
// goroutines of their own.
//
// # Use
//
//	h, err := raft.NewHost(raft.Config{ID: 1, Transport: tr})
//	err = h.Start()
//	defer h.Close()
//	r, err := h.OpenReplica(raft.ReplicaConfig{Group: 7, Name: "orders-3",
//		Dir: dir, Peers: []uint64{1, 2, 3}, SM: sm})
//	// store r where sm finds it, then let the workers drive it:
//	err = h.StartReplica(r)
//	res, err := r.Propose(ctx, log.KindBatch, batch, true) // acks=all
//
// # Files
//
//	host.go      Host, Config, opening and removing replicas, shutdown
//	worker.go    run queue, workers, the fsync round, timers, rebalancing
//	peers.go     transport handler, node-level channels, peer liveness
//	replica.go   Replica, loading a replica from disk, closing
//	ready.go     the Ready cycle of one replica (prepare, sync, finish)
//	proposal.go  proposals, their outcomes and guards (SubmitGuarded),
//	             leadership transfers
//	snapshot.go  local snapshots, installing a leader's, retention
//	quiesce.go   quiet groups and waking them, reacting to lost peers
//	insync.go    the in-sync replica set (ISR) of a leader
//	status.go    the published Status
//	failure.go   failing a replica, telling its group, recovering it
//	guard.go     checks on what peers send; panics become failures
//	storage.go   etcd raft's Storage over log.Log; snapshot file
//	statefile.go the raft-state file; moving one into the node's file
//	hardstate.go the node's hard-state file (Config.StateDir)
//	membership.go Reconfigure: membership changes, one safe step a call
//	confchange.go proposing, matching and applying configuration changes
//	confhistory.go the configuration as of each index (confstates file)
//	gag.go       joining replicas that may not vote or lead
//	gagnotice.go a gagged replica telling its leader (no transfers to it)
//	refill.go    sending a follower again the entries it lost
//	refillread.go reading those entries off the workers (readers)
//	behind.go    followers far behind the entry cache: refilled too
//	stalls.go    worst delays of the last second (the "raft stall" log
//	             line), step-downs by reason
//	incarnation.go peers' data directory incarnations, retired ones
//	throttle.go  the learner rate (Config.LearnerRate)
//	transport.go TCPTransport, its hello (v1 and v2, see below), its
//	             peers (SetPeer, RemovePeer); transport_send.go the
//	             sender per peer; memtransport.go MemNetwork for tests
//	peertls.go   peer TLS and cluster id (PeerSecurity)
//	guests.go    nodes not known yet (AdmitGuests): notices on chosen
//	             channels only, until SetPeer names them
//	codec.go     the wire encoding of Raft messages
//
// # The Ready cycle
//
// Anything that concerns a replica (a message from a peer, a proposal, a
// tick, an operation such as a transfer request) is put in its inbox under
// r.inMu and the replica is put on the host's run queue. A worker takes up
// to workerBatch replicas off the queue, holds each one's r.mu (TryLock: a
// replica busy on another worker is left to that worker, which runs it
// again), and handles one Ready for each in three phases:
//
//  1. prepare, in two passes over the batch, so no replica's messages wait
//     for another's disk writes (ready.go): first, per replica, step the
//     inbox into Raft (messages, then ticks,
//     operations and proposals, those held during a transfer before new
//     ones; at most ElectionTicks-1 ticks at once, so
//     a stalled worker does not judge its peers on time it was away);
//     take a Ready; send at once the messages that do not report on this
//     Ready's writes (so a leader replicates while it writes its own copy,
//     and a candidate's vote requests leave while its term and vote are
//     fsynced: a request promises nothing, and its own vote counts only at
//     Advance; ready.go), and end the transfers whose target now leads;
//     then, per replica, install a snapshot the leader sent; write the
//     new entries to the log and the hard state to the state file, neither
//     fsynced (with Config.StateDir: a hard state whose term or vote
//     changed becomes a record for the node's file; one that changed only
//     the commit index stays in memory).
//  2. sync, shared: every replica of the batch that needs it fsyncs in
//     parallel with the others, and the round waits for all of them (group
//     commit). A replica fsyncs its state file when term or vote changed,
//     and its log when it appended entries under FsyncAlways. With
//     Config.StateDir the batch's records go to the node's file in one
//     frame and one fsync, next to the log fsyncs; workers whose rounds
//     overlap share that fsync too. One slow disk write therefore delays
//     the whole batch, and one round serves up to workerBatch replicas.
//     A replica with nothing to sync skips the round: it runs finish and
//     is released before the round starts (most steps of a leadership
//     transfer need no fsync and must not wait for another group's).
//     One that applies a configuration change finishes last, after the
//     round: its apply fsyncs the configuration history and state in
//     finish, and the rest of the batch must not wait for that.
//  3. finish, per replica: answer acks=1 proposals whose entries are now
//     in the log (synced under FsyncAlways); send the messages held back,
//     the append and vote responses, which promise the writes of step 1
//     are durable; apply the committed entries to the state machine and
//     answer acks=all proposals; take a local snapshot if due; Advance;
//     publish the status.
//
// The worker then releases r.mu and queues the replica again if Raft has
// more to do or work arrived meanwhile.
//
// # Durability
//
// Under FsyncAlways an entry is on disk before it is acknowledged to a
// client (either acks) and before this node tells a leader it holds it.
// Under FsyncInterval the syncer fsyncs every log each FsyncInterval: a
// process crash loses nothing (the page cache survives), a power loss can
// lose the last interval on this node, including entries it acknowledged.
// Term and vote are fsynced before any message that depends on them
// leaves (worker.go, syncRound, before finish sends). The commit index is
// written with every hard state but fsynced only with a term or vote
// change, a configuration change, a snapshot or at close: Raft learns it
// again from the leader. (The node's file does not write it alone at all:
// it rides with those.)
// So at startup the stored commit index can lie beyond the log that
// survived (the log cuts a torn tail); loading clamps it to the last index
// (replica.go, fitToLog), and a heartbeat that commits beyond the log is
// clamped the same way (guard.go). The applied index then restarts at the
// local snapshot or the log's base, and the state machine replays the
// committed entries after it; for a data partition its high watermark
// restarts there and rises as they are applied again. A follower that lost
// entries it had acknowledged reports it to the leader, which sends them
// again itself (refill.go: etcd raft never lowers a follower's Match). A
// local snapshot is written only after the log and state file are fsynced
// up to it.
//
// # The raft-state file
//
// raft-state in the replica's directory holds the HardState and ConfState
// in two slots of 4096 bytes, written alternately:
//
//	offset 0, 4096: [u32 body length][u32 CRC-32C of body][body]
//	body:           [u64 sequence][u32 HardState length][HardState][ConfState]
//
// (protobuf encodings, big-endian integers). The valid slot with the higher
// sequence wins, so a torn write of one slot falls back to the previous
// state. The file is created whole (temporary file, fsync, rename,
// directory fsync) before the log has an entry; so an existing file with
// no valid slot, or a missing or empty one next to a log with entries, is
// damage. The replica then refuses to start with ErrStateDamaged and says
// how to recover: a replica that forgot its term and vote could vote twice
// in one term. The snapshot file is [u32 CRC-32C][protobuf Snapshot],
// replaced atomically. Both are 0600 and the directory 0700.
//
// # The node's hard-state file
//
// With Config.StateDir, raft-hardstate there holds the hard state of every
// replica of the node instead of their raft-state files; it is append-only:
//
//	frame:  [u32 magic "RHS1"][u32 body length][u32 CRC-32C of body][body]
//	body:   [u64 sequence, rising][records]
//	record: [u8 1][u64 group][u32 length][HardState][u32 length][ConfState]
//	        [u8 2][u64 group]   the group was removed
//
// The latest record of a group wins. One frame is written at a time and
// fsynced before the next, so only the last frame can be torn: a bad last
// frame (short, zeroed, a bad checksum) is cut off at startup, as nothing
// acted on it; a bad frame followed by a good one is damage, and the node
// refuses to start with ErrStateDamaged and what to do. Once the file is
// over 1 MiB and four times its live records, it is rewritten as one frame
// (temporary file, fsync, rename, directory fsync). A replica directory
// that still has a raft-state file moves it in when it opens: record
// fsynced, then the old file deleted. RemoveReplica writes the removal
// before deleting the directory. Idle groups write nothing.
//
// # Membership changes
//
// A group starts with static voters (ReplicaConfig.Peers, written as the
// configuration at index 0) and changes through ConfChangeV2 entries,
// which only Reconfigure proposes, on the leader (membership.go): each
// call takes one step towards the wanted Membership, proposes one change
// and waits until it is applied here, or reports what it waits for (a
// pending change, learners catching up). New members join as learners
// and are promoted once caught up (the ISR rule); removals and demotions
// go with the promotions in one change, a joint one (left automatically,
// or by Reconfigure on a new leader after a crash) when more than one
// member changes; a leader that is to go hands leadership to a caught-up
// voter first and never removes itself. etcd raft takes one change at a
// time: one it refuses (replaced by an empty entry) fails as "in
// progress". A change's context (confchange.go) carries the proposal id
// and "promoted node N at incarnation I" pairs.
//
// The gag (gag.go): a replica created with ReplicaConfig.Joining writes
// the marker file "joining" (fsynced, and its directory) before its first
// state, and while the marker exists it drops MsgVote, MsgPreVote and
// MsgTimeoutNow unstepped and never campaigns; it still appends and
// acknowledges. Applying a change whose context names this node at
// Config.Incarnation, after which it is a voter, removes the marker
// durably (so does Replica.Ungag). Reconfigure's Rejoin demotes a node
// that lost its disk to learner and promotes it at its new incarnation;
// where demoting it would leave fewer than a quorum of trusted voters (a
// 2-voter group) a single rejoining voter stays a voter and is promoted
// again in place ("repromote": a change adding the voter it already is,
// whose context names the incarnation); more than one such voter is
// refused (one at a time). A gagged replica tells its leader so
// (gagnotice.go, channel 0xFFF5, with its applied index): the leader
// never picks it for a transfer (rebalance, Reconfigure's hand-over),
// TransferLeadership to it fails at once, and the group does not go
// quiet meanwhile. A snapshot does not carry the promotions it covers (its
// format is the previous release's); a member promoted at its
// incarnation that reports being gagged after applying the latest change
// (a snapshot covered its promotion) is promoted again in place by
// Reconfigure, so Rejoin finishes without Ungag there too.
//
// Refilling (refill.go): a follower that lost entries its leader counts
// as stored there (wiped, or a torn tail) is never sent them by etcd
// raft, whose Progress.Match only rises and whose probes never go below
// it; a new leader or removing and adding the member would reset it, but
// neither works in every group (a 2-voter group can do neither without
// the lost voter's ack). So the leader sends them itself: a rejection
// below Match, a lost-tail report or a new incarnation of the node starts
// a refill, which sends the entries after what the follower holds (or the
// log's base snapshot) up to Match, one message at a time, as etcd raft
// would (to a learner within the learner rate); then etcd raft's appends
// succeed again. Entries no longer cached are read by the host's refill
// readers (refillread.go), never on a worker: a multi-MiB segment read
// there held up every group of its batch, whose heartbeats then came late
// enough for CheckQuorum to depose their leaders. The worker asks, the
// reader reads (log readers need no raft lock) and hands the entries back
// through the inbox, and the worker sends them. Meanwhile the leader
// counts the follower at what it holds (status Match, ISR, quiescence,
// Reconfigure's catch-up), not at Match; while a probe is unanswered (a
// new incarnation whose replica may not exist yet) at nothing. Such a
// probe is resent, never dropped, and Reconfigure promotes a learner only
// once its match covers the latest configuration change. A follower that
// lost nothing but is far behind the entry cache (behind.go: a new
// leader's view of a wiped node, a learner a move adds) is refilled the
// same way: etcd raft's replication reads that the cache does not serve
// return no entries, so its appends would never read the log on a worker,
// and a refill goes up to where the cache starts. A 2-voter group whose wiped
// voter stays silent for an election timeout loses its leader
// (CheckQuorum) and cannot elect one without that voter's vote: Ungag is
// the operator's word there.
//
// The configuration history (confhistory.go): "confstates" in the
// replica directory holds the configuration after each applied change
// since the log base, and the incarnation each node was last promoted at:
//
//	[u32 magic "RCS1"][u32 CRC-32C of body][body]
//	body: [u32 n] n × ([u64 index][u32 length][ConfState])
//	      [u32 m] m × ([u64 node][u64 incarnation])
//
// replaced whole (temporary file, fsync, rename, directory fsync) when a
// change is applied, before the raft-state file; reset by an installed
// snapshot; trimmed as retention or compaction moves the log base. Raft
// restarts with the configuration as of the applied index (the changes
// after it replay), and a snapshot carries the configuration as of its
// index, with every current member it lacks added as a learner (etcd raft
// drops a snapshot that does not name its receiver; a learner changes no
// quorum, and the replayed changes bring it to the leader's).
//
// A replica that applies a change removing this node entirely (and no
// later change is on record) tells Config.OnRemoved once r.mu is
// released. The learner throttle (throttle.go): one token bucket per host
// bounds the entry bytes sent to learners; an append is cut to what the
// tokens cover, or held back, and etcd raft is told the learner is
// unreachable so it probes again; voters' traffic is never held.
//
// # Failure
//
// A storage error or a panic on a replica's worker fails that replica only
// (failure.go): it stops driving Raft, publishes a status that leads
// nothing (Failed set), fails what waits on it, tells its group's other
// voters so quiet followers elect at once, and reloads itself from disk
// after Config.RecoverDelay, doubling up to a minute, once the disk takes
// writes and fsyncs again. Messages that would make etcd raft panic are
// dropped before they reach it and counted (Host.RejectedMessages).
//
// # Notice channels
//
// Go channels that announce events, and who closes or writes them:
//
//	Replica.Changed()        closed by the worker (publish) at each status change
//	proposal appended, done  closed by the worker, once each, after the
//	                         outcome is written (see proposal)
//	transferWait.done        buffered; written once (transferWait.end) by
//	                         the worker or the transport's receiver
//	peerSender.wake          buffered kick; any sender writes, the sender
//	                         goroutine drains
//
// Wire channels (WireMsg.Channel): 0 carries Raft messages; 0xFFF0 and up
// are this package's (ping, quiesce, group down, lost tail, group up,
// gagged (0xFFF5), and
// 0xFFF8, the cluster id, and 0xFFF9, the data directory incarnation,
// which the transport consumes); the broker's notices (SendNotice,
// OnNotice) use small numbers below 0xFFF0.
//
// Hello versions, for rolling upgrades (transport.go): the previous
// release (9aa9657) speaks and accepts only a v1 hello, with no cluster
// id, and closes on an unknown frame type. A plaintext node therefore
// dials with a v1 hello followed by one frame holding a single message on
// 0xFFF8 with its cluster id, which an old node hands to the broker's
// notices, which ignore unknown channels. It accepts v1 and v2: a peer
// that states another cluster id (in a v2 hello or in that first frame) is
// refused before it is up, reason "cluster"; a v1 peer whose first frame
// is anything else (an old node) states none and is accepted. A node with
// peer TLS dials and requires v2 (no earlier release had TLS). Either way
// the next frame holds one message on 0xFFF9 with the node's data
// directory incarnation (Config.Incarnation); the receiver reads it
// before the peer is up when it arrived with the hello, else as it comes,
// and refuses a retired one (reason "incarnation"); an old node ignores
// it, and one that sends none states 0.
//
// # Locks
//
// In the order they may be taken; a lock may be taken while holding one
// above it, never the reverse:
//
//	r.mu        a replica's worker, for a whole Ready cycle; also taken by
//	            RemoveReplica and StopReplicas. A worker holds several
//	            replicas' r.mu at once but only by TryLock, so there is no
//	            order among them.
//	 broker     through the callbacks below, under r.mu: the broker's
//	            b.mu (read), its cluster view lock and partition locks.
//	            The broker never calls RemoveReplica, StopReplicas or Close
//	            while holding one of them.
//	h.mu        the replica map (read mostly); leaf
//	h.peerMu    peer liveness; liveness() takes h.heardMu under it
//	h.heardMu   last traffic per peer; leaf
//	r.inMu      a replica's inbox; leaf
//	r.gagMu     lifting a replica's gag (Ungag, or the worker); leaf
//	h.incs.mu   peers' incarnations and retired ones; leaf
//	h.learners.mu the learner token bucket; leaf
//	h.reads.mu  the refill read queue (refillread.go); leaf. A reader
//	            holds no lock while it reads or hands entries back
//	h.qmu       the run queue; leaf
//	recovery.mu a failed replica's retry timer; leaf
//	log         a replica's log: l.syncMu, then l.mu (log/doc.go), taken
//	            under r.mu by the Ready cycle and by readers under none
//	states.mu   the node's hard-state file (hardStateLog.mu); leaf. A
//	            worker holding r.mu may wait in commit for the flush in
//	            progress; the flusher holds no raft lock while it writes.
//	transport   peerSender.mu, TCPTransport.mu, MemNetwork.mu,
//	            MemTransport.mu: leaves, taken by Send under any of the
//	            above and never held while calling the handler (Receive,
//	            PeerUp, PeerDown); TCPTransport.senders is copied on
//	            write under TCPTransport.mu and read by Send without it
//	peer TLS    the certificate files (internal/pemfiles Files.mu): a
//	            leaf, taken by a dial or an accept with no lock held
//
// The same as chains ("A -> B": hold A, then take B; never the reverse):
//
//	r.mu -> broker b.mu (read), view lock, partition locks (callbacks, SM)
//	r.mu -> h.mu, h.peerMu, r.inMu, h.qmu, recovery.mu, states.mu, transport locks
//	r.mu -> r.gagMu, h.incs.mu, h.learners.mu, h.reads.mu
//	r.mu -> log l.syncMu -> log l.mu
//	broker locks -> h.mu, r.inMu, h.qmu, transport locks (Submit, Replica, SendNotice)
//	h.peerMu -> h.heardMu
//	leaves: h.mu, h.heardMu, r.inMu, h.qmu, recovery.mu, states.mu, transport locks,
//	        r.gagMu, h.incs.mu, h.learners.mu, h.reads.mu
//
// Callbacks into the broker and what they run under:
//
//	StateMachine Apply, Snapshot, Restore  worker, r.mu held (Restore also
//	                                       on OpenReplica's caller, no lock)
//	OnLeaderChange                         worker, r.mu held (the first one
//	                                       on OpenReplica's caller)
//	OnStorageError                         worker, r.mu held; takes the
//	                                       broker's b.failMu, a leaf
//	OnNotice                               transport reader, no raft lock;
//	                                       an election ask starts a goroutine
//	                                       for its transfer (broker/elect.go,
//	                                       whose electState.mu is a leaf)
//	OnPeer                                 transport reader or the liveness
//	                                       loop, no raft lock
//	OnPeerIncarnation                      transport reader, no raft lock
//	                                       (before the peer is up on that
//	                                       connection when it can be)
//	OnRemoved                              worker, after r.mu is released,
//	                                       no raft lock: may call
//	                                       RemoveReplica
//
// A callback under r.mu must not block and must not wait for this replica
// (Propose, Wait, TransferLeadership), which needs the worker it runs on.
package raft
