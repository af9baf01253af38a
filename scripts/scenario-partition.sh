#!/usr/bin/env bash
# Network partition under load: cut the node leading partition 0 of
# verify's topic off from everyone (peers and clients) for PARTITION_SECS
# (default 10), then heal it and wait for a full ISR. The isolated leader
# must not acknowledge anything the majority does not have; the majority
# elects a new leader. Exits non-zero when an acknowledged record is lost.
#
# docker: docker network disconnect, then docker network connect with the
#         node's fixed IP back
# local:  plain loopback processes cannot be partitioned without root
#         tricks, so the node is frozen instead: SIGSTOP, then SIGCONT. Its
#         sockets stay open (no FIN, no RST), so peers and clients see it
#         go silent, as behind a partition; unlike a partition, it also
#         stops its own clocks and cannot notice it is cut off.
# Knobs: see scripts/scenario-lib.sh (DURATION defaults to 40s here).
DURATION=${DURATION:-40s}
PARTITION_SECS=${PARTITION_SECS:-10}
. "$(dirname "$0")/scenario-lib.sh"

sc_init partition
sc_cluster_up
verify_start
sleep_until_produced 8
if leader=$(wait_leader "$SC_TOPIC" 0 30); then
	event "chronik-$leader leads $SC_TOPIC/0"
	if [ "$SCENARIO_MODE" = docker ]; then
		c=$(ctr "$leader")
		event "disconnect chronik-$leader from $SC_NET for ${PARTITION_SECS}s"
		cut_at=$(date +%s)
		mark_fault
		docker network disconnect "$SC_NET" "$c" || fail "docker network disconnect"
		wait_leader_moved "$SC_TOPIC" 0 "$leader" "$PARTITION_SECS"
		left=$((cut_at + PARTITION_SECS - $(date +%s)))
		[ "$left" -gt 0 ] && sleep "$left"
		event "reconnect chronik-$leader ($(node_ip "$leader"))"
		docker network connect --ip "$(node_ip "$leader")" --alias "chronik-$leader" "$SC_NET" "$c" ||
			fail "docker network connect"
	else
		pid=$(node_pid "$leader")
		if is_our_pid "$pid"; then
			log "local mode: emulating the partition by freezing the process (SIGSTOP/SIGCONT), not a real network cut"
			event "SIGSTOP chronik-$leader (pid $pid) for ${PARTITION_SECS}s: emulated partition"
			SC_STOPPED_PIDS+=("$pid")
			cut_at=$(date +%s)
			mark_fault
			kill -STOP "$pid"
			wait_leader_moved "$SC_TOPIC" 0 "$leader" "$PARTITION_SECS"
			left=$((cut_at + PARTITION_SECS - $(date +%s)))
			[ "$left" -gt 0 ] && sleep "$left"
			kill -CONT "$pid"
			event "SIGCONT chronik-$leader"
		else
			fail "no pid for node $leader"
		fi
	fi
	await_healthy
else
	fail "no leader for $SC_TOPIC/0 within 30s"
fi
verify_finish
