#!/usr/bin/env bash
# Installs the Kafka client tools the compatibility tests drive, when they
# are missing: kcat (librdkafka), python3-confluent-kafka, jq. It uses
# apt-get and so needs root on a Debian machine; elsewhere it says what is
# missing and leaves it to you.
set -euo pipefail
need=()
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v jq >/dev/null 2>&1 || need+=(jq)
/usr/bin/python3 -c 'import confluent_kafka' >/dev/null 2>&1 || need+=(python3-confluent-kafka)
if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || apt-get update
	apt-get install -y -qq "${need[@]}" >/dev/null || apt-get install -y "${need[@]}"
else
	echo "missing ${need[*]}: install them (apt-get install ${need[*]}) to run the compatibility tests" >&2
	exit 1
fi
