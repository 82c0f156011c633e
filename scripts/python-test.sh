#!/usr/bin/env bash
# Runs the Python SDK's tests (clients/python/tests) in a venv under
# .cache/python-venv with the pinned versions of clients/python/constraints.txt.
# The tests build the alignet binary and start `alignet dev` themselves.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { echo "python-test.sh: $*" >&2; }
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1 || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		log "installing python3 and python3-venv"
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
		PY=python3
	else
		log "error: need python3 with venv (apt-get install python3-venv)"
		exit 1
	fi
fi
# alignet dev starts Postgres from the installed server binaries.
scripts/postgres.sh ensure-binaries >/dev/null
VENV="$REPO/.cache/python-venv"
STAMP="$VENV/.stamp"
WANT="$(cat clients/python/pyproject.toml clients/python/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
	log "creating $VENV"
	rm -rf "$VENV"
	"$PY" -m venv "$VENV"
	"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
	"$VENV/bin/python" -m pip install -q -c clients/python/constraints.txt -e "clients/python[test]"
	echo "$WANT" >"$STAMP"
fi
log "pytest clients/python"
cd clients/python
ALIGNET_REPO="$REPO" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests
