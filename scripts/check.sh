#!/usr/bin/env bash
# Static checks, run by .ci/run before the tests and by `make check`:
# go.mod and go.sum are tidy, every Go file is gofmt-formatted, and go vet
# and staticcheck (pinned as a Go tool dependency in go.mod) find nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { echo "check.sh: $*" >&2; }
fail=0

log "go mod tidy -diff"
go mod tidy -diff || { log "go.mod/go.sum are not tidy: run go mod tidy"; fail=1; }

log "gofmt -l"
unformatted=$(git ls-files -co --exclude-standard '*.go' | xargs -r gofmt -l)
if [ -n "$unformatted" ]; then
	log "not gofmt-formatted (run gofmt -w):"
	echo "$unformatted" >&2
	fail=1
fi

log "go vet ./..."
go vet ./... || fail=1

log "staticcheck ./..."
go tool staticcheck ./... || fail=1

[ "$fail" = 0 ] && log "ok" || log "FAILED"
exit "$fail"
