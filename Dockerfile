# Chronik image, FROM scratch: no base image is pulled, not even golang, so
# the binary is built on the host first. scripts/docker-build.sh does both:
#
#   CGO_ENABLED=0 go build -o bin/chronik-server-linux ./cmd/chronik-server
#   docker build --pull=false -t chronik:dev .
#
# The image runs one node; pick it with CHRONIK_NODE_ID (or --node-id).
# Configuration is by flags or their CHRONIK_* variables (chronik-server
# --help); the cluster config defaults to the three-node
# deploy/docker/cluster.toml that docker-compose.yml runs.
FROM scratch

COPY bin/chronik-server-linux /chronik-server
COPY deploy/docker/cluster.toml /etc/chronik/cluster.toml
# /data must exist and belong to the unprivileged user before the volume is
# declared: a fresh named volume copies it, ownership included. (scratch has
# no mkdir; the directory holds one empty marker file, which the server
# ignores.)
COPY --chown=65532:65532 deploy/docker/data/ /data/

ENV CHRONIK_CLUSTER_CONFIG=/etc/chronik/cluster.toml \
    CHRONIK_DATA_DIR=/data
USER 65532:65532
VOLUME ["/data"]
WORKDIR /data

# 9092 Kafka, 3000 admin HTTP (/ready, /health, /partitions, /metrics), 5001 Raft.
EXPOSE 9092 3000 5001

# SIGTERM drains, hands leadership to in-sync followers, syncs and exits 0.
# Give the container at least drain + transfer + sync timeouts (45s by
# default) to stop: docker stop -t 90, compose stop_grace_period: 90s.
STOPSIGNAL SIGTERM

# Exec form: scratch has no shell. /ready means the node is serving.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/chronik-server", "health", "--admin", "127.0.0.1:3000", "--endpoint", "/ready", "--quiet"]

ENTRYPOINT ["/chronik-server"]
