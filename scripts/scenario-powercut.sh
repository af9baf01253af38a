#!/usr/bin/env bash
# "Power cut": SIGKILL all three nodes at once under load, start them
# again, wait for a full ISR. Exits non-zero when an acknowledged record is
# lost.
#
# The nodes run with --fsync always (CHRONIK_FSYNC=always through
# deploy/docker/fsync-always.yml; --fsync always in local mode): every
# write is synced (group committed) before it counts toward an ack.
# docker kill / SIGKILL only kill the processes: the kernel's page cache
# survives, so what this really tests is a crash of every process at once,
# which the default --fsync interval would survive too. A real power cut
# loses the page cache as well; with --fsync always nothing acknowledged was
# only in the page cache, so the same claim holds for real power loss.
#
# docker: docker kill of the three containers in one command, POWER_DOWN
#         seconds (default 2) off, then docker compose start
# local:  SIGKILL of the three processes; scripts/run-cluster.sh starts them again
# Knobs: see scripts/scenario-lib.sh (DURATION defaults to 30s here).
DURATION=${DURATION:-30s}
POWER_DOWN=${POWER_DOWN:-2}
. "$(dirname "$0")/scenario-lib.sh"

sc_init powercut
sc_cluster_up fsync-always
verify_start
sleep_until_produced 10
sigkill_nodes "${SC_NODES[@]}"
[ "$SCENARIO_MODE" = docker ] && sleep "$POWER_DOWN"
start_nodes "${SC_NODES[@]}"
await_healthy
verify_finish
