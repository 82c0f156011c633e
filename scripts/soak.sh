#!/usr/bin/env bash
# Soaks the whole stack: starts a real Postgres and a real Kafka broker
# (scripts/postgres.sh, scripts/kafka.sh), builds alignet, and runs
#   alignet soak --judgments 1000000 --watch postgres=PID --watch kafka=PID
# which starts every role in its own `alignet serve`, pushes the judgments
# through them, samples the resident memory of every process (the roles,
# Postgres with its backends, Kafka) and verifies the final counts. Extra
# arguments go to `alignet soak` (see `alignet soak --help`). Services
# started here are stopped on exit; running ones are left alone.
#
# Ports default to ones of their own, so a soak does not share the test
# services: SOAK_PGPORT (default 55499) and SOAK_KAFKA_PORT (default 19199).
# A broker started here touches its whole heap at start
# (-XX:+AlwaysPreTouch), so its RSS does not grow as the JVM first uses
# the heap it reserved: growth then means memory beyond the heap.
#
# Examples:
#   scripts/soak.sh
#   scripts/soak.sh --judgments 200000 --rate 5000 --dir /tmp/soak
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PGPORT="${SOAK_PGPORT:-55499}"
export KAFKA_PORT="${SOAK_KAFKA_PORT:-19199}"
export PGDIR="${SOAK_PGDIR:-$REPO/.cache/soak-pg}"
export KAFKA_HEAP="${KAFKA_HEAP:--Xms512m -Xmx512m -XX:+AlwaysPreTouch}"
log() { echo "soak.sh: $*" >&2; }

STARTED_PG=0
STARTED_KAFKA=0
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	if [ "$STARTED_KAFKA" = 1 ]; then scripts/kafka.sh stop || true; fi
	if [ "$STARTED_PG" = 1 ]; then scripts/postgres.sh stop || true; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! scripts/postgres.sh status >/dev/null 2>&1; then
	STARTED_PG=1
	scripts/postgres.sh start
fi
if ! scripts/kafka.sh status >/dev/null 2>&1; then
	STARTED_KAFKA=1
	scripts/kafka.sh start
fi
pg_pid="$(head -n 1 "$PGDIR/data/postmaster.pid")"
kafka_pid="$(cat "${KAFKADIR:-$REPO/.cache/kafka/instance-$KAFKA_PORT}/kafka.pid")"

go build -o bin/alignet ./cmd/alignet
log "bin/alignet soak (Postgres pid $pg_pid, Kafka pid $kafka_pid) $*"
bin/alignet soak \
	--database-url "$(scripts/postgres.sh url)" \
	--kafka-brokers "$(scripts/kafka.sh brokers)" \
	--watch "postgres=$pg_pid" --watch "kafka=$kafka_pid" "$@"
