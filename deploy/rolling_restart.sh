#!/bin/bash
# rolling_restart.sh - Automated rolling restart for Chronik cluster
#
# The runbook's script, for hosts managed by systemd (see
# chronik-server.service) and reached over ssh. `chronik-server
# rolling-restart --cluster-config cluster.toml --restart-command 'ssh {host}
# sudo systemctl restart chronik-server'` does the same, waits on the
# /restart-safe check before each node, restarts followers first and prints
# the timings.

set -euo pipefail

NODES=("node1" "node2" "node3")
# Hosts can also be given as arguments: ./rolling_restart.sh host1 host2 host3
if [ $# -gt 0 ]; then NODES=("$@"); fi
SHUTDOWN_TIMEOUT=60  # seconds
REJOIN_TIMEOUT=30    # seconds

# Function to check node health
check_health() {
    local node=$1
    curl -sf "http://${node}:3000/health" > /dev/null
}

# Function to wait for node to shutdown
wait_for_shutdown() {
    local node=$1
    local start=$(date +%s)

    while ssh "$node" "pgrep chronik-server" > /dev/null 2>&1; do
        local now=$(date +%s)
        local elapsed=$((now - start))

        if [ $elapsed -gt $SHUTDOWN_TIMEOUT ]; then
            echo "ERROR: Node $node failed to shutdown in ${SHUTDOWN_TIMEOUT}s"
            return 1
        fi

        sleep 1
    done

    echo "Node $node shutdown complete"
}

# Function to wait for node to rejoin
wait_for_rejoin() {
    local node=$1
    local start=$(date +%s)

    while ! check_health "$node"; do
        local now=$(date +%s)
        local elapsed=$((now - start))

        if [ $elapsed -gt $REJOIN_TIMEOUT ]; then
            echo "ERROR: Node $node failed to rejoin in ${REJOIN_TIMEOUT}s"
            return 1
        fi

        sleep 1
    done

    echo "Node $node rejoined cluster"
}

# Function to restart a node
restart_node() {
    local node=$1

    echo "=== Restarting $node ==="

    # Send SIGTERM for graceful shutdown
    echo "Sending SIGTERM to $node..."
    ssh "$node" "sudo systemctl stop chronik-server"

    # Wait for shutdown
    wait_for_shutdown "$node"

    # Start node
    echo "Starting $node..."
    ssh "$node" "sudo systemctl start chronik-server"

    # Wait for rejoin
    wait_for_rejoin "$node"

    # Verify health
    if check_health "$node"; then
        echo "✓ $node successfully restarted"
    else
        echo "ERROR: $node health check failed after restart"
        return 1
    fi

    # Wait for replication to catch up
    sleep 5
}

# Main procedure
echo "Starting rolling restart of Chronik cluster"
echo "Nodes: ${NODES[*]}"

# Verify all nodes are healthy before starting
echo "Verifying initial cluster health..."
for node in "${NODES[@]}"; do
    if ! check_health "$node"; then
        echo "ERROR: Node $node is not healthy, aborting"
        exit 1
    fi
done
echo "✓ All nodes healthy"

# Restart each node sequentially
for node in "${NODES[@]}"; do
    restart_node "$node"
    echo ""
done

echo "✓ Rolling restart complete"
echo "Verifying final cluster health..."

# Final health check
for node in "${NODES[@]}"; do
    if ! check_health "$node"; then
        echo "WARNING: Node $node health check failed"
    else
        echo "✓ $node healthy"
    fi
done
