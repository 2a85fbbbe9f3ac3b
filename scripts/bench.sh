#!/usr/bin/env bash
# scripts/bench.sh — owns the one-command benchmark run: set up .venv (uvloop, rloop, ferroloop
# built in release mode) via scripts/setup.sh, then run the suite in bench/run.py.
# Usage: scripts/bench.sh [--quick] [--repeat R] [--workloads a,b] [--loops x,y] [--output F]
set -euo pipefail
# shellcheck source=scripts/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"   # cds to the repo root, sets $PY
exec "$PY" bench/run.py "$@"
