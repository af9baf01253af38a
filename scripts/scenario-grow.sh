#!/usr/bin/env bash
# Growing the compose cluster under load: while chronik-verify produces and
# consumes, start chronik-4 (profile "grow", deploy/docker/cluster-grow.toml)
# next to the running three, wait until every node lists it (/nodes) and
# Metadata names it, then run `chronik-server cluster rebalance` inside
# chronik-1's container (the container network; the same command works from
# the host with --cluster-config deploy/docker/cluster-grow.toml), and wait
# for a full ISR on all four. Exits non-zero when an acknowledged record is
# lost or a step fails. Docker only; not part of `make scenarios` (the
# loopback equivalent is compat's TestClusterCLIAddNode).
#
#   scripts/scenario-grow.sh
#   COMPOSE_PROJECT=mine OUT=/tmp/out DURATION=40s scripts/scenario-grow.sh
#
# Knobs: see scripts/scenario-lib.sh (DURATION defaults to 40s here),
# JOIN_TIMEOUT (seconds for chronik-4 to be listed; default 60).
DURATION=${DURATION:-40s}
JOIN_TIMEOUT=${JOIN_TIMEOUT:-60}
SCENARIO_MODE=${SCENARIO_MODE:-docker}
. "$(dirname "$0")/scenario-lib.sh"
[ "$SCENARIO_MODE" = docker ] || die "scenario-grow runs the compose cluster only (SCENARIO_MODE=docker)"

# listed_everywhere ID: every running node's /nodes lists ID as active.
listed_everywhere() {
	local id st
	for id in "${SC_NODES[@]}"; do
		st=$(curl -s --max-time 2 "http://$(admin_addr "$id")/nodes" 2>/dev/null |
			jq -r --argjson n "$1" '.[] | select(.id == $n) | .state' 2>/dev/null)
		[ "$st" = active ] || return 1
	done
}

# in_metadata ID: a Metadata request (cluster status, from inside chronik-1)
# lists broker ID.
in_metadata() {
	dc exec -T chronik-1 /chronik-server cluster status --cluster-config /etc/chronik/cluster.toml \
		>"$SC_WORK/status.txt" 2>&1 || return 1
	awk -v n="$1" '$1 == n && $2 != "-" { found = 1 } END { exit !found }' "$SC_WORK/status.txt"
}

sc_init grow
sc_cluster_up
verify_start
sleep_until_produced 5

# From here on compose sees the grow profile too (exec, logs, down).
SC_COMPOSE_FILES+=(--profile grow)
event "up -d chronik-4 (profile grow)"
t0=$(date +%s%N)
timeout 120 "${SC_DC[@]}" -p "$SC_PROJECT" "${SC_COMPOSE_FILES[@]}" up -d --no-build chronik-4 >"$SC_WORK/grow-up.log" 2>&1 ||
	{ cat "$SC_WORK/grow-up.log" >&2; fail "compose up chronik-4"; }
event "up -d chronik-4 returned after $((($(date +%s%N) - t0) / 1000000)) ms"
deadline=$(($(date +%s) + JOIN_TIMEOUT))
until listed_everywhere 4; do
	[ "$(date +%s)" -ge "$deadline" ] && { fail "chronik-4 not listed as active by every node within ${JOIN_TIMEOUT}s"; break; }
	sleep 0.1
done
event "chronik-4 listed by /nodes of chronik-1..3 after $((($(date +%s%N) - t0) / 1000000)) ms"
until in_metadata 4; do
	[ "$(date +%s)" -ge "$deadline" ] && { cat "$SC_WORK/status.txt" >&2; fail "Metadata does not list broker 4 within ${JOIN_TIMEOUT}s"; break; }
	sleep 0.2
done
event "Metadata lists broker 4 after $((($(date +%s%N) - t0) / 1000000)) ms"
cp "$SC_WORK/status.txt" "$OUT/grow-docker.status-before.txt"
SC_NODES=(1 2 3 4)

event "cluster rebalance (in chronik-1)"
t0=$(date +%s%N)
if dc exec -T chronik-1 /chronik-server cluster rebalance --cluster-config /etc/chronik/cluster.toml --no-progress-bar \
	>"$OUT/grow-docker.rebalance.txt" 2>&1; then
	event "cluster rebalance done after $((($(date +%s%N) - t0) / 1000000)) ms"
else
	fail "cluster rebalance exited $?"
fi
sed 's/^/  [rebalance] /' "$OUT/grow-docker.rebalance.txt" >&2
await_healthy
dc exec -T chronik-1 /chronik-server cluster status --cluster-config /etc/chronik/cluster.toml \
	>"$OUT/grow-docker.status-after.txt" 2>&1
sed 's/^/  [status] /' "$OUT/grow-docker.status-after.txt" >&2
verify_finish
