#!/usr/bin/env bash
# Install everything the tests need (Debian packages, .venv), lint, then run the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k layout -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
venv="${OCICACHE_VENV:-.venv}"
"$venv/bin/ruff" check ocicache tests scripts
exec "$venv/bin/python" -m pytest "$@"
