"""Tests that the benchmark harness (bench/run.py) runs and writes a table that parses.

Runs two cheap rows with --quick on asyncio and ferroloop in subprocesses (a few seconds), and
checks the table/footnote/chart code on hand-made results. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"


def load_run():
    """bench/run.py as a module (imported once; it puts bench/ on sys.path)."""
    if "bench_run" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_run", RUN)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_run"] = mod  # dataclasses look their module up here
        spec.loader.exec_module(mod)
    return sys.modules["bench_run"]


def parse_table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The markdown table's header and its rows by first cell (group rows left out)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    head = cells[0]
    assert set(lines[1].replace("|", "")) == {"-"}, lines[1]
    rows = {}
    for row in cells[2:]:
        assert len(row) == len(head), row
        if not row[0].startswith("**"):
            rows[row[0]] = row
    return head, rows


def number(cell: str) -> float:
    return float(cell.split(" ")[0].replace(",", "").strip("*×"))


def test_quick_run_writes_a_table_for_both_loops(tmp_path):
    out = tmp_path / "r.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--quick",
            "--only",
            "call_soon_batch",
            "mem_pending_task",
            "--loops",
            "asyncio,ferroloop",
            "--output",
            str(out),
            "--no-chart",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    head, rows = parse_table(out.read_text(encoding="utf-8"))
    assert head[:5] == ["workload", "size", "unit", "asyncio", "ferroloop"]
    assert head[5:] == ["ferroloop vs asyncio"]
    assert list(rows) == ["call_soon_batch", "mem_pending_task"]
    for name, unit in (("call_soon_batch", "ns/callback"), ("mem_pending_task", "B/task")):
        row = rows[name]
        assert row[2] == unit
        base, subj, ratio = number(row[3]), number(row[4]), number(row[5])
        assert base > 0 and subj > 0, row
        assert ratio == pytest.approx(base / subj, rel=0.02), row
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["mode"] == "quick" and raw["repeat"] == 1 and raw["errors"] == {}
    assert len(raw["samples"]["call_soon_batch/ferroloop"]) == 1


def test_failed_cells_get_numbered_footnotes():
    run = load_run()
    rows = ["call_soon_chain", "tcp_proto_1k_1c", "udp_echo_1k"]
    loops = ["asyncio", "rloop", "ferroloop"]
    medians = {
        ("call_soon_chain", "asyncio"): 3000.0,
        ("call_soon_chain", "rloop"): 500.0,
        ("call_soon_chain", "ferroloop"): 600.0,
        ("tcp_proto_1k_1c", "asyncio"): 40.0,
        ("udp_echo_1k", "asyncio"): 40.0,
    }
    errors = {
        ("tcp_proto_1k_1c", "ferroloop"): "NotImplementedError: no create_server",
        ("udp_echo_1k", "ferroloop"): "NotImplementedError: no create_server",
        ("tcp_proto_1k_1c", "rloop"): "timeout: killed after 40s",
        ("udp_echo_1k", "rloop"): "crashed (signal 11): |x|",
    }
    table, notes = run.build_table(rows, loops, medians, errors, quick=False)
    head, parsed = parse_table("\n".join(table))
    assert head[-2:] == ["ferroloop vs asyncio", "ferroloop vs rloop"]
    chain = parsed["call_soon_chain"]
    assert chain[4] == "500 (6.00×)"
    assert number(chain[-2]) == pytest.approx(5.0) and number(chain[-1]) == pytest.approx(
        0.83, 0.01
    )
    tcp, udp = parsed["tcp_proto_1k_1c"], parsed["udp_echo_1k"]
    # numbered in table order; the same reason shares one footnote
    assert tcp[4] == "n/a [1]" and tcp[5] == udp[5] == "n/a [2]" and udp[4] == "n/a [3]"
    assert tcp[-1] == "n/a"
    assert len(notes) == 3
    assert notes[0] == "1. `timeout: killed after 40s` — rloop (tcp_proto_1k_1c)"
    assert notes[1].startswith("2. `NotImplementedError: no create_server`")
    assert "ferroloop (tcp_proto_1k_1c, udp_echo_1k)" in notes[1]
    assert "|" not in notes[2]  # a reason cannot break the table


def test_only_accepts_patterns_and_rejects_unknown_rows():
    run = load_run()
    assert run.select_rows(["tcp_sock_*"]) == [
        "tcp_sock_1k_1c",
        "tcp_sock_1k_100c",
        "tcp_sock_64k_1c",
        "tcp_sock_64k_100c",
    ]
    with pytest.raises(SystemExit):
        run.main(["--only", "no_such_row", "--loops", "asyncio"])


def test_chart_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    run = load_run()
    import chart  # bench/ is on sys.path once run.py is loaded

    png = tmp_path / "c.png"
    rows = ["call_soon_chain", "tree_none", "tcp_proto_1k_1c", "mem_idle_conn"]
    loops = ["asyncio", "uvloop", "ferroloop"]
    medians = {(w, lp): 1.0 + i for i, w in enumerate(rows) for lp in loops}
    del medians[("tcp_proto_1k_1c", "ferroloop")]
    chart.draw(png, rows, loops, medians, run.ROWS, "asyncio", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def load_callgrind():
    """bench/callgrind.py as a module."""
    if "bench_callgrind" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "bench_callgrind", ROOT / "bench" / "callgrind.py"
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_callgrind"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_callgrind"]


# A callgrind output file in the tool's own format: compressed object names ("(id) name" once,
# then "(id)"), relative positions, and call lines whose next line is the call's inclusive cost.
CALLGRIND_FILE = """\
# callgrind format
version: 1
positions: line
events: Ir
summary: 1111

ob=(1) /usr/lib/libpython3.11.so.1.0
fl=(1) ceval.c
fn=(1) _PyEval_EvalFrameDefault
10 100
+2 200
cob=(2) /x/python/ferroloop/_ferroloop.cpython-311-x86_64-linux-gnu.so
cfi=(2) task.rs
cfn=(2) Task::step
calls=3 40
12 999999
ob=(2)
fl=(2)
fn=(2)
40 300
* 11
ob=(3) /usr/lib/libc.so.6
fn=(3) malloc
0 500
totals: 1111
"""


def test_callgrind_file_self_costs_by_object(tmp_path):
    cg = load_callgrind()
    path = tmp_path / "x.cg"
    path.write_text(CALLGRIND_FILE)
    total, by_object = cg.self_cost_by_object(path)
    assert total == 1111
    assert by_object == {
        "/usr/lib/libpython3.11.so.1.0": 300,
        "/x/python/ferroloop/_ferroloop.cpython-311-x86_64-linux-gnu.so": 311,
        "/usr/lib/libc.so.6": 500,
    }
    assert sum(by_object.values()) == total  # the call's inclusive line is not counted again
    assert cg.own_share(by_object) == 311


def test_callgrind_per_unit_and_sizes():
    cg = load_callgrind()
    run = load_run()
    assert cg.tree_tasks(6) == 55_987 and cg.tree_tasks(5) == 9_331
    assert cg.per_unit((10, 1_000, 100), (30, 5_000, 900)) == (200.0, 40.0)
    with pytest.raises(ValueError):
        cg.per_unit((10, 1_000, 100), (10, 2_000, 100))
    assert cg.default_sizes(run, "tree_none") == (5, 6)
    assert cg.default_sizes(run, "call_soon_chain") == (25_000, 50_000)
    assert cg.countable(run, "tcp_proto_1k_1c") and cg.countable(run, "tls_echo_1k")
    assert not cg.countable(run, "http_uvicorn") and not cg.countable(run, "mem_idle_conn")


def test_callgrind_ceiling_is_the_ratio_with_ferroloops_library_free():
    cg = load_callgrind()
    # ferroloop: 30,000 a unit, 10,000 of them in its library; the other loop 50,000.
    assert cg.ceiling(50_000, (30_000.0, 10_000.0)) == 2.5
    assert cg.ceiling(50_000, (30_000.0, 0.0)) == 50_000 / 30_000
    with pytest.raises(ValueError):
        cg.ceiling(50_000, (10_000.0, 10_000.0))


def test_cpu_split_lines_show_user_and_kernel_medians():
    run = load_run()
    cpu = {
        ("tcp_proto_1k_1c", "ferroloop"): [(2.0, 12.0), (3.0, 14.0), (4.0, 13.0)],
        ("tcp_proto_1k_1c", "rloop"): [(5.0, 20.0)],
        ("udp_echo_1k", "rloop"): [(1.0, 2.0)],
    }
    errors = {("udp_echo_1k", "rloop"): "boom"}
    lines = run.cpu_split_lines(
        ["tcp_proto_1k_1c", "udp_echo_1k"], ["ferroloop", "rloop"], cpu, errors
    )
    table = [ln for ln in lines if ln.startswith("| ")]
    assert table[0] == "| workload | ferroloop | rloop |"
    assert table[1] == "| tcp_proto_1k_1c | 3.00 / 13.0 | 5.00 / 20.0 |"
    assert len(table) == 2  # udp_echo_1k: its only sample is a failed cell
    assert run.cpu_split_lines(["call_soon_chain"], ["ferroloop"], {}, {}) == []
