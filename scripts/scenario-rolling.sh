#!/usr/bin/env bash
# Rolling restart under load: while chronik-verify produces (acks=all,
# idempotent) and consumes, stop each node gracefully (SIGTERM: drain, hand
# leadership to in-sync followers, sync, exit 0), start it again, and wait
# until every node's /health is 200 (every partition led, full ISR) before
# the next one: the fast pace, no fixed waits. Exits non-zero when an
# acknowledged record is lost.
#
#   scripts/scenario-rolling.sh                     # docker if available, else loopback
#   SCENARIO_MODE=local OUT=/tmp/out scripts/scenario-rolling.sh
#   ROLLS=5 DURATION=90s scripts/scenario-rolling.sh  # five rolls under one load
#
# docker: docker compose stop chronik-N / docker compose start chronik-N
# local:  SIGTERM to node N's process; scripts/run-cluster.sh starts it again
# Knobs: see scripts/scenario-lib.sh (DURATION defaults to 40s here,
# MAX_ACK_STALL to 1s), ROLLS (default 1: every node once), PACE:
#   fast       (default) the next node stops as soon as the ISR is full; the
#              restarted node's leaderships mostly come back only after the
#              last node (its --rebalance-delay, 2 s, has not passed yet)
#   rebalance  also wait, before the next node, until every partition is
#              led by its preferred replica again (at most PREFERRED_TIMEOUT
#              seconds, default 30), so each rejoin's rebalance is a phase
#              of its own
#
# After verify's report it prints a line per roll (with ROLLS > 1, a roll
# lasts from its first stop to the next roll, the last one until its
# rebalance is done): the longest gap between acks on one partition and
# the worst p999 of its steps, then the leader moves the producer saw,
# split into the stopping nodes' hand-offs and the rest (the
# preferred-leader rebalance moving leadership back to a node that
# rejoined), with the ack gap each caused.
DURATION=${DURATION:-40s}
# A graceful roll moves every leader with a hint to clients; a partition
# that goes a second without an ack means a client was left to wait for a
# metadata refresh. Fail on it.
MAX_ACK_STALL=${MAX_ACK_STALL:-1s}
ROLLS=${ROLLS:-1}
PACE=${PACE:-fast}
PREFERRED_TIMEOUT=${PREFERRED_TIMEOUT:-30}
. "$(dirname "$0")/scenario-lib.sh"
[[ "$ROLLS" =~ ^[1-9][0-9]*$ ]] || die "ROLLS must be a positive number, not $ROLLS"
case "$PACE" in fast | rebalance) ;; *) die "PACE must be fast or rebalance, not $PACE" ;; esac

# all_preferred: every partition every node reports has a leader, and it
# is its first replica.
all_preferred() {
	local id n
	for id in "${SC_NODES[@]}"; do
		n=$(curl -s --max-time 2 "http://$(admin_addr "$id")/partitions" 2>/dev/null |
			jq '[.[] | select((.replicas | length) > 0 and .leader != .replicas[0])] | length' 2>/dev/null)
		[ "$n" = 0 ] || return 1
	done
}

# await_preferred: wait for the preferred-leader rebalance, as an event.
await_preferred() {
	local t0=$(date +%s%N) deadline=$(($(date +%s) + PREFERRED_TIMEOUT)) ms
	until all_preferred; do
		if [ "$(date +%s)" -ge "$deadline" ]; then
			event "leaders not all preferred within ${PREFERRED_TIMEOUT}s"
			return
		fi
		sleep 0.2
	done
	ms=$((($(date +%s%N) - t0) / 1000000))
	event "preferred leaders back after $((ms / 1000)).$((ms % 1000 / 100))s"
}

# roll_summary REPORT: the per-roll lines (see the header).
roll_summary() {
	jq -r '
	def moves_in($a; $b): [.leader_moves[]? | select(.at_s >= $a and .at_s < $b)];
	def desc($ms): $ms | map("p\(.partition) \(.from)→\(.to) \(.gap_ms | round)ms") | join(", ");
	. as $r
	# phases and moves carry times rounded to the millisecond
	| def ms: . * 1000 | round / 1000;
	($r.events | map(select(.text | test("^roll [0-9]+/"))) | map(.at_s | ms) | if length == 0 then [0] else . end) as $starts
	| ([$r.events[] | select(.text == "rolls done") | .at_s | ms][0] // 1e9) as $last
	# while node F is stopping or down (from its SIGTERM to the next full
	# ISR), a move away from F is its hand-off; any other move is the
	# rebalance (or an election)
	| [$r.events | to_entries[] | select(.value.text | test("^(stop|SIGTERM) chronik-[0-9]+"))
	   | .key as $k | (.value.text | capture("chronik-(?<n>[0-9]+)").n | tonumber) as $n
	   | {node: $n, from: (.value.at_s | ms),
	      to: ([$r.events[($k + 1):][] | select(.text | startswith("all nodes healthy")) | .at_s | ms][0] // 1e9)}] as $down
	| def handoff: . as $m | any($down[]; .node == $m.from and $m.at_s >= .from and $m.at_s <= .to);
	range(0; $starts | length) as $i
	| $starts[$i] as $a | ($starts[$i + 1] // $last) as $b
	| [$r.phases[]? | select(.from_s >= $a and .from_s < $b)] as $ph
	| ($ph | max_by(.ack_stall.max_ms)) as $worst
	| (moves_in($a; $b)) as $mv
	| ($mv | map(select(handoff))) as $ho | ($mv | map(select(handoff | not))) as $rb
	| if ($ph | length) == 0 then "roll \($i + 1): after producing stopped, no figures (raise DURATION)" else
	"roll \($i + 1): longest ack gap \($worst.ack_stall.max_ms | round) ms (partition \($worst.ack_stall.partition), in phase \($worst.from)), worst step p999 \(($ph | map(.produce_latency_ms.p999) | max // 0) * 10 | round / 10) ms; "
	  + "hand-offs \($ho | length) (longest gap \(($ho | map(.gap_ms) | max // 0) | round) ms); "
	  + "rebalance \($rb | length) (longest gap \(($rb | map(.gap_ms) | max // 0) | round) ms): \(desc($rb))" end
	' "$1"
}

sc_init rolling
sc_cluster_up
verify_start
sleep_until_produced 5
for roll in $(seq 1 "$ROLLS"); do
	[ "$ROLLS" -gt 1 ] && event "roll $roll/$ROLLS"
	for id in "${SC_NODES[@]}"; do
		sigterm_node "$id"
		[ "$SCENARIO_MODE" = docker ] && start_nodes "$id"
		await_healthy
		[ "$PACE" = rebalance ] && await_preferred
	done
done
# Several rolls: the last one ends once its rebalance has (its summary
# line must not take in the quiet produce time after it).
if [ "$ROLLS" -gt 1 ]; then
	[ "$PACE" = fast ] && await_preferred
	event "rolls done"
fi
verify_finish
rc=$?
if [ -f "$SC_PREFIX.report.json" ]; then
	roll_summary "$SC_PREFIX.report.json" | tee "$SC_PREFIX.rolls.txt"
fi
exit "$rc"
