#!/usr/bin/env bash
# scripts/bench.sh — owns the one-command benchmark run: set up .venv (uvloop, rloop, ferroloop
# built in release mode) via scripts/setup.sh, install the suite's own packages
# (requirements-bench.txt: matplotlib, aiohttp, uvicorn, pyperformance, ...), then run the suite
# in bench/run.py, which writes bench/results/latest.md and latest.png.
# Usage: scripts/bench.sh [--quick] [--repeat R] [--only ROW...] [--loops x,y] [--output F]
set -euo pipefail
# shellcheck source=scripts/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"   # cds to the repo root, sets $PY
stamp=.venv/.requirements-bench-stamp
if [ ! -f "$stamp" ] || ! cmp -s requirements-bench.txt "$stamp"; then
    "$PY" -m pip install -q -r requirements-bench.txt
    cp requirements-bench.txt "$stamp"
fi
exec "$PY" bench/run.py "$@"
