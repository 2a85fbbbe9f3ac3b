"""bench/run.py — owns ferroloop's benchmark suite: workloads, per-loop workers, report table.

Compares stock asyncio, uvloop, rloop and ferroloop on a few event-loop-bound workloads.
Each measurement runs in a fresh subprocess (`python bench/run.py --worker WORKLOAD LOOP`),
loops are interleaved round-robin, and the median of R repeats is reported as a markdown
table (stdout and bench/results/latest.md). A loop that cannot be imported or that errors is
reported as "n/a (reason)" and the run goes on. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Loop name -> (module, factory attribute). Each factory returns a fresh, unstarted loop.
LOOPS: dict[str, tuple[str, str]] = {
    "asyncio": ("asyncio", "new_event_loop"),
    "uvloop": ("uvloop", "new_event_loop"),
    "rloop": ("rloop", "new_event_loop"),
    "ferroloop": ("ferroloop", "new_event_loop"),
    "ferroloop-native": ("ferroloop", "new_event_loop"),
    "ferroloop-gather": ("ferroloop", "new_event_loop"),
    "ferroloop-native-gather": ("ferroloop", "new_event_loop"),
}
# Keyword arguments for a loop's factory (ferroloop with its native Future/Task).
LOOP_KWARGS: dict[str, dict[str, object]] = {
    "ferroloop-native": {"native_tasks": True},
    "ferroloop-native-gather": {"native_tasks": True},
}
# Variants whose worker calls ferroloop.patch_asyncio() first: the workloads' asyncio.gather is
# then ferroloop's native gather (the tree_* gather workloads, tree_sleep1ms, sleep_many).
GATHER_PATCHED = {"ferroloop-gather", "ferroloop-native-gather"}
BASELINE = "asyncio"
SUBJECT = "ferroloop"

TREE_FANOUT = 6
WORKER_TIMEOUT = 300.0  # seconds for one worker (warm-up + measurement)


# --------------------------------------------------------------------------------------------
# Workloads. Each takes (loop, size) and returns (elapsed_seconds, units_done); only the timed
# part is inside perf_counter. Each checks its own result, so a loop that drops work fails
# instead of looking fast.
# --------------------------------------------------------------------------------------------


class WrongResult(Exception):
    """The loop ran the workload but did not do all the work it was given."""


def wl_call_soon_chain(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """One callback that re-schedules itself with call_soon until it has run n times."""
    remaining = n
    call_soon = loop.call_soon

    def cb() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining:
            call_soon(cb)
        else:
            loop.stop()

    t0 = time.perf_counter()
    call_soon(cb)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    if remaining != 0:
        raise WrongResult(f"chain: {remaining} of {n} callbacks did not run")
    return elapsed, n


def wl_call_soon_batch(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """n call_soon in a row, then one run of the loop that executes them all."""
    done = 0
    call_soon = loop.call_soon

    def cb() -> None:
        nonlocal done
        done += 1

    t0 = time.perf_counter()
    for _ in range(n):
        call_soon(cb)
    call_soon(loop.stop)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    if done != n:
        raise WrongResult(f"batch: {done} of {n} callbacks ran")
    return elapsed, n


def _tree(
    loop: asyncio.AbstractEventLoop,
    depth: int,
    suspend: bool,
    spawn: str = "gather",
    leaf_delay: float = 0.0,
) -> tuple[float, int]:
    """A tree of coroutines, `depth` levels deep, TREE_FANOUT branches per node.

    Same shape as pyperformance's async_tree: every inner node runs TREE_FANOUT children as
    Tasks. `spawn` says how: "gather" (`asyncio.gather` of the child coroutines), "taskgroup"
    (`asyncio.TaskGroup` + `tg.create_task`) or "create_task" (`asyncio.create_task` for each
    child, then await the tasks one by one). A leaf either returns at once (suspend=False, like
    the "none" variant) or does `await asyncio.sleep(leaf_delay)` (suspend=True: with delay 0
    that is one extra loop round-trip per leaf; with delay > 0 every leaf waits on a timer).
    """
    leaves = 0
    n_leaves = TREE_FANOUT**depth

    async def leaf() -> None:
        nonlocal leaves
        if suspend:
            await asyncio.sleep(leaf_delay)
        leaves += 1

    async def node_gather(level: int) -> None:
        if level == 0:
            await leaf()
            return
        await asyncio.gather(*[node_gather(level - 1) for _ in range(TREE_FANOUT)])

    async def node_taskgroup(level: int) -> None:
        if level == 0:
            await leaf()
            return
        async with asyncio.TaskGroup() as tg:
            for _ in range(TREE_FANOUT):
                tg.create_task(node_taskgroup(level - 1))

    async def node_create_task(level: int) -> None:
        if level == 0:
            await leaf()
            return
        create_task = asyncio.create_task
        tasks = [create_task(node_create_task(level - 1)) for _ in range(TREE_FANOUT)]
        for t in tasks:
            await t

    node = {"gather": node_gather, "taskgroup": node_taskgroup, "create_task": node_create_task}
    t0 = time.perf_counter()
    loop.run_until_complete(node[spawn](depth))
    elapsed = time.perf_counter() - t0
    if leaves != n_leaves:
        raise WrongResult(f"tree: {leaves} of {n_leaves} leaves ran")
    if leaf_delay and elapsed < leaf_delay * 0.5:
        raise WrongResult(
            f"tree: took {elapsed * 1e3:.3f} ms, but each leaf sleeps {leaf_delay * 1e3:g} ms"
        )
    return elapsed, 1


def wl_tree_none(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=False)


def wl_tree_sleep0(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=True)


def wl_tree_taskgroup(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=False, spawn="taskgroup")


def wl_tree_create_task(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=False, spawn="create_task")


def wl_tree_sleep1ms(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=True, leaf_delay=0.001)


def wl_future_roundtrip(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """One coroutine, n times: create a future, call_soon(fut.set_result, i), await it."""

    async def main() -> int:
        total = 0
        create_future = loop.create_future
        call_soon = loop.call_soon
        for i in range(n):
            fut = create_future()
            call_soon(fut.set_result, i)
            total += await fut
        return total

    t0 = time.perf_counter()
    total = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    if total != n * (n - 1) // 2:
        raise WrongResult(f"future_roundtrip: sum of results {total}, expected {n * (n - 1) // 2}")
    return elapsed, n


SLEEP_MANY_ROUNDS = 10
SLEEP_MANY_DELAY = 0.001


def wl_sleep_many(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """n tasks, each doing `await asyncio.sleep(0.001)` SLEEP_MANY_ROUNDS times in a row."""
    slept = 0

    async def sleeper() -> None:
        nonlocal slept
        for _ in range(SLEEP_MANY_ROUNDS):
            await asyncio.sleep(SLEEP_MANY_DELAY)
            slept += 1

    async def main() -> None:
        await asyncio.gather(*[sleeper() for _ in range(n)])

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    if slept != n * SLEEP_MANY_ROUNDS:
        raise WrongResult(f"sleep_many: {slept} of {n * SLEEP_MANY_ROUNDS} sleeps finished")
    minimum = SLEEP_MANY_ROUNDS * SLEEP_MANY_DELAY * 0.5
    if elapsed < minimum:
        raise WrongResult(
            f"sleep_many: took {elapsed * 1e3:.3f} ms for {SLEEP_MANY_ROUNDS} sequential "
            f"{SLEEP_MANY_DELAY * 1e3:g} ms sleeps"
        )
    return elapsed, 1


def wl_timers(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """n call_later timers (1 h away), all cancelled, then one loop pass to purge them."""
    fired = 0

    def cb() -> None:
        nonlocal fired
        fired += 1

    call_later = loop.call_later
    t0 = time.perf_counter()
    handles = [call_later(3600.0, cb) for _ in range(n)]
    for h in handles:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    if fired:
        raise WrongResult(f"timers: {fired} cancelled timers fired")
    if not all(h.cancelled() for h in handles):
        raise WrongResult("timers: a handle does not report cancelled()")
    return elapsed, n


# name -> (function, full size, quick size, unit, scale from seconds-per-unit, size label)
WORKLOADS: dict[str, tuple] = {
    "call_soon_chain": (wl_call_soon_chain, 500_000, 50_000, "ns/callback", 1e9, "N={:,}"),
    "call_soon_batch": (wl_call_soon_batch, 500_000, 50_000, "ns/callback", 1e9, "N={:,}"),
    "tree_none": (wl_tree_none, 6, 4, "ms/tree", 1e3, "6^{}"),
    "tree_sleep0": (wl_tree_sleep0, 6, 4, "ms/tree", 1e3, "6^{}"),
    "timers": (wl_timers, 100_000, 10_000, "ns/timer", 1e9, "N={:,}"),
    "tree_taskgroup": (wl_tree_taskgroup, 6, 4, "ms/tree", 1e3, "6^{}"),
    "tree_create_task": (wl_tree_create_task, 6, 4, "ms/tree", 1e3, "6^{}"),
    "tree_sleep1ms": (wl_tree_sleep1ms, 5, 3, "ms/tree", 1e3, "6^{}"),
    "future_roundtrip": (wl_future_roundtrip, 50_000, 5_000, "ns/roundtrip", 1e9, "N={:,}"),
    "sleep_many": (
        wl_sleep_many,
        10_000,
        1_000,
        "ms total",
        1e3,
        f"{{:,}} tasks × {SLEEP_MANY_ROUNDS} sleeps",
    ),
}


def size_label(workload: str, quick: bool) -> str:
    _, full, small, _, _, label = WORKLOADS[workload]
    size = small if quick else full
    text = label.format(size)
    if workload.startswith("tree_"):
        tasks = sum(TREE_FANOUT**i for i in range(1, size + 1))
        text += f", {tasks:,} tasks"
    return text


# --------------------------------------------------------------------------------------------
# Worker: one measurement in this (fresh) process. Prints one JSON line on stdout.
# --------------------------------------------------------------------------------------------


def worker(workload: str, loop_name: str, quick: bool) -> int:
    func, full, small, unit, scale, _ = WORKLOADS[workload]
    size = small if quick else full
    try:
        module, attr = LOOPS[loop_name]
        make = getattr(importlib.import_module(module), attr)
        kwargs = LOOP_KWARGS.get(loop_name, {})
        if loop_name in GATHER_PATCHED:
            importlib.import_module("ferroloop").patch_asyncio()

        def factory():
            return make(**kwargs)

    except Exception as exc:  # noqa: BLE001 - any import problem means "n/a"
        print(json.dumps({"error": f"import: {type(exc).__name__}: {exc}", "fatal": True}))
        return 0
    try:
        loop = factory()
        asyncio.set_event_loop(loop)
        try:
            func(loop, size)  # warm-up, same size as the measurement
            gc.collect()
            elapsed, units = func(loop, size)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    except Exception as exc:  # noqa: BLE001 - report, don't crash the suite
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 0
    print(json.dumps({"value": elapsed / units * scale, "unit": unit}))
    return 0


# --------------------------------------------------------------------------------------------
# Driver.
# --------------------------------------------------------------------------------------------


def run_worker(workload: str, loop_name: str, quick: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", workload, loop_name]
    if quick:
        cmd.append("--quick")
    try:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=WORKER_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {WORKER_TIMEOUT:.0f}s"}
    lines = proc.stdout.strip().splitlines()
    if lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    err = proc.stderr.strip().splitlines()
    last = err[-1] if err else "no output"
    if proc.returncode < 0:
        return {"error": f"crashed (signal {-proc.returncode}): {last}"}
    return {"error": f"exit {proc.returncode}: {last}"}


def short(reason: str, limit: int = 70) -> str:
    reason = " ".join(reason.split()).replace("|", "/")
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def fmt_value(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def build_table(
    workloads: list[str], loops: list[str], medians: dict, errors: dict, quick: bool
) -> list[str]:
    head = ["workload", "size", "unit", *loops]
    extra = [o for o in ("uvloop", "rloop") if SUBJECT in loops and o in loops]
    head += [f"{SUBJECT} vs {o}" for o in extra]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in workloads:
        unit = WORKLOADS[w][3]
        cells = [w, size_label(w, quick), unit]
        base = medians.get((w, BASELINE))
        for lp in loops:
            m = medians.get((w, lp))
            if m is None:
                cells.append(f"n/a ({short(errors.get((w, lp), 'no result'))})")
            elif base is not None and lp != BASELINE:
                cells.append(f"{fmt_value(m)} ({base / m:.2f}×)")
            else:
                cells.append(fmt_value(m))
        subj = medians.get((w, SUBJECT))
        for o in extra:
            other = medians.get((w, o))
            cells.append(f"{other / subj:.2f}×" if subj and other else "n/a")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "none"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def loop_versions(loops: list[str]) -> str:
    code = (
        "import importlib,sys\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n"
        "        mod=importlib.import_module(m); v=getattr(mod,'__version__',None)\n"
        "        if v is None and m=='asyncio': v='py'+sys.version.split()[0]\n"
        "        print(m+' '+str(v))\n"
        "    except Exception:\n"
        "        print(m+' missing')\n"
    )
    mods = [LOOPS[lp][0] for lp in loops]
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, *mods],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return ", ".join(out.stdout.split("\n")[:-1]) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of: " + ", ".join(WORKLOADS),
    )
    p.add_argument(
        "--loops", default=",".join(LOOPS), help="comma-separated subset of: " + ", ".join(LOOPS)
    )
    p.add_argument("--repeat", type=int, default=5, help="subprocess runs per cell (median)")
    p.add_argument("--quick", action="store_true", help="small sizes, for smoke runs")
    p.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "latest.md",
        help="markdown file to write (raw samples go beside it as .json)",
    )
    p.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "LOOP"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        workload, loop_name = args.worker
        if workload not in WORKLOADS or loop_name not in LOOPS:
            p.error(f"unknown worker {args.worker}")
        return worker(workload, loop_name, args.quick)

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    loops = [lp.strip() for lp in args.loops.split(",") if lp.strip()]
    bad = [w for w in workloads if w not in WORKLOADS] + [lp for lp in loops if lp not in LOOPS]
    if bad:
        p.error(f"unknown workload/loop: {', '.join(bad)}")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")

    samples: dict[tuple[str, str], list[float]] = {(w, lp): [] for w in workloads for lp in loops}
    errors: dict[tuple[str, str], str] = {}
    dead: dict[str, str] = {}  # loop -> import error: skip it from then on
    started = time.time()
    total = args.repeat * len(workloads) * len(loops)
    done = 0
    for r in range(args.repeat):
        for w in workloads:
            for lp in loops:
                done += 1
                if lp in dead or (w, lp) in errors:
                    continue  # failures are deterministic enough: don't pay for them R times
                res = run_worker(w, lp, args.quick)
                if "value" in res:
                    samples[(w, lp)].append(res["value"])
                    msg = f"{res['value']:.4g} {res['unit']}"
                else:
                    errors[(w, lp)] = res["error"]
                    if res.get("fatal"):
                        dead[lp] = res["error"]
                    msg = "n/a: " + short(res["error"])
                print(f"[{done}/{total}] r{r + 1} {w} {lp}: {msg}", file=sys.stderr, flush=True)
    for lp, why in dead.items():
        for w in workloads:
            errors[(w, lp)] = why
    medians = {k: statistics.median(v) for k, v in samples.items() if v and k not in errors}

    mode = "quick" if args.quick else "full"
    header = [
        "# ferroloop benchmark results",
        "",
        (
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}, "
            f"git {git_rev()}, {mode} sizes, median of {args.repeat} runs "
            f"(each a fresh process: warm-up run, then one timed run)"
        ),
        (
            f"- python {platform.python_version()} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs; {loop_versions(loops)}"
        ),
        f"- wall time {time.time() - started:.0f}s",
        "",
    ]
    legend = [
        "",
        (
            f"Cells: median (lower is better) and, in brackets, speed-up vs {BASELINE} "
            f"({BASELINE} time ÷ loop time; >1 means faster than {BASELINE}). "
            f"`{SUBJECT} vs X` = X time ÷ {SUBJECT} time: >1 means {SUBJECT} is faster."
        ),
    ]
    spread = ["", "Spread (min–max of the runs, same unit):", ""]
    for (w, lp), v in samples.items():
        if v and (w, lp) in medians:
            spread.append(f"- {w} / {lp}: {fmt_value(min(v))}–{fmt_value(max(v))} (n={len(v)})")
    table = build_table(workloads, loops, medians, errors, args.quick)
    text = "\n".join(header + table + legend + spread) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    raw = {
        "mode": mode,
        "repeat": args.repeat,
        "samples": {f"{w}/{lp}": v for (w, lp), v in samples.items()},
        "errors": {f"{w}/{lp}": e for (w, lp), e in errors.items()},
    }
    args.output.with_suffix(".json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
