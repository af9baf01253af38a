#!/usr/bin/env bash
# Rolling restart under load: while chronik-verify produces (acks=all,
# idempotent) and consumes, stop each node gracefully (SIGTERM: drain, hand
# leadership to in-sync followers, sync, exit 0), start it again, and wait
# until every node's /health is 200 (every partition led, full ISR) before
# the next one. Exits non-zero when an acknowledged record is lost.
#
#   scripts/scenario-rolling.sh                     # docker if available, else loopback
#   SCENARIO_MODE=local OUT=/tmp/out scripts/scenario-rolling.sh
#
# docker: docker compose stop chronik-N / docker compose start chronik-N
# local:  SIGTERM to node N's process; scripts/run-cluster.sh starts it again
# Knobs: see scripts/scenario-lib.sh (DURATION defaults to 40s here,
# MAX_ACK_STALL to 1s).
DURATION=${DURATION:-40s}
# A graceful roll moves every leader with a hint to clients; a partition
# that goes a second without an ack means a client was left to wait for a
# metadata refresh. Fail on it.
MAX_ACK_STALL=${MAX_ACK_STALL:-1s}
. "$(dirname "$0")/scenario-lib.sh"

sc_init rolling
sc_cluster_up
verify_start
sleep_until_produced 5
for id in "${SC_NODES[@]}"; do
	sigterm_node "$id"
	[ "$SCENARIO_MODE" = docker ] && start_nodes "$id"
	await_healthy
done
verify_finish
