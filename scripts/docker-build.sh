#!/usr/bin/env bash
# Builds the chronik:dev image without pulling anything: the Dockerfile is
# FROM scratch around a static binary built here first.
#
#   scripts/docker-build.sh            # bin/chronik-server-linux + chronik:dev
#   IMAGE=chronik:test scripts/docker-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-chronik:dev}
GO=${GO:-go}
GOARCH=${GOARCH:-$($GO env GOARCH)}

echo "building bin/chronik-server-linux (linux/$GOARCH, static)" >&2
CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH $GO build -trimpath -ldflags='-s -w' \
	-o bin/chronik-server-linux ./cmd/chronik-server

echo "building image $IMAGE" >&2
# --pull=false: never contact a registry (FROM scratch needs none).
# DOCKER_BUILDKIT is left as the daemon's default; both builders work.
old=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker build --pull=false -t "$IMAGE" .
# Drop the image this one replaced, unless something still uses it.
new=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
	docker rmi "$old" >/dev/null 2>&1 || true
fi
