#!/usr/bin/env bash
# The project's test command: starts a real Postgres and a real Apache Kafka
# broker (KRaft) with scripts/postgres.sh and scripts/kafka.sh, then runs
#   go test -race -count=1 -timeout 40m ./...
# Extra arguments go to `go test`; when one of them names packages (./...,
# ./npy/), ./... is not added. Services started here are stopped on exit;
# services that were already running are left alone.
#
# Examples:
#   scripts/test.sh
#   scripts/test.sh -run TestStore ./db/
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PGPORT="${PGPORT:-55432}"
export KAFKA_PORT="${KAFKA_PORT:-19092}"

log() { echo "test.sh: $*" >&2; }

command -v go >/dev/null 2>&1 || { log "error: Go is not installed (need Go $(sed -n 's/^go //p' go.mod))"; exit 1; }

# -race needs cgo, hence a C compiler.
if ! command -v "$(go env CC)" >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then
		log "installing gcc for the race detector"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
	else
		log "error: go test -race needs a C compiler: apt-get install gcc"
		exit 1
	fi
fi

# The ops tests run promtool (alert rules and their unit tests) and
# docker-compose config (no engine needed); the e2e tests run a real
# Prometheus. All three come from Debian's packages.
missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		log "installing ${missing[*]} from Debian"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	else
		log "warning: ${missing[*]} not installed (apt-get install ${missing[*]}): their tests skip, and fail under CI=true"
	fi
fi

# The browser tests (e2e) need Chromium, and the plugin package under web/
# needs npm (it comes with Node). Missing pieces are installed as root;
# otherwise the tests that need them skip, or fail under CI=true.
want_web=0
for a in "$@"; do
	case "$a" in ./... | ./e2e/* | ./e2e) want_web=1 ;; esac
done
[ "$#" = 0 ] && want_web=1
if [ "$want_web" = 1 ]; then
	if ! command -v chromium >/dev/null 2>&1 && [ -z "${ALIGNET_CHROMIUM:-}" ]; then
		if [ "$(id -u)" = 0 ]; then
			log "installing chromium for the browser tests"
			DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
		else
			log "warning: no chromium (apt-get install chromium): browser tests skip (fail under CI=true)"
		fi
	fi
	if command -v npm >/dev/null 2>&1; then
		log "web: npm ci && npm test"
		(cd web && npm ci --no-audit --no-fund --loglevel=error && npm test) || { log "error: the web package's tests failed"; exit 1; }
	elif [ "${CI:-}" = true ]; then
		log "error: CI=true and npm is missing (install Node.js with npm)"
		exit 1
	else
		log "warning: no npm: the web package is not built or tested, and the jsPsych browser test skips"
	fi
fi

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

t0=$SECONDS
if ! scripts/postgres.sh status >/dev/null 2>&1; then
	STARTED_PG=1
	scripts/postgres.sh start || { log "error: Postgres did not start"; scripts/postgres.sh logs || true; exit 1; }
fi
if ! scripts/kafka.sh status >/dev/null 2>&1; then
	STARTED_KAFKA=1
	scripts/kafka.sh start || { log "error: Kafka did not start"; scripts/kafka.sh logs || true; exit 1; }
fi
log "services ready in $((SECONDS - t0))s"

ALIGNET_TEST_DATABASE_URL="$(scripts/postgres.sh url)"
ALIGNET_TEST_KAFKA_BROKERS="$(scripts/kafka.sh brokers)"
export ALIGNET_TEST_DATABASE_URL ALIGNET_TEST_KAFKA_BROKERS
export ALIGNET_REPO="$REPO"

# Add ./... unless the caller named packages.
pkgs=(./...)
for a in "$@"; do
	case "$a" in
	./* | ../* | github.com/*) pkgs=() ;;
	esac
done

log "go test -race -count=1 -timeout 40m $* ${pkgs[*]}"
set +e
go test -race -count=1 -timeout 40m "$@" "${pkgs[@]}"
rc=$?
# The race detector makes a few heavy numeric tests too slow, so they skip
# themselves under -race; the full run repeats them without it.
if [ "$rc" = 0 ] && [ "$#" = 0 ]; then
	log "go test -count=1 -run 'TestDistillationOnThings|TestEmbeddingsNPYLarge|TestTHINGSThroughTheStream' ./learner/ ./api/ ./online/ (without -race)"
	go test -count=1 -timeout 20m -run 'TestDistillationOnThings|TestEmbeddingsNPYLarge|TestTHINGSThroughTheStream' -v ./learner/ ./api/ ./online/ | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+(distill_things_test|things_test))' 
	rc=${PIPESTATUS[0]}
fi
# The Python SDK's tests, against a real `alignet dev` they start, in a
# venv under .cache with pinned versions. They run with the full suite and
# whenever ./clients/... is named.
run_python=0
if [ "$#" = 0 ]; then run_python=1; fi
for a in "$@"; do
	case "$a" in ./clients/* | clients/*) run_python=1 ;; esac
done
if [ "$rc" = 0 ] && [ "$run_python" = 1 ]; then
	scripts/python-test.sh
	rc=$?
fi
set -e
if [ "$rc" = 0 ]; then
	log "PASS ($((SECONDS - t0))s)"
else
	log "FAIL (go test exit $rc, $((SECONDS - t0))s)"
fi
exit "$rc"
