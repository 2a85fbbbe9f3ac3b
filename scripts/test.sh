#!/usr/bin/env bash
# Every test: the Rust core's unit tests, then the pytest suite (behaviour tests over asyncio and
# ferroloop, CPython's test_asyncio modules run on ferroloop). Installs what it needs itself.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
echo "== cargo test (ferroloop-core)"
cargo test -q -p ferroloop-core 2>&1 | grep -E "^(test result|running|error|warning)" || true
cargo test -q -p ferroloop-core >/dev/null 2>&1
echo "== lint (cargo fmt, clippy, ruff)"
cargo fmt --all -- --check
cargo clippy -q --all-targets -- -D warnings
"$ROOT/.venv/bin/ruff" check -q python scripts bench tests examples
echo "== pytest"
"$PY" -m pytest -q -p no:cacheprovider tests "$@"
echo "== pytest, asyncio debug mode (PYTHONASYNCIODEBUG=1): behaviour tests"
PYTHONASYNCIODEBUG=1 "$PY" -m pytest -q -p no:cacheprovider "$@" \
    tests/test_loop_scheduling.py tests/test_loop_io.py tests/test_loop_errors.py \
    tests/test_threadsafe.py tests/test_signals.py tests/test_entry_points.py \
    tests/test_leaks.py tests/test_tutorial.py tests/test_transports.py tests/test_sockops.py \
    tests/test_tls.py tests/test_subprocess.py tests/test_real_libraries.py \
    tests/test_transport_start.py tests/test_known_callbacks.py tests/test_native_taskgroup.py \
    tests/test_native_sleep.py tests/test_task_registry.py tests/test_native_timeout.py \
    tests/test_native_wait_for.py tests/test_native_wait.py tests/test_exception_chaining.py \
    tests/test_callback_context.py
