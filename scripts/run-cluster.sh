#!/usr/bin/env bash
# Runs a local Chronik cluster in the foreground: every node of the cluster
# config on loopback, data under ./data/node-N, logs prefixed by node.
#
# It supervises the nodes the way systemd or Docker would: a node that exits
# (after a SIGTERM, as `chronik-server rolling-restart` sends, or a crash)
# is started again. Ctrl-C (or SIGTERM to this script) stops every node
# gracefully and waits for them.
set -uo pipefail

BIN=${BIN:-bin/chronik-server}
CONFIG=${CONFIG:-deploy/cluster.toml}
DATA=${DATA:-data}
RUN=$(mktemp -d)
ids=$(grep -E '^\s*id\s*=' "$CONFIG" | sed -E 's/[^0-9]//g')
sups=()

supervise() {
	local id=$1
	shift
	local quick=0
	while [ ! -e "$RUN/stopping" ]; do
		local started=$SECONDS
		"$BIN" --node-id "$id" --cluster-config "$CONFIG" --data-dir "$DATA/node-$id" "$@" \
			> >(sed -u "s/^/[node $id] /") 2>&1 &
		local pid=$!
		echo "$pid" > "$RUN/node-$id.pid"
		wait "$pid"
		local rc=$?
		[ -e "$RUN/stopping" ] && break
		# A node that keeps failing right after start (a port in use, a bad
		# config) is not restarted forever.
		if [ "$rc" -ne 0 ] && [ $((SECONDS - started)) -lt 3 ]; then
			quick=$((quick + 1))
			if [ "$quick" -ge 3 ]; then
				echo "[node $id] failed to start $quick times in a row; giving up on it" >&2
				return 1
			fi
		else
			quick=0
		fi
		echo "[node $id] exited with status $rc; starting it again" >&2
		sleep 0.2
	done
}

stop() {
	trap - INT TERM
	touch "$RUN/stopping"
	echo "stopping cluster..." >&2
	for f in "$RUN"/node-*.pid; do
		[ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null
	done
	for s in "${sups[@]}"; do wait "$s" 2>/dev/null; done
	rm -rf "$RUN"
	echo "cluster stopped" >&2
	exit 0
}
trap stop INT TERM

for id in $ids; do
	mkdir -p "$DATA/node-$id"
	supervise "$id" "$@" &
	sups+=($!)
done
echo "chronik: $(echo $ids | wc -w) node(s) from $CONFIG; Kafka on $(grep -E '^\s*kafka\s*=' "$CONFIG" | sed -E 's/.*"(.*)".*/\1/' | paste -sd, -); admin on $(grep -E '^\s*admin\s*=' "$CONFIG" | sed -E 's/.*"(.*)".*/\1/' | paste -sd, -); Ctrl-C stops" >&2
# Wait until Ctrl-C, or until every supervisor gave up.
for s in "${sups[@]}"; do wait "$s"; done
[ -e "$RUN/stopping" ] || { echo "no node is running; exiting" >&2; rm -rf "$RUN"; exit 1; }
