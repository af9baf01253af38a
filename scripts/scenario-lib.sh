# Shared code of scripts/scenario-*.sh; sourced, not run.
#
# A scenario starts a three-node cluster, runs chronik-verify against it
# (idempotent producer with acks=all plus a group consumer), does something
# nasty to the nodes while it runs, and exits with verify's status: 0 only
# when no acknowledged record was lost, duplicated or corrupted.
#
# Two modes, chosen by SCENARIO_MODE:
#   docker  the compose cluster of docker-compose.yml (image chronik:dev,
#           built by scripts/docker-build.sh), project "chronik-scenario"
#   local   processes on loopback supervised by scripts/run-cluster.sh, a
#           config of our own with free ports, data in a temporary directory
#   auto    (default) docker when `docker info` answers and compose exists,
#           local otherwise
#
# Knobs (environment): DURATION (verify's produce time, e.g. 40s), RATE,
# SIZE, PARTITIONS, SETTLE, OUT (directory for report, plot, events and
# logs; default ./out), SKIP_BUILD=1 (use the binaries and image as they
# are), VERIFY_IN_NETWORK=1 (docker mode: run verify in a throwaway
# container on the compose network instead of on the host), HEALTH_TIMEOUT
# (seconds to wait for a full ISR everywhere; default 120),
# COMPOSE_PROJECT (docker mode: compose project name; default
# chronik-scenario, or $COMPOSE_PROJECT_NAME), DOCKER_CLI=1 (docker mode:
# stop and start a node's container with `docker stop -t 90` / `docker
# start` rather than compose; the same signal and grace period, without
# docker-compose v1's CLI start-up, 1-4 s a call on a loaded machine).
#
# Everything it starts (verify, containers, network, volumes, processes,
# temporary files) is removed by a trap on exit; outputs stay in $OUT.

set -uo pipefail

SC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$SC_ROOT" || exit 2

SC_NAME=${SC_NAME:-scenario}
SCENARIO_MODE=${SCENARIO_MODE:-auto}
DURATION=${DURATION:-40s}
RATE=${RATE:-2000}
SIZE=${SIZE:-200}
PARTITIONS=${PARTITIONS:-6}
SETTLE=${SETTLE:-15s}
OUT=${OUT:-./out}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-120}
SKIP_BUILD=${SKIP_BUILD:-0}
VERIFY_IN_NETWORK=${VERIFY_IN_NETWORK:-0}
DOCKER_CLI=${DOCKER_CLI:-0}

SC_NODES=(1 2 3)
# COMPOSE_PROJECT or COMPOSE_PROJECT_NAME: another compose project name, so a
# second run (or a person's own cluster) under the default name is not hit.
SC_PROJECT=${COMPOSE_PROJECT:-${COMPOSE_PROJECT_NAME:-chronik-scenario}}
SC_SUBNET=172.28.0.0/24
SC_IMAGE=${CHRONIK_IMAGE:-chronik:dev}
SC_VERIFY_IMAGE=chronik-verify:scenario
SC_WORK=""
SC_FAILED=0       # an action or wait of the scenario failed
SC_VERIFY_PID=""
SC_VERIFY_CTR=""
SC_CLUSTER_PID="" # local: run-cluster.sh
SC_STOPPED_PIDS=() # local: SIGSTOPped node processes, to SIGCONT on exit
SC_DISCONNECTED="" # docker: "container ip" cut off the network
SC_COMPOSE_FILES=(-f docker-compose.yml)
SC_LOCAL_ARGS=()
SC_STARTED_AT=$(date +%s)

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "$SC_NAME" "$*" >&2; }
die() { log "error: $*"; exit 2; }
now_ns() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }

# event TEXT: log it and append it to verify's events file (a plot marker).
event() {
	log "event: $*"
	[ -n "$SC_WORK" ] && printf '%s %s\n' "$(now_ns)" "$*" >>"$SC_WORK/events.log"
}

# fail TEXT: the scenario did not go as planned; it still waits for verify
# and reports, then exits non-zero.
fail() {
	SC_FAILED=1
	event "FAILED: $*"
}

# ---------------------------------------------------------------- mode

sc_compose_cmd() {
	if docker compose version >/dev/null 2>&1; then
		SC_DC=(docker compose)
	elif command -v docker-compose >/dev/null 2>&1; then
		SC_DC=(docker-compose)
	else
		return 1
	fi
}

sc_detect_mode() {
	case "$SCENARIO_MODE" in
	docker)
		docker info >/dev/null 2>&1 || die "SCENARIO_MODE=docker but docker info fails"
		sc_compose_cmd || die "SCENARIO_MODE=docker but neither 'docker compose' nor docker-compose is installed"
		;;
	local) ;;
	auto | "")
		if timeout 20 docker info >/dev/null 2>&1 && sc_compose_cmd; then
			SCENARIO_MODE=docker
		else
			SCENARIO_MODE=local
			log "docker not available: running on loopback processes (SCENARIO_MODE=local)"
		fi
		;;
	*) die "SCENARIO_MODE must be docker, local or auto, not $SCENARIO_MODE" ;;
	esac
}

dc() { "${SC_DC[@]}" -p "$SC_PROJECT" "${SC_COMPOSE_FILES[@]}" "$@"; }

# ---------------------------------------------------------------- setup

# sc_init NAME: mode, work dir, outputs, trap, binaries.
sc_init() {
	SC_NAME=$1
	sc_detect_mode
	for tool in curl jq timeout; do
		command -v "$tool" >/dev/null || die "$tool is required"
	done
	SC_WORK=$(mktemp -d "${TMPDIR:-/tmp}/chronik-$SC_NAME.XXXXXX") || die "mktemp"
	chmod 755 "$SC_WORK"
	: >"$SC_WORK/events.log"
	chmod 666 "$SC_WORK/events.log"
	mkdir -p "$OUT" || die "cannot create $OUT"
	OUT=$(cd "$OUT" && pwd)
	SC_PREFIX="$OUT/$SC_NAME-$SCENARIO_MODE"
	SC_TOPIC="scenario-$SC_NAME-$(date +%s)-$$"
	trap sc_cleanup EXIT
	trap 'log "interrupted"; exit 130' INT TERM
	log "mode $SCENARIO_MODE; outputs $SC_PREFIX.*"
	sc_build
}

sc_build() {
	if [ "$SKIP_BUILD" = 1 ]; then
		[ -x bin/chronik-verify ] || die "bin/chronik-verify missing (SKIP_BUILD=1)"
		return
	fi
	log "building bin/chronik-verify and bin/chronik-server"
	CGO_ENABLED=0 go build -o bin/chronik-verify ./cmd/chronik-verify || die "go build ./cmd/chronik-verify failed"
	CGO_ENABLED=0 go build -o bin/chronik-server ./cmd/chronik-server || die "go build ./cmd/chronik-server failed"
	if [ "$SCENARIO_MODE" = docker ]; then
		log "building image $SC_IMAGE (scripts/docker-build.sh)"
		IMAGE=$SC_IMAGE scripts/docker-build.sh >"$SC_WORK/docker-build.log" 2>&1 ||
			{ tail -20 "$SC_WORK/docker-build.log" >&2; die "docker image build failed"; }
	fi
}

# free_ports N: N TCP ports free on 127.0.0.1 right now, one a line.
free_ports() {
	if ! command -v python3 >/dev/null; then
		# no python: random ports nobody listens on (a small race, like any)
		local n=0 p
		while [ "$n" -lt "$1" ]; do
			p=$((20000 + RANDOM % 40000))
			ss -Htln "sport = :$p" 2>/dev/null | grep -q . && continue
			echo "$p"
			n=$((n + 1))
		done
		return
	fi
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# ---------------------------------------------------------------- cluster

# sc_cluster_up [fsync-always]: start the cluster and wait for a full ISR.
sc_cluster_up() {
	local fsync=${1:-}
	if [ "$SCENARIO_MODE" = docker ]; then
		sc_docker_up "$fsync"
	else
		sc_local_up "$fsync"
	fi
	wait_all_healthy "$HEALTH_TIMEOUT" || die "cluster not healthy within ${HEALTH_TIMEOUT}s"
	log "cluster healthy: Kafka $(brokers)"
}

sc_docker_up() {
	[ "$1" = fsync-always ] && SC_COMPOSE_FILES+=(-f deploy/docker/fsync-always.yml)
	if [ -n "$(dc ps -a -q 2>/dev/null)" ]; then
		die "compose project $SC_PROJECT already has containers (a scenario running, or one killed before cleaning up): ${SC_DC[*]} -p $SC_PROJECT down -v -t 90"
	fi
	local net
	for net in $(docker network ls -q); do
		if docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$net" 2>/dev/null | grep -qw "$SC_SUBNET"; then
			die "subnet $SC_SUBNET is taken by docker network $(docker network inspect -f '{{.Name}}' "$net"): stop that cluster first (docker compose down)"
		fi
	done
	# Published ports: free ones, so that a `make run` or another cluster on
	# the default 3000-3002/19092-19094 does not stop us. Clients use the
	# fixed container IPs anyway.
	local p=($(free_ports 6))
	export CHRONIK_ADMIN_PORT_1=${p[0]} CHRONIK_ADMIN_PORT_2=${p[1]} CHRONIK_ADMIN_PORT_3=${p[2]}
	export CHRONIK_KAFKA_PORT_1=${p[3]} CHRONIK_KAFKA_PORT_2=${p[4]} CHRONIK_KAFKA_PORT_3=${p[5]}
	export CHRONIK_IMAGE=$SC_IMAGE
	SC_DOCKER_UP=1
	log "docker: ${SC_DC[*]} -p $SC_PROJECT ${SC_COMPOSE_FILES[*]} up -d"
	timeout 180 "${SC_DC[@]}" -p "$SC_PROJECT" "${SC_COMPOSE_FILES[@]}" up -d --no-build >"$SC_WORK/compose-up.log" 2>&1 ||
		{ cat "$SC_WORK/compose-up.log" >&2; die "compose up failed"; }
	local id
	for id in "${SC_NODES[@]}"; do SC_CTR[id]=$(ctr "$id"); done
	SC_NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$(ctr 1)")
	[ -n "$SC_NET" ] || die "cannot find the compose network"
}

sc_local_up() {
	local p=($(free_ports 9)) i
	{
		echo "# generated by scripts/scenario-lib.sh for scenario $SC_NAME"
		echo 'cluster_id = "chronik-scenario"'
		echo 'default_partitions = 1'
		for i in 0 1 2; do
			printf '\n[[nodes]]\nid = %d\nkafka = "127.0.0.1:%d"\nraft = "127.0.0.1:%d"\nadmin = "127.0.0.1:%d"\n' \
				$((i + 1)) "${p[i]}" "${p[i + 3]}" "${p[i + 6]}"
		done
	} >"$SC_WORK/cluster.toml"
	SC_LOCAL_KAFKA=("${p[0]}" "${p[1]}" "${p[2]}")
	SC_LOCAL_ADMIN=("${p[6]}" "${p[7]}" "${p[8]}")
	[ "$1" = fsync-always ] && SC_LOCAL_ARGS+=(--fsync always)
	mkdir -p "$SC_WORK/data"
	log "local: scripts/run-cluster.sh ${SC_LOCAL_ARGS[*]} (config $SC_WORK/cluster.toml, data $SC_WORK/data)"
	# Its own session and process group (setsid execs, so $! is its pid and
	# the group id): cleanup can end the supervisors too if it hangs.
	BIN="$SC_ROOT/bin/chronik-server" CONFIG="$SC_WORK/cluster.toml" DATA="$SC_WORK/data" \
		setsid scripts/run-cluster.sh "${SC_LOCAL_ARGS[@]}" >"$SC_WORK/cluster.log" 2>&1 </dev/null &
	SC_CLUSTER_PID=$!
}

# ctr ID: the container of node ID (docker mode).
# Container ids are looked up once (sc_docker_up; each compose call costs
# 1-4 s of CLI start-up on a loaded machine), others on demand.
SC_CTR=()
ctr() {
	if [ -n "${SC_CTR[$1]:-}" ]; then
		echo "${SC_CTR[$1]}"
	else
		dc ps -a -q "chronik-$1" 2>/dev/null
	fi
}
node_ip() { echo "172.28.0.1$1"; }

admin_addr() {
	if [ "$SCENARIO_MODE" = docker ]; then
		echo "$(node_ip "$1"):3000"
	else
		echo "127.0.0.1:${SC_LOCAL_ADMIN[$1 - 1]}"
	fi
}

# brokers: the Kafka bootstrap list, as clients on the host use it.
brokers() {
	local id out=()
	for id in "${SC_NODES[@]}"; do
		if [ "$SCENARIO_MODE" = docker ]; then
			out+=("$(node_ip "$id"):9092")
		else
			out+=("127.0.0.1:${SC_LOCAL_KAFKA[$id - 1]}")
		fi
	done
	local IFS=,
	echo "${out[*]}"
}

node_name() { echo "chronik-$1"; }

# names ID...: "chronik-1 chronik-2"
names() {
	local id out=()
	for id in "$@"; do out+=("chronik-$id"); done
	echo "${out[*]}"
}

# http_code ADMIN PATH: the status code (000 when unreachable).
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1$2" 2>/dev/null || true; }

healthy() { [ "$(http_code "$(admin_addr "$1")" /health)" = 200 ]; }

# wait_all_healthy SECONDS: every node's /health answers 200 (every
# partition led, full ISR).
wait_all_healthy() {
	local deadline=$(($(date +%s) + $1)) id bad
	while :; do
		bad=""
		for id in "${SC_NODES[@]}"; do healthy "$id" || bad+=" $id"; done
		[ -z "$bad" ] && return 0
		if [ "$(date +%s)" -ge "$deadline" ]; then
			log "not healthy after $1s: node(s)$bad"
			return 1
		fi
		sleep 0.5
	done
}

# wait_down ID SECONDS: node ID's admin server stops answering.
wait_down() {
	local deadline=$(($(date +%s) + $2))
	while [ "$(http_code "$(admin_addr "$1")" /ready)" != 000 ]; do
		[ "$(date +%s)" -ge "$deadline" ] && return 1
		sleep 0.2
	done
}

# leader_of TOPIC PARTITION: its leader's node id, from any node's
# /partitions; empty when none knows.
leader_of() {
	local id l
	for id in "${SC_NODES[@]}"; do
		l=$(curl -s --max-time 2 "http://$(admin_addr "$id")/partitions" 2>/dev/null |
			jq -r --arg t "$1" --argjson p "$2" \
				'[.[] | select(.topic == $t and .partition == $p and .leader > 0) | .leader][0] // empty' 2>/dev/null)
		if [ -n "$l" ]; then
			echo "$l"
			return 0
		fi
	done
	return 1
}

# wait_leader TOPIC PARTITION SECONDS
wait_leader() {
	local deadline=$(($(date +%s) + $3)) l
	while :; do
		l=$(leader_of "$1" "$2") && { echo "$l"; return 0; }
		[ "$(date +%s)" -ge "$deadline" ] && return 1
		sleep 0.5
	done
}

# wait_leader_moved TOPIC PARTITION OLD SECONDS: wait until a node other
# than OLD reports a leader other than OLD, and record how long it took
# since the fault (SC_FAULT_NS, set by mark_fault) (informational:
# availability, not safety; verify judges the data).
wait_leader_moved() {
	local t0=${SC_FAULT_NS:-$(date +%s%N)} deadline=$(($(date +%s) + $4)) id l ms
	while :; do
		for id in "${SC_NODES[@]}"; do
			[ "$id" = "$3" ] && continue
			l=$(curl -s --max-time 1 "http://$(admin_addr "$id")/partitions" 2>/dev/null |
				jq -r --arg t "$1" --argjson p "$2" \
					'[.[] | select(.topic == $t and .partition == $p and .leader > 0) | .leader][0] // empty' 2>/dev/null)
			if [ -n "$l" ] && [ "$l" != "$3" ]; then
				ms=$((($(date +%s%N) - t0) / 1000000))
				event "chronik-$l leads $1/$2 (${ms} ms after the fault, per chronik-$id)"
				return 0
			fi
		done
		if [ "$(date +%s)" -ge "$deadline" ]; then
			event "no new leader for $1/$2 within $4s"
			return 1
		fi
		sleep 0.1
	done
}

# node_pid ID (local mode): the node's process id, from its /health.
node_pid() {
	curl -s --max-time 2 "http://$(admin_addr "$1")/health" 2>/dev/null | jq -r '.pid // empty' 2>/dev/null
}

# is_our_pid PID: a live process started by this scenario's cluster (its
# command line names our work directory), so a recycled pid is never hit.
is_our_pid() {
	[ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$SC_WORK/"
}

# wait_new_pid ID OLDPID SECONDS (local mode): the supervisor started the
# node again (a different pid answers).
wait_new_pid() {
	local deadline=$(($(date +%s) + $3)) p
	while :; do
		p=$(node_pid "$1")
		[ -n "$p" ] && [ "$p" != "$2" ] && return 0
		[ "$(date +%s)" -ge "$deadline" ] && return 1
		sleep 0.2
	done
}

# ---------------------------------------------------------------- node actions

# mark_fault: the fault is being injected now (for wait_leader_moved).
mark_fault() { SC_FAULT_NS=$(date +%s%N); }

# stop_node ID: graceful stop (SIGTERM); docker: compose stop, local: the
# supervisor restarts it by itself.
sigterm_node() {
	local id=$1 pid
	if [ "$SCENARIO_MODE" = docker ]; then
		event "stop $(node_name "$id") (SIGTERM)"
		if [ "$DOCKER_CLI" = 1 ]; then
			timeout 120 docker stop -t 90 "$(ctr "$id")" >/dev/null 2>&1 || fail "docker stop chronik-$id"
		else
			timeout 120 "${SC_DC[@]}" -p "$SC_PROJECT" "${SC_COMPOSE_FILES[@]}" stop -t 90 "chronik-$id" >/dev/null 2>&1 ||
				fail "compose stop chronik-$id"
		fi
		# a graceful stop exits 0; 137 would mean Docker's SIGKILL after
		# the grace period
		event "stopped $(node_name "$id") (exit $(docker inspect -f '{{.State.ExitCode}}' "$(ctr "$id")" 2>/dev/null || echo '?'))"
	else
		pid=$(node_pid "$id")
		is_our_pid "$pid" || { fail "no pid for node $id"; return 1; }
		event "SIGTERM $(node_name "$id") (pid $pid)"
		kill -TERM "$pid"
		wait_new_pid "$id" "$pid" 120 || fail "node $id did not come back after SIGTERM"
		event "started $(node_name "$id") again (by run-cluster.sh)"
	fi
}

# sigkill_nodes ID...: SIGKILL them at once.
sigkill_nodes() {
	local ids=("$@") id c=() pids=()
	if [ "$SCENARIO_MODE" = docker ]; then
		for id in "${ids[@]}"; do c+=("$(ctr "$id")"); done
		event "docker kill $(names "${ids[@]}") (SIGKILL)"
		mark_fault
		docker kill "${c[@]}" >/dev/null || fail "docker kill"
		for id in "${ids[@]}"; do
			log "$(node_name "$id"): $(docker inspect -f 'status={{.State.Status}} exit={{.State.ExitCode}} restarts={{.RestartCount}}' "$(ctr "$id")" 2>&1)"
		done
	else
		for id in "${ids[@]}"; do
			local p
			p=$(node_pid "$id")
			is_our_pid "$p" || { fail "no pid for node $id"; continue; }
			pids+=("$p")
		done
		SC_KILLED_PIDS=("${pids[@]}")
		event "SIGKILL $(names "${ids[@]}") (pids ${pids[*]})"
		mark_fault
		[ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}"
	fi
}

# start_nodes ID...: docker: compose start; local: wait for run-cluster.sh
# to have started them again.
start_nodes() {
	local ids=("$@") id
	if [ "$SCENARIO_MODE" = docker ]; then
		event "start $(names "${ids[@]}")"
		if [ "$DOCKER_CLI" = 1 ]; then
			local c=()
			for id in "${ids[@]}"; do c+=("$(ctr "$id")"); done
			timeout 120 docker start "${c[@]}" >/dev/null 2>&1 || fail "docker start ${ids[*]}"
		else
			timeout 120 "${SC_DC[@]}" -p "$SC_PROJECT" "${SC_COMPOSE_FILES[@]}" start "${ids[@]/#/chronik-}" >/dev/null 2>&1 ||
				fail "compose start ${ids[*]}"
		fi
	else
		local i=0
		for id in "${ids[@]}"; do
			wait_new_pid "$id" "${SC_KILLED_PIDS[i]:-none}" 60 || fail "node $id was not started again"
			i=$((i + 1))
		done
		event "started $(names "${ids[@]}") again (by run-cluster.sh)"
	fi
}

# await_healthy: wait for a full ISR everywhere, as an event.
await_healthy() {
	local t0=$(date +%s%N) ms
	if wait_all_healthy "$HEALTH_TIMEOUT"; then
		ms=$((($(date +%s%N) - t0) / 1000000))
		event "all nodes healthy (full ISR) after $((ms / 1000)).$((ms % 1000 / 100))s"
	else
		fail "cluster not healthy within ${HEALTH_TIMEOUT}s"
	fi
}

# ---------------------------------------------------------------- verify

# verify_start: run chronik-verify in the background; returns once it is
# producing (or failed to set up).
verify_start() {
	local args=(--brokers "$(brokers)" --topic "$SC_TOPIC" --partitions "$PARTITIONS" --replication 3
		--rate "$RATE" --size "$SIZE" --duration "$DURATION" --settle "$SETTLE" --progress 5s)
	# MAX_ACK_STALL (e.g. 1s) fails the run when a partition goes longer
	# without an ack; scenario-rolling.sh sets it.
	[ -n "${MAX_ACK_STALL:-}" ] && args+=(--max-ack-stall "$MAX_ACK_STALL")
	# VERIFY_ARGS adds flags, e.g. VERIFY_ARGS="--client-log /tmp/kgo.log".
	# shellcheck disable=SC2206
	args+=(${VERIFY_ARGS:-})
	if [ "$SCENARIO_MODE" = docker ] && [ "$VERIFY_IN_NETWORK" = 1 ]; then
		verify_image
		SC_VERIFY_CTR="chronik-verify-$SC_NAME-$$"
		log "verify in container $SC_VERIFY_CTR on network $SC_NET"
		docker run --rm --name "$SC_VERIFY_CTR" --network "$SC_NET" -v "$SC_WORK:/work" "$SC_VERIFY_IMAGE" \
			"${args[@]}" --report /work/report.json --plot /work/timeline.svg --events /work/events.log \
			>"$SC_WORK/report.txt" 2> >(tee "$SC_WORK/verify.log" | sed -u 's/^/  [verify] /' >&2) &
	else
		bin/chronik-verify "${args[@]}" --report "$SC_WORK/report.json" --plot "$SC_WORK/timeline.svg" \
			--events "$SC_WORK/events.log" \
			>"$SC_WORK/report.txt" 2> >(tee "$SC_WORK/verify.log" | sed -u 's/^/  [verify] /' >&2) &
	fi
	SC_VERIFY_PID=$!
	local deadline=$(($(date +%s) + 60))
	until grep -q '^run [0-9a-f]*: producing' "$SC_WORK/verify.log" 2>/dev/null; do
		kill -0 "$SC_VERIFY_PID" 2>/dev/null || { fail "verify exited during setup"; return 1; }
		[ "$(date +%s)" -ge "$deadline" ] && { fail "verify not producing after 60s"; return 1; }
		sleep 0.2
	done
	SC_VERIFY_T0=$(date +%s)
}

# verify_image: a throwaway image FROM scratch around the static verify
# binary (for VERIFY_IN_NETWORK=1).
verify_image() {
	local ctx="$SC_WORK/verify-image"
	mkdir -p "$ctx"
	CGO_ENABLED=0 go build -o "$ctx/chronik-verify" ./cmd/chronik-verify || die "building static chronik-verify"
	printf 'FROM scratch\nCOPY chronik-verify /chronik-verify\nWORKDIR /work\nENTRYPOINT ["/chronik-verify"]\n' >"$ctx/Dockerfile"
	docker build --pull=false -q -t "$SC_VERIFY_IMAGE" "$ctx" >/dev/null || die "building $SC_VERIFY_IMAGE"
	SC_BUILT_VERIFY_IMAGE=1
}

# sleep_until_produced SECONDS: let verify produce for at least this long
# since it started producing (bounded by the produce duration).
sleep_until_produced() {
	local left=$((SC_VERIFY_T0 + $1 - $(date +%s)))
	[ "$left" -gt 0 ] && sleep "$left"
	return 0
}

# verify_finish: wait for verify (bounded), keep its outputs, print the
# report and a summary line; returns verify's status (2 when the scenario
# itself failed and verify passed).
verify_finish() {
	local dur_s=${DURATION%s} rc
	[[ "$dur_s" =~ ^[0-9]+$ ]] || dur_s=600
	local limit=$((dur_s + ${SETTLE%s} + 30 + 30 + 60)) # produce + settle + ack timeout + setup + slack
	local deadline=$(($(date +%s) + limit))
	if [ -n "$SC_VERIFY_PID" ]; then
		local elapsed=$(($(date +%s) - ${SC_VERIFY_T0:-$(date +%s)}))
		[ "$elapsed" -gt "$dur_s" ] &&
			log "warning: the actions took ${elapsed}s, longer than verify's ${dur_s}s of producing; the last ones ran without load"
		log "waiting for verify to finish (at most ${limit}s)"
		while kill -0 "$SC_VERIFY_PID" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 1; done
		if kill -0 "$SC_VERIFY_PID" 2>/dev/null; then
			fail "verify still running after ${limit}s; interrupting it"
			verify_interrupt
		fi
		wait "$SC_VERIFY_PID"
		rc=$?
		SC_VERIFY_PID=""
		SC_VERIFY_CTR=""
	else
		rc=2
	fi
	sc_save_outputs
	echo
	cat "$SC_WORK/report.txt" 2>/dev/null
	echo
	if [ -f "$SC_WORK/report.json" ]; then
		SC_SUMMARY=$(jq -r '"\(.verdict): acknowledged \(.acknowledged), lost \(.lost), duplicated \(.duplicated), longest ack stall \(.produce_stall.max_ms | round) ms (partition \(.produce_stall.partition)), longest consume stall \(.consume_stall.max_ms | round) ms"' "$SC_WORK/report.json")
	else
		SC_SUMMARY="no report (verify exit status $rc)"
	fi
	[ "$SC_FAILED" = 1 ] && SC_SUMMARY+="; the scenario itself FAILED (see events)"
	echo "scenario $SC_NAME ($SCENARIO_MODE): $SC_SUMMARY"
	echo "outputs: $SC_PREFIX.{report.txt,report.json,svg,events.log,verify.log,nodes.log}"
	[ "$rc" = 0 ] && [ "$SC_FAILED" = 1 ] && rc=2
	return "$rc"
}

# sc_save_outputs: copy verify's outputs from the work dir to $OUT.
sc_save_outputs() {
	cp "$SC_WORK/events.log" "$SC_PREFIX.events.log" 2>/dev/null
	cp "$SC_WORK/verify.log" "$SC_PREFIX.verify.log" 2>/dev/null
	cp "$SC_WORK/report.txt" "$SC_PREFIX.report.txt" 2>/dev/null
	[ -f "$SC_WORK/report.json" ] && cp "$SC_WORK/report.json" "$SC_PREFIX.report.json"
	[ -f "$SC_WORK/timeline.svg" ] && cp "$SC_WORK/timeline.svg" "$SC_PREFIX.svg"
	return 0
}

verify_interrupt() {
	if [ -n "$SC_VERIFY_CTR" ]; then
		docker kill -s INT "$SC_VERIFY_CTR" >/dev/null 2>&1
	elif [ -n "$SC_VERIFY_PID" ]; then
		kill -INT "$SC_VERIFY_PID" 2>/dev/null
	fi
	local i
	for i in $(seq 1 30); do kill -0 "$SC_VERIFY_PID" 2>/dev/null || return 0; sleep 1; done
	# a second interrupt skips verify's remaining waits
	if [ -n "$SC_VERIFY_CTR" ]; then docker kill -s INT "$SC_VERIFY_CTR" >/dev/null 2>&1; else kill -INT "$SC_VERIFY_PID" 2>/dev/null; fi
	for i in $(seq 1 15); do kill -0 "$SC_VERIFY_PID" 2>/dev/null || return 0; sleep 1; done
	[ -n "$SC_VERIFY_CTR" ] && docker rm -f "$SC_VERIFY_CTR" >/dev/null 2>&1
	kill -KILL "$SC_VERIFY_PID" 2>/dev/null
}

# ---------------------------------------------------------------- cleanup

sc_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	log "cleaning up"
	if [ -n "$SC_VERIFY_PID" ] && kill -0 "$SC_VERIFY_PID" 2>/dev/null; then
		log "stopping verify (it still reports what it saw)"
		verify_interrupt
		wait "$SC_VERIFY_PID" 2>/dev/null
		sc_save_outputs
		cat "$SC_WORK/report.txt" 2>/dev/null
	fi
	if [ "$SCENARIO_MODE" = docker ] && [ "${SC_DOCKER_UP:-0}" = 1 ]; then
		dc logs --no-color -t >"$SC_PREFIX.nodes.log" 2>&1
		timeout 200 "${SC_DC[@]}" -p "$SC_PROJECT" "${SC_COMPOSE_FILES[@]}" down -v --remove-orphans -t 90 >/dev/null 2>&1 ||
			log "warning: compose down failed; run: ${SC_DC[*]} -p $SC_PROJECT down -v"
		[ "${SC_BUILT_VERIFY_IMAGE:-0}" = 1 ] && docker rmi "$SC_VERIFY_IMAGE" >/dev/null 2>&1
	fi
	if [ -n "$SC_CLUSTER_PID" ]; then
		local p pids=()
		[ ${#SC_STOPPED_PIDS[@]} -gt 0 ] && kill -CONT "${SC_STOPPED_PIDS[@]}" 2>/dev/null
		for id in "${SC_NODES[@]}"; do
			p=$(node_pid "$id")
			is_our_pid "$p" && pids+=("$p")
		done
		kill -TERM "$SC_CLUSTER_PID" 2>/dev/null # run-cluster.sh stops every node gracefully
		local i
		for i in $(seq 1 100); do kill -0 "$SC_CLUSTER_PID" 2>/dev/null || break; sleep 1; done
		if kill -0 "$SC_CLUSTER_PID" 2>/dev/null; then
			log "run-cluster.sh did not stop in 100s; killing its process group $SC_CLUSTER_PID"
			kill -KILL -- "-$SC_CLUSTER_PID" 2>/dev/null
		fi
		wait "$SC_CLUSTER_PID" 2>/dev/null
		for p in "${pids[@]}"; do
			is_our_pid "$p" && { log "killing leftover node pid $p"; kill -KILL "$p"; }
		done
		cp "$SC_WORK/cluster.log" "$SC_PREFIX.nodes.log" 2>/dev/null
	fi
	[ -n "$SC_WORK" ] && rm -rf "$SC_WORK"
	log "done in $(($(date +%s) - SC_STARTED_AT))s"
	exit "$rc"
}
