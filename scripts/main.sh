#!/usr/bin/env bash
# The main job: build ferroloop, run every example on ferroloop and on stock asyncio, check that
# the outputs agree, and print a side-by-side timing table. Installs what it needs itself.
# Extra arguments go to scripts/run_examples.py (e.g. --repeat 3, --only 04_gather_order).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
"$PY" scripts/run_examples.py "$@"
