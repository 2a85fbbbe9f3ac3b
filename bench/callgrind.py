"""bench/callgrind.py — owns the instruction-count comparison: a row's cost per unit of work
(per task, message, callback) on each loop, counted by valgrind's callgrind, and how much of
ferroloop's count runs in ferroloop's own library.

Wall-clock rows on this shared machine move by ±30% between runs; instruction counts do not.
For each loop the row runs twice in fresh processes under callgrind, at a smaller and a larger
size (a tree one level shallower, half the messages): the difference between the two counts,
divided by the difference in work units, is the cost of one unit with start-up, imports and
set-up cancelled out. Rows whose work spans processes (HTTP, subprocesses) or that measure
memory are not offered. Needs `valgrind` on PATH; run it by hand (it takes minutes a row):

    .venv/bin/python bench/callgrind.py tree_none --loops ferroloop,uvloop
    .venv/bin/python bench/callgrind.py tcp_proto_1k_1c --sizes 1000 2000
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_run():
    """bench/run.py as a module: its row registry and loop table."""
    if "bench_run" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_run", HERE / "run.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_run"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_run"]


# Rows a single process does all the work of, on the loop under test.
COUNTABLE_GROUPS = ("scheduling and tasks", "pyperformance async_tree", "TCP echo", "UDP, TLS")
TREE_FANOUT = 6
OWN_LIBRARY = "_ferroloop."  # the object file name of ferroloop's extension module


def tree_tasks(depth: int) -> int:
    """Tasks in a tree `depth` levels deep, fan-out 6 (what the tree rows build)."""
    return sum(TREE_FANOUT**level for level in range(depth + 1))


def countable(run, row: str) -> bool:
    return run.ROWS[row].group.startswith(COUNTABLE_GROUPS)


def default_sizes(run, row: str) -> tuple[int, int]:
    r = run.ROWS[row]
    if r.label == run.TREE_LABEL:
        return r.full - 1, r.full
    return max(1, r.quick // 2), r.quick


def child(row: str, loop_name: str, size: int) -> int:
    """Runs the row once at `size` on `loop_name` and prints its work units as JSON."""
    run = load_run()
    r = run.ROWS[row]
    module, attr = run.LOOPS[loop_name]
    make = getattr(importlib.import_module(module), attr)
    if loop_name in run.GATHER_PATCHED:
        importlib.import_module("ferroloop").patch_asyncio()
    loop = make(**run.LOOP_KWARGS.get(loop_name, {}))
    try:
        _, units = r.func(loop, size)
    finally:
        loop.close()
    if r.label == run.TREE_LABEL:
        units = tree_tasks(size)
    print(json.dumps({"units": units}))
    return 0


_NAME = re.compile(r"\((\d+)\)(?: (.*))?")


def self_cost_by_object(path: Path) -> tuple[int, Counter]:
    """A callgrind output file's total instructions, and its self cost per object file.

    Reads the file format directly: `ob=` sets the object that the cost lines after it belong
    to (names are compressed as `(id) name`, later `(id)`), and the line after a `calls=`
    line is the inclusive cost of that call, already counted in the callee's own lines.
    """
    names: dict[str, str] = {}
    by_object: Counter = Counter()
    total = 0
    current = "?"
    skip_next = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if skip_next:
                skip_next = False
                continue
            first = line[:1]
            if first.isdigit() or first in "+-*":
                by_object[current] += int(line.split()[-1])
            elif line.startswith("ob="):
                m = _NAME.match(line[3:].strip())
                if m:
                    if m.group(2) is not None:
                        names[m.group(1)] = m.group(2)
                    current = names.get(m.group(1), "?")
                else:
                    current = line[3:].strip()
            elif line.startswith("cob="):
                m = _NAME.match(line[4:].strip())
                if m and m.group(2) is not None:
                    names[m.group(1)] = m.group(2)
            elif line.startswith("calls="):
                skip_next = True
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    return total or sum(by_object.values()), by_object


def own_share(by_object: Counter) -> int:
    return sum(v for name, v in by_object.items() if OWN_LIBRARY in Path(name).name)


def measure(row: str, loop_name: str, size: int, workdir: Path) -> tuple[int, int, int]:
    """(work units, instructions, instructions in ferroloop's library) of one run."""
    out = workdir / f"{row}-{loop_name}-{size}.cg"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        row,
        loop_name,
        str(size),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{loop_name} {row} {size}: {proc.stderr.strip()[-400:]}")
    units = json.loads(lines[-1])["units"]
    total, by_object = self_cost_by_object(out)
    return units, total, own_share(by_object)


def per_unit(small: tuple[int, int, int], big: tuple[int, int, int]) -> tuple[float, float]:
    """Instructions per work unit, and those in ferroloop's library, from two runs."""
    units = big[0] - small[0]
    if units <= 0:
        raise ValueError("the larger size must do more work than the smaller")
    return (big[1] - small[1]) / units, (big[2] - small[2]) / units


def ceiling(other: float, subject: tuple[float, float]) -> float:
    """The most `other ÷ ferroloop` could be: `other`'s count over the part of ferroloop's count
    that runs outside ferroloop's library (CPython, asyncio's Python code, the C library), as
    if ferroloop's own code cost nothing. It bounds the instruction ratio; wall-time ratios
    differ from it (by up to a third on the trees: caches, allocation, page faults), so it
    says how far work on ferroloop's library alone can go, not exactly where it stops."""
    total, own = subject
    outside = total - own
    if outside <= 0:
        raise ValueError("ferroloop's count outside its library must be positive")
    return other / outside


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("rows", nargs="*", help="row names (bench/run.py --list)")
    ap.add_argument("--loops", default="ferroloop,uvloop,rloop", help="comma-separated loops")
    ap.add_argument("--sizes", nargs=2, type=int, metavar=("SMALL", "LARGE"))
    ap.add_argument(
        "--subject",
        default="ferroloop",
        help="the ferroloop variant the ratio columns compare with (e.g. ferroloop-gather)",
    )
    ap.add_argument("--child", nargs=3, metavar=("ROW", "LOOP", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        row, loop_name, size = args.child
        return child(row, loop_name, int(size))
    run = load_run()
    if not args.rows:
        ap.error("name at least one row")
    for row in args.rows:
        if row not in run.ROWS or not countable(run, row):
            ap.error(f"{row}: not a row whose work one process does (see the docstring)")
    if shutil.which("valgrind") is None:
        print("valgrind is not on PATH", file=sys.stderr)
        return 2
    loops = [name for name in args.loops.split(",") if name]
    print(
        "| row | loop | instructions per unit | of which in ferroloop's library "
        "| loop's ÷ ferroloop's (>1: ferroloop runs fewer) "
        "| ceiling: loop's ÷ ferroloop's outside its library |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="ferroloop-callgrind-") as tmp:
        for row in args.rows:
            small_size, big_size = args.sizes or default_sizes(run, row)
            results: dict[str, tuple[float, float] | str] = {}
            for loop_name in loops:
                try:
                    small = measure(row, loop_name, small_size, Path(tmp))
                    big = measure(row, loop_name, big_size, Path(tmp))
                    results[loop_name] = per_unit(small, big)
                except (RuntimeError, ValueError) as exc:
                    results[loop_name] = str(exc).splitlines()[-1][:120]
            subject = results.get(args.subject)
            for loop_name, res in results.items():
                if isinstance(res, str):
                    print(f"| {row} | {loop_name} | n/a: {res} | | | |")
                    continue
                instr, own = res
                own_cell = f"{own:,.0f}" if loop_name.startswith("ferroloop") else ""
                ratio = f"{instr / subject[0]:.2f}" if isinstance(subject, tuple) else ""
                top = ""
                if isinstance(subject, tuple) and not loop_name.startswith("ferroloop"):
                    top = f"{ceiling(instr, subject):.2f}"
                print(f"| {row} | {loop_name} | {instr:,.0f} | {own_cell} | {ratio} | {top} |")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
