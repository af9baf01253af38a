#!/usr/bin/env bash
# Crash of a partition leader under load: SIGKILL the node leading
# partition 0 of verify's topic (no graceful handover: the followers elect a
# new leader after the election timeout), start it again, wait for a full
# ISR. Exits non-zero when an acknowledged record is lost.
#
# docker: docker kill (SIGKILL) its container, KILL_DOWN seconds (default 5)
#         down, then docker compose start it
# local:  SIGKILL its process; scripts/run-cluster.sh starts it again at once
# Knobs: see scripts/scenario-lib.sh (DURATION defaults to 30s here).
DURATION=${DURATION:-30s}
KILL_DOWN=${KILL_DOWN:-5}
. "$(dirname "$0")/scenario-lib.sh"

sc_init kill
sc_cluster_up
verify_start
sleep_until_produced 8
if leader=$(wait_leader "$SC_TOPIC" 0 30); then
	event "chronik-$leader leads $SC_TOPIC/0"
	killed_at=$(date +%s)
	sigkill_nodes "$leader"
	if [ "$SCENARIO_MODE" = docker ]; then
		wait_leader_moved "$SC_TOPIC" 0 "$leader" "$KILL_DOWN"
		left=$((killed_at + KILL_DOWN - $(date +%s)))
		[ "$left" -gt 0 ] && sleep "$left"
		# restart: unless-stopped does not restart a container after docker
		# kill (it counts as stopped by hand); compose start does.
		start_nodes "$leader"
	else
		# run-cluster.sh restarts the node within ~0.2s; whoever wins the
		# election may be the restarted node itself
		wait_leader_moved "$SC_TOPIC" 0 "$leader" 3
		start_nodes "$leader"
	fi
	await_healthy
else
	fail "no leader for $SC_TOPIC/0 within 30s"
fi
verify_finish
