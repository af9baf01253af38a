// Package coordinator is Chronik's classic (pre-KIP-848) Kafka consumer-group
// coordinator: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, the offset APIs
// (OffsetCommit, OffsetFetch, OffsetDelete) and the group admin APIs
// (DescribeGroups, ListGroups, DeleteGroups).
//
// # State machine
//
// Each group follows Kafka's classic state machine:
//
//	Empty ──join──▶ PreparingRebalance ──all rejoined / timeout──▶ CompletingRebalance
//	  ▲                 ▲        │                                      │
//	  │                 │        └──no member left──▶ Empty             │ leader's SyncGroup
//	  │                 └──join, leave, expiry, leader rejoin── Stable ◀┘
//	  └── DeleteGroups, Release, Close ──▶ Dead (dropped)
//
// A rebalance waits up to the largest rebalance timeout of the members for
// every known member to send JoinGroup again (the first rebalance of an Empty
// group also waits Config.InitialRebalanceDelay for more members). Dynamic
// members that did not rejoin are dropped, the generation increments, the
// protocol is chosen by Kafka's vote, and the leader (the longest-standing
// member that rejoined) receives the member list. Followers park in SyncGroup
// until the leader sends the assignment. Members whose session timer runs out
// are removed and trigger a new rebalance; members that got a JoinGroup
// response but never sent SyncGroup are removed after the rebalance timeout.
// Static members (KIP-345) keep their place across restarts: a rejoin with a
// known instance id replaces the old member id, fences it with
// FENCED_INSTANCE_ID and, for a Stable group whose protocol does not change,
// skips the rebalance.
//
// # Concurrency
//
// All group state lives behind one mutex in Coordinator; a handler takes it
// only for in-memory bookkeeping and never holds it across a call into the
// OffsetStore or Config.Owns, so a slow replicated commit never delays
// heartbeats and the broker may call Release from within its own locks.
// Timers are time.AfterFunc callbacks that take the mutex and first check that
// they are still current, so a timer that fires after being replaced or after
// its group was dropped does nothing. JoinGroup and SyncGroup park on a
// buffered channel that the group fills exactly once; the caller also stops
// waiting when its context ends, and Release and Close answer every parked
// request with NOT_COORDINATOR. Besides those timers, the only background
// work is one short-lived writer goroutine per group with snapshot writes
// pending (see below); Close stops the timers and cancels the writes.
//
// # Ownership and durability
//
// Config.Owns says whether this node coordinates a group (the broker maps the
// group to a partition of its internal offsets topic and answers true while
// it leads that partition); every request for a group this node does not own
// is answered NOT_COORDINATOR. Committed offsets and a snapshot of each
// group's membership are durable, through OffsetStore, which the broker
// replicates. The snapshot (protocol type and name, generation, leader, and
// each member's ids, client, timeouts, metadata for the chosen protocol and
// assignment) is saved, as Kafka does, whenever a group becomes Stable (the
// leader's SyncGroup), a static member's id is replaced in a Stable group, and
// whenever it becomes Empty. Saves run outside the lock, one group's in
// order through a per-group queue in which only the newest pending snapshot
// is kept; a failed save is logged and the group carries on.
//
// When leadership of the offsets partition moves, the broker calls Release
// and the old node forgets the group. The first request the new coordinator
// gets for it loads the snapshot: the group is back Stable (Empty without
// members) at the saved generation, every member's session restarted, so
// members keep heartbeating and committing with their generation and ids and
// no rebalance happens. Only the rebalance in progress during the move, if
// any, is lost: members rejoin from the last Stable generation. A group with
// neither snapshot nor members but committed offsets behaves as an Empty
// group.
//
// # KIP-848 consumer groups
//
// ConsumerGroupHeartbeat and ConsumerGroupDescribe serve the "consumer"
// protocol (consumer*.go): the coordinator assigns partitions (uniform or
// range) and members move to their targets one heartbeat at a time, never
// two owning a partition. Such a group lives in Coordinator.consumers, not
// groups; its state is saved through the same SaveGroup snapshot, in its
// own encoding, before a heartbeat that changed it is answered, and is
// restored as it was by the next coordinator. OffsetCommit checks the
// member epoch for these groups. A static member (instance id) that
// leaves with epoch -2 keeps its place and partitions until its session
// ends; its instance rejoining under a new member id takes them back.
//
// # Online migration
//
// With Config.Migration allowing upgrades (Kafka's default), the first
// ConsumerGroupHeartbeat for a Stable classic group converts it to a
// consumer group whose classic members keep their partitions and go on
// with JoinGroup, SyncGroup and Heartbeat, assigned by the coordinator
// like the others (migrate.go, migrate_classic.go). A new classic member
// may join any consumer group then, and a restarted static one takes its
// old member's place, epoch and partitions. When allowing downgrades, the
// last KIP-848 member leaving a group of classic members makes it classic
// again.
package coordinator
