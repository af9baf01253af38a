#!/usr/bin/env bash
# Runs a local Chronik cluster in the foreground: every node of the cluster
# config on loopback, data under ./data/node-N, logs prefixed by node.
# Ctrl-C (or SIGTERM) stops every node gracefully and waits for them.
set -euo pipefail

BIN=${BIN:-bin/chronik-server}
CONFIG=${CONFIG:-deploy/cluster.toml}
DATA=${DATA:-data}

ids=$(grep -E '^\s*id\s*=' "$CONFIG" | sed -E 's/[^0-9]//g')
pids=()

stop() {
	trap - INT TERM
	echo "stopping cluster..." >&2
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	echo "cluster stopped" >&2
	exit 0
}
trap stop INT TERM

for id in $ids; do
	mkdir -p "$DATA/node-$id"
	"$BIN" --node-id "$id" --cluster-config "$CONFIG" --data-dir "$DATA/node-$id" "$@" 2>&1 | sed -u "s/^/[node $id] /" &
	pids+=($!)
done
echo "chronik: $(echo $ids | wc -w) node(s) from $CONFIG; Kafka on $(grep -E '^\s*kafka\s*=' "$CONFIG" | sed -E 's/.*"(.*)".*/\1/' | paste -sd, -); Ctrl-C stops" >&2
wait
