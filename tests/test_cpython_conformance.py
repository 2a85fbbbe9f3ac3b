"""CPython's own test_asyncio modules must pass on ferroloop wherever they pass on asyncio.

Owns tests/test_cpython_conformance.py. Each module runs twice through the harness in
tests/cpython/ (runner subprocesses with a per-test watchdog): on stock asyncio and on
ferroloop. The test fails if any test that passes on asyncio does not pass on ferroloop, and
lists those with their short tracebacks. If ferroloop cannot be imported every ferroloop run
errors, so these fail rather than skip.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

import pytest

# Plain `pytest` (unlike `python -m pytest`) does not put the repository root on sys.path.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

runner = importlib.import_module("tests.cpython.runner")

MODULES = (
    "test_locks",
    "test_queues",
    "test_taskgroups",
    "test_timeouts",
    "test_waitfor",
    "test_threads",
    "test_futures2",
    "test_context",
    "test_runners",
    "test_pep492",
    "test_tasks",
    # The network, TLS and subprocess modules (issues 4 and 5).
    "test_events",
    "test_sock_lowlevel",
    "test_sendfile",
    "test_server",
    "test_buffered_proto",
    "test_streams",
    "test_ssl",
    "test_sslproto",
    "test_subprocess",
    "test_unix_events",
)

MODULE_BUDGET = 300.0  # seconds for one module on one loop, hangs and restarts included
TEST_TIMEOUT = 60.0  # seconds for one test before it counts as hung


MAX_DETAILED = 40  # failures shown with their traceback; the rest by name only


def _describe(test_id: str, entry: dict, detailed: bool) -> str:
    if not detailed:
        return f"{test_id}: {entry['outcome']}"
    detail = entry.get("detail", "").strip()
    indented = "\n".join("    " + line for line in detail.splitlines())
    return f"{test_id}: {entry['outcome']}\n{indented}"


@functools.cache
def _stock_run(name: str) -> dict:
    return runner.run_isolated("asyncio", name, budget=MODULE_BUDGET, test_timeout=TEST_TIMEOUT)


# "ferroloop-asyncio-tasks": the same loop with asyncio's own Future/Task (native_tasks=False).
@pytest.mark.parametrize("variant", ["ferroloop", "ferroloop-asyncio-tasks"])
@pytest.mark.parametrize("module", MODULES)
def test_stock_passing_tests_pass_on_ferroloop(module: str, variant: str) -> None:
    name = runner.qualify(module)
    stock = _stock_run(name)
    passing = [t for t, e in stock["tests"].items() if e["outcome"] == "pass"]
    assert passing, f"{name} passed no test on stock asyncio: {stock['status']} {stock['notes']}"

    ferro = runner.run_isolated(variant, name, budget=MODULE_BUDGET, test_timeout=TEST_TIMEOUT)
    failures = runner.regressions(stock["tests"], ferro["tests"])
    if failures:
        # Errors outside the stock tests (the module or ferroloop failing to import, a hang
        # between tests) explain the rest, so they come first.
        extra = {
            t: e
            for t, e in ferro["tests"].items()
            if t not in stock["tests"] and e["outcome"] not in ("pass", "skip")
        }
        ordered = [*sorted(extra), *sorted(failures)]
        merged = {**failures, **extra}
        report = "\n".join(_describe(t, merged[t], i < MAX_DETAILED) for i, t in enumerate(ordered))
        notes = "; ".join(ferro["notes"])
        pytest.fail(
            f"{len(failures)} of {len(passing)} tests that pass on asyncio do not pass on "
            f"{variant} (module {ferro['status']}{'; ' + notes if notes else ''}):\n{report}",
            pytrace=False,
        )
