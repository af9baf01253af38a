# Chronik: build, run and test.
#   make run    start a local 3-node cluster on loopback (data under ./data)
#   make test   install what the tests need, then run them all
#   make bench  throughput and latency against kfake, side by side
#   make certs  a CA and node/client certificates for TLS (certs/, Go's crypto only)

GO      ?= go
BIN     := bin/chronik-server
PKGS    := ./...
export CGO_ENABLED ?= 0

COMPOSE   ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
SCENARIOS := rolling kill partition powercut

.PHONY: all build run run-single test deps fuzz bench lint docker compose-up compose-down certs compose-secure-up compose-secure-down scenarios $(SCENARIOS:%=scenario-%) clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/chronik-server
	$(GO) build -o bin/chronik-verify ./cmd/chronik-verify

run: build
	./scripts/run-cluster.sh

run-single: build
	CONFIG=deploy/single.toml ./scripts/run-cluster.sh

# deps installs the client tools the compatibility tests drive (kcat,
# librdkafka's Python binding, jq) when they are missing, on a Debian
# machine as root.
deps:
	@./scripts/test-deps.sh

# test: unit tests with the race detector, black-box tests with the five
# clients, the produce+fetch+group+roll black-box test again against a
# chronik-server built with -race (a race report in any node's output
# fails it), short fuzz runs, then the four end-to-end scenarios (against
# the Docker Compose cluster when Docker works, else loopback processes).
RACE_COMPAT := ^TestRollingRestartUnderLoad$$

test: deps build
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m ./log/ ./raft/ ./kafka/ ./coordinator/ ./admin/ ./broker/ ./auth/
	$(GO) test -count=1 -timeout 20m ./compat/ ./cmd/...
	CHRONIK_RACE=1 $(GO) test -count=1 -timeout 10m -run '$(RACE_COMPAT)' ./compat/
	$(MAKE) fuzz
	DURATION=25s $(MAKE) scenarios

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzRequest -fuzztime 15s ./kafka/
	$(GO) test -run '^$$' -fuzz FuzzRecovery -fuzztime 10s ./log/

docker:
	./scripts/docker-build.sh

compose-up: docker
	$(COMPOSE) up -d --no-build

# --profile grow: chronik-4 too, when it was started. docker compose v2
# leaves an inactive profile's containers out of a plain down, which then
# cannot remove the network (docker/compose#13647); docker-compose 1.29
# removes them either way.
compose-down:
	$(COMPOSE) --profile grow down -v -t 90

# certs: a private CA and certificates for the three nodes of the secure
# Compose cluster (and the loopback ones) plus an "admin" client
# certificate, written to certs/ (keys 0600). Nothing is downloaded; an
# existing certs/ca.pem is reused.
CERT_NODES ?= chronik-1=172.28.0.11,chronik-2=172.28.0.12,chronik-3=172.28.0.13
certs:
	$(GO) run ./cmd/chronik-certs -out certs -nodes '$(CERT_NODES)' -clients admin -users admin
	@# The containers' unprivileged user reads the bind-mounted files; the
	@# directory itself stays 0700, so on the host only its owner can.
	chmod 0700 certs && chmod 0644 certs/chronik-*.key certs/users.toml # not ca.key

SECURE_COMPOSE := -f docker-compose.yml -f docker-compose.secure.yml
compose-secure-up: docker certs
	$(COMPOSE) $(SECURE_COMPOSE) up -d --no-build

compose-secure-down:
	$(COMPOSE) $(SECURE_COMPOSE) down -v -t 90

# Each scenario runs chronik-verify under load while it rolls, kills,
# partitions or power-cuts the cluster, and fails on any lost record.
$(SCENARIOS:%=scenario-%): scenario-%: build
	./scripts/scenario-$*.sh

scenarios: build
	rc=0; for s in $(SCENARIOS); do ./scripts/scenario-$$s.sh || rc=1; done; exit $$rc

bench: build
	$(GO) run ./cmd/chronik-bench

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

clean:
	rm -rf bin data out
