#!/usr/bin/env bash
# Shared set-up for the README's two commands: a virtualenv in .venv with the tools and test
# dependencies, and ferroloop built (release) and installed into it. Idempotent and quick when
# nothing changed. Usage: source scripts/setup.sh   (sets $PY to the venv's python)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
PY="$ROOT/.venv/bin/python"
stamp=.venv/.requirements-stamp
if [ ! -f "$stamp" ] || ! cmp -s requirements-dev.txt "$stamp"; then
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r requirements-dev.txt
    cp requirements-dev.txt "$stamp"
fi
# Build the extension in release mode and install it (editable: python/ is used in place).
if ! VIRTUAL_ENV="$ROOT/.venv" PATH="$ROOT/.venv/bin:$PATH" \
    "$ROOT/.venv/bin/maturin" develop --release >.venv/build.log 2>&1; then
    cat .venv/build.log >&2
    echo "ferroloop build failed" >&2
    exit 1
fi
export PY
