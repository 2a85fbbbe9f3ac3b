"""bench/run.py — owns ferroloop's benchmark suite driver: the row registry, per-loop workers,
the report table (bench/results/latest.md) and the chart (bench/results/latest.png).

Compares stock asyncio, uvloop, rloop and ferroloop (also with asyncio's own Future/Task, and
with its native gather patched in) on event-loop-bound workloads: scheduling and tasks
(bench/wl_core.py), pyperformance's async_tree, TCP/UDP/TLS echo, HTTP servers and memory per
connection/task (bench/wl_net.py).
Each measurement runs in a fresh subprocess (`python bench/run.py --worker ROW LOOP`); loops
are interleaved round-robin within each repeat, and the median of R repeats is reported. A loop
that cannot be imported, or a row it cannot run (NotImplementedError, a crash, a timeout), is
reported as "n/a [k]" with the reason in footnote k, and the run goes on. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import fnmatch
import gc
import importlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import wl_core  # noqa: E402
import wl_net  # noqa: E402
import wl_proc  # noqa: E402

# Loop name -> (module, factory attribute). Each factory returns a fresh, unstarted loop.
LOOPS: dict[str, tuple[str, str]] = {
    "asyncio": ("asyncio", "new_event_loop"),
    "uvloop": ("uvloop", "new_event_loop"),
    "rloop": ("rloop", "new_event_loop"),
    "ferroloop": ("ferroloop", "new_event_loop"),
    "ferroloop-asyncio-tasks": ("ferroloop", "new_event_loop"),
    "ferroloop-gather": ("ferroloop", "new_event_loop"),
}
# Keyword arguments for a loop's factory (ferroloop with asyncio's own Future/Task).
LOOP_KWARGS: dict[str, dict[str, object]] = {
    "ferroloop-asyncio-tasks": {"native_tasks": False},
}
# Variants whose worker calls ferroloop.patch_asyncio() first, so the rows' asyncio.gather,
# sleep, TaskGroup, wait_for and timeout are ferroloop's native ones. They only run the
# scheduling/task and async_tree rows.
GATHER_PATCHED = {"ferroloop-gather"}
BASELINE = "asyncio"
SUBJECT = "ferroloop"

# A worker's own deadline (SIGALRM) for warm-up + measurement, and the driver's backstop.
ALARM = {"full": 90, "quick": 20}
KILL_GRACE = 20


@dataclasses.dataclass(frozen=True)
class Row:
    func: Callable  # (loop, size) -> (quantity, units): seconds (or bytes), work units
    full: int  # size at full scale
    quick: int  # size for --quick
    unit: str
    scale: float  # unit per (quantity / units): 1e9 for ns from seconds, 1 for bytes
    label: str  # size label, formatted with the size
    group: str
    warm: Callable[[int], int] | None = None  # warm-up run's size from the measured size


def frac(f: float) -> Callable[[int], int]:
    """Warm up with a run of f times the measured size."""
    return lambda size: max(1, int(size * f))


def one_level_less(depth: int) -> int:
    """Warm up a tree row with a tree one level shallower (1/6 of the work)."""
    return depth - 1


G_CORE = "scheduling and tasks"
G_TREE = "pyperformance async_tree"
G_TCP = "TCP echo (both ends on the loop)"
G_NET = "UDP, TLS"
G_HTTP = "HTTP server (client in another process)"
G_MEM = "memory (peak RSS growth)"
G_PROC = "subprocesses"
# Rows whose work one process does on the loop and whose time is mostly the kernel's: their
# workers also report the CPU time split between user space and the kernel.
CPU_SPLIT_GROUPS = (G_TCP, G_NET)

TREE_LABEL = "6^{}"
ROWS: dict[str, Row] = {
    "call_soon_chain": Row(
        wl_core.wl_call_soon_chain,
        500_000,
        50_000,
        "ns/callback",
        1e9,
        "N={:,}",
        G_CORE,
        warm=frac(0.25),
    ),
    "call_soon_batch": Row(
        wl_core.wl_call_soon_batch,
        500_000,
        50_000,
        "ns/callback",
        1e9,
        "N={:,}",
        G_CORE,
        warm=frac(0.25),
    ),
    "tree_none": Row(
        wl_core.wl_tree_none, 6, 4, "ms/tree", 1e3, TREE_LABEL, G_CORE, warm=one_level_less
    ),
    "tree_sleep0": Row(
        wl_core.wl_tree_sleep0, 6, 4, "ms/tree", 1e3, TREE_LABEL, G_CORE, warm=one_level_less
    ),
    "timers": Row(
        wl_core.wl_timers, 100_000, 10_000, "ns/timer", 1e9, "N={:,}", G_CORE, warm=frac(0.25)
    ),
    "tree_taskgroup": Row(
        wl_core.wl_tree_taskgroup, 6, 4, "ms/tree", 1e3, TREE_LABEL, G_CORE, warm=one_level_less
    ),
    "tree_create_task": Row(
        wl_core.wl_tree_create_task, 6, 4, "ms/tree", 1e3, TREE_LABEL, G_CORE, warm=one_level_less
    ),
    "tree_sleep1ms": Row(
        wl_core.wl_tree_sleep1ms, 5, 3, "ms/tree", 1e3, TREE_LABEL, G_CORE, warm=one_level_less
    ),
    "future_roundtrip": Row(
        wl_core.wl_future_roundtrip,
        50_000,
        5_000,
        "ns/roundtrip",
        1e9,
        "N={:,}",
        G_CORE,
        warm=frac(0.25),
    ),
    "wait_for": Row(
        wl_core.wl_wait_for, 50_000, 5_000, "ns/call", 1e9, "N={:,}", G_CORE, warm=frac(0.25)
    ),
    "timeout_cm": Row(
        wl_core.wl_timeout_cm, 50_000, 5_000, "ns/block", 1e9, "N={:,}", G_CORE, warm=frac(0.25)
    ),
    "sleep_many": Row(
        wl_core.wl_sleep_many,
        10_000,
        1_000,
        "ms total",
        1e3,
        f"{{:,}} tasks × {wl_core.SLEEP_MANY_ROUNDS} sleeps",
        G_CORE,
        warm=frac(0.25),
    ),
}
for _name, _func in wl_core.ASYNC_TREE_ROWS.items():
    ROWS[_name] = Row(_func, 6, 4, "ms/tree", 1e3, TREE_LABEL, G_TREE, warm=one_level_less)

# Echo rows: size = messages echoed in total (split evenly over the connections); each sized
# for about 1 s on stock asyncio on the reference 2-CPU machine. --quick uses a tenth.
ECHO_MSGS = {
    "tcp_proto": {(1024, 1): 22_000, (1024, 100): 40_000, (65536, 1): 11_000, (65536, 100): 13_000},
    "tcp_stream": {(1024, 1): 10_000, (1024, 100): 20_000, (65536, 1): 6_000, (65536, 100): 5_000},
    "tcp_sock": {(1024, 1): 5_000, (1024, 100): 7_000, (65536, 1): 3_000, (65536, 100): 3_000},
}
for _kind, _rows in (
    ("tcp_proto", wl_net.TCP_PROTO_ROWS),
    ("tcp_stream", wl_net.TCP_STREAM_ROWS),
    ("tcp_sock", wl_net.TCP_SOCK_ROWS),
):
    for _name, (_func, _size, _conns) in _rows.items():
        _full = ECHO_MSGS[_kind][(_size, _conns)]
        _label = f"{{:,}} × {_size // 1024} KiB, {_conns} conn" + ("s" if _conns > 1 else "")
        ROWS[_name] = Row(_func, _full, _full // 10, "µs/msg", 1e6, _label, G_TCP, warm=frac(0.2))
ROWS["udp_echo_1k"] = Row(
    wl_net.wl_udp_echo,
    20_000,
    2_000,
    "µs/msg",
    1e6,
    "{:,} × 1 KiB, 1 client",
    G_NET,
    warm=frac(0.2),
)
ROWS["tls_echo_1k"] = Row(
    wl_net.wl_tls_1k, 7_000, 700, "µs/msg", 1e6, "{:,} × 1 KiB, 1 conn", G_NET, warm=frac(0.2)
)
ROWS["tls_echo_64k"] = Row(
    wl_net.wl_tls_64k, 2_500, 250, "µs/msg", 1e6, "{:,} × 64 KiB, 1 conn", G_NET, warm=frac(0.2)
)
# The HTTP client sends its own warm-up requests (a tenth of the timed ones, at least 100).
_http_label = f"{{:,}} requests, {wl_net.HTTP_CONNS} keep-alive conns"
ROWS["http_aiohttp"] = Row(
    wl_net.wl_http_aiohttp, 4_500, 500, "µs/req", 1e6, _http_label, G_HTTP, warm=lambda s: 0
)
ROWS["http_uvicorn"] = Row(
    wl_net.wl_http_uvicorn, 4_500, 500, "µs/req", 1e6, _http_label, G_HTTP, warm=lambda s: 0
)
ROWS["spawn_wait"] = Row(
    wl_proc.wl_spawn_wait, 300, 30, "ms/child", 1e3, "{:,} × /bin/true", G_PROC, warm=frac(0.1)
)
ROWS["spawn_communicate"] = Row(
    wl_proc.wl_spawn_communicate,
    100,
    10,
    "ms/child",
    1e3,
    "{:,} × python echoing 64 KiB, 10 at a time",
    G_PROC,
    warm=frac(0.1),
)
# Memory rows: a small warm-up (about 1%) loads the code paths without leaving much freed
# memory behind for the measured run to reuse.
ROWS["mem_idle_conn"] = Row(
    wl_net.wl_mem_idle_conn,
    3_000,
    1_000,
    "B/conn",
    1,
    "{:,} connections",
    G_MEM,
    warm=lambda s: 20,
)
ROWS["mem_pending_task"] = Row(
    wl_net.wl_mem_pending_task,
    50_000,
    10_000,
    "B/task",
    1,
    "{:,} tasks",
    G_MEM,
    warm=frac(0.01),
)


def size_label(row: str, quick: bool) -> str:
    r = ROWS[row]
    size = r.quick if quick else r.full
    text = r.label.format(size)
    if r.label == TREE_LABEL:
        tasks = sum(wl_core.TREE_FANOUT**i for i in range(1, size + 1))
        text += f", {tasks:,} tasks"
    return text


def select_rows(patterns: list[str]) -> list[str]:
    """Rows matching any of the names or shell patterns (`tcp_*`), in suite order."""
    chosen = []
    for name in ROWS:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            chosen.append(name)
    return chosen


# --------------------------------------------------------------------------------------------
# Worker: one measurement in this (fresh) process. Prints one JSON line on stdout.
# --------------------------------------------------------------------------------------------


def applicable(row: str, loop_name: str) -> bool:
    """The gather-patched variants only run the rows that are about tasks."""
    return loop_name not in GATHER_PATCHED or ROWS[row].group in (G_CORE, G_TREE)


def worker(row: str, loop_name: str, quick: bool) -> int:
    r = ROWS[row]
    size = r.quick if quick else r.full
    alarm = ALARM["quick" if quick else "full"]
    wl_net.WATCHDOG = alarm * 0.8  # the rows' own watchdogs fire first, with a better reason
    try:
        module, attr = LOOPS[loop_name]
        make = getattr(importlib.import_module(module), attr)
        kwargs = LOOP_KWARGS.get(loop_name, {})
        if loop_name in GATHER_PATCHED:
            importlib.import_module("ferroloop").patch_asyncio()
    except Exception as exc:  # noqa: BLE001 - any import problem means "n/a"
        print(json.dumps({"error": f"import: {type(exc).__name__}: {exc}", "fatal": True}))
        return 0

    def on_alarm(signum, frame):
        # Report and leave at once: an exception raised here could be swallowed by a loop
        # that runs signal handlers inside its own callbacks (uvloop logs and goes on).
        traceback.print_stack(frame, file=sys.stderr)
        print(json.dumps({"error": f"timeout: no result after {alarm}s"}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(alarm)
    try:
        loop = make(**kwargs)
        asyncio.set_event_loop(loop)
        try:
            warm = size if r.warm is None else r.warm(size)
            if quick:
                warm = 0  # a smoke run: no warm-up
            if warm > 0:
                r.func(loop, warm)  # warm-up
            gc.collect()
            before = resource.getrusage(resource.RUSAGE_SELF)
            quantity, units = r.func(loop, size)
            after = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            signal.alarm(0)
            asyncio.set_event_loop(None)
            try:
                loop.close()
            except Exception:  # noqa: BLE001 - a loop that can't close after a failure
                pass
    except Exception as exc:  # noqa: BLE001 - report, don't crash the suite
        traceback.print_exc(file=sys.stderr)
        name = type(exc).__name__
        text = str(exc)
        if not text:  # say where a bare exception came from
            last = traceback.extract_tb(exc.__traceback__)[-1]
            where = "/".join(Path(last.filename).parts[-2:])
            text = f"(raised in {last.name}, {where}:{last.lineno})"
        print(json.dumps({"error": f"{name}: {text}"}))
        return 0
    result = {"value": quantity / units * r.scale, "unit": r.unit}
    if r.group in CPU_SPLIT_GROUPS:
        # CPU seconds of the row's whole call (connection set-up included), per unit.
        result["user"] = (after.ru_utime - before.ru_utime) / units * r.scale
        result["sys"] = (after.ru_stime - before.ru_stime) / units * r.scale
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------
# Driver.
# --------------------------------------------------------------------------------------------


def run_worker(row: str, loop_name: str, quick: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", row, loop_name]
    if quick:
        cmd.append("--quick")
    limit = ALARM["quick" if quick else "full"] + KILL_GRACE
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # let bench/*.py be cached: quicker worker start
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=limit,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout: killed after {limit}s"}
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


def short(reason: str, limit: int = 200) -> str:
    reason = " ".join(reason.split()).replace("|", "/")
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def fmt_value(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio_columns(loops: list[str]) -> list[str]:
    """The other loops ferroloop is compared with (not its own variants)."""
    return [o for o in loops if SUBJECT in loops and not o.startswith(SUBJECT)]


def footnotes(rows: list[str], loops: list[str], errors: dict) -> tuple[dict, list[str]]:
    """Number each distinct failure reason; return ({reason: k}, footnote lines)."""
    index: dict[str, int] = {}
    where: dict[str, list[tuple[str, str]]] = {}
    for w in rows:
        for lp in loops:
            why = errors.get((w, lp))
            if why is None:
                continue
            why = short(why)
            if why not in index:
                index[why] = len(index) + 1
                where[why] = []
            where[why].append((w, lp))
    lines = []
    for why, k in index.items():
        cells = where[why]
        by_loop: dict[str, list[str]] = {}
        for w, lp in cells:
            by_loop.setdefault(lp, []).append(w)
        parts = [
            f"{lp} ({len(ws)} row{'s' if len(ws) > 1 else ''})"
            if len(ws) > 3
            else f"{lp} ({', '.join(ws)})"
            for lp, ws in by_loop.items()
        ]
        lines.append(f"{k}. `{why}` — {'; '.join(parts)}")
    return index, lines


def build_table(
    rows: list[str], loops: list[str], medians: dict, errors: dict, quick: bool
) -> tuple[list[str], list[str]]:
    """The markdown table and its footnotes."""
    index, notes = footnotes(rows, loops, errors)
    others = ratio_columns(loops)
    head = ["workload", "size", "unit", *loops] + [f"{SUBJECT} vs {o}" for o in others]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    group = None
    for w in rows:
        if ROWS[w].group != group:
            group = ROWS[w].group
            out.append("| " + " | ".join([f"**{group}**"] + [""] * (len(head) - 1)) + " |")
        cells = [w, size_label(w, quick), ROWS[w].unit]
        base = medians.get((w, BASELINE))
        for lp in loops:
            m = medians.get((w, lp))
            if not applicable(w, lp):
                cells.append("–")
            elif m is None:
                why = errors.get((w, lp))
                cells.append(f"n/a [{index[short(why)]}]" if why else "n/a")
            elif base is not None and lp != BASELINE and m > 0:
                cells.append(f"{fmt_value(m)} ({base / m:.2f}×)")
            else:
                cells.append(fmt_value(m))
        subj = medians.get((w, SUBJECT))
        for o in others:
            other = medians.get((w, o))
            cells.append(f"**{other / subj:.2f}×**" if subj and other else "n/a")
        out.append("| " + " | ".join(cells) + " |")
    return out, notes


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


def versions(modules: list[str]) -> str:
    code = (
        "import importlib,importlib.metadata as md,sys\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n"
        "        mod=importlib.import_module(m); v=getattr(mod,'__version__',None)\n"
        "        if v is None and m=='asyncio': v='py'+sys.version.split()[0]\n"
        "        if v is None: v=md.version(m)\n"
        "        print(m+' '+str(v))\n"
        "    except Exception:\n"
        "        print(m+' missing')\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, *dict.fromkeys(modules)],
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
        "--only",
        nargs="+",
        metavar="ROW",
        help="rows to run: names or shell patterns (e.g. 'tcp_*'); default all:\n"
        + ", ".join(ROWS),
    )
    p.add_argument("--workloads", help=argparse.SUPPRESS)  # old comma-separated form of --only
    p.add_argument(
        "--loops", default=",".join(LOOPS), help="comma-separated subset of: " + ", ".join(LOOPS)
    )
    p.add_argument(
        "--repeat",
        type=int,
        help="subprocess runs per cell, median reported (default 3; 1 with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for smoke runs")
    p.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "latest.md",
        help="markdown file to write; the chart (.png) and raw samples (.json) go beside it",
    )
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument("--worker", nargs=2, metavar=("ROW", "LOOP"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        row, loop_name = args.worker
        if row not in ROWS or loop_name not in LOOPS:
            p.error(f"unknown worker {args.worker}")
        return worker(row, loop_name, args.quick)
    if args.list:
        for name, r in ROWS.items():
            print(f"{name:24} {r.group:40} {size_label(name, args.quick)}")
        return 0

    patterns = list(args.only or [])
    if args.workloads:
        patterns += [w.strip() for w in args.workloads.split(",") if w.strip()]
    rows = select_rows(patterns) if patterns else list(ROWS)
    unmatched = [pat for pat in patterns if not select_rows([pat])]
    loops = [lp.strip() for lp in args.loops.split(",") if lp.strip()]
    bad = unmatched + [lp for lp in loops if lp not in LOOPS]
    if bad or not rows:
        p.error(f"unknown row/loop: {', '.join(bad) or '(none selected)'}")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        p.error("--repeat must be >= 1")

    # One certificate for the whole run (the TLS rows' workers read it from this directory).
    cert_dir = tempfile.mkdtemp(prefix="ferroloop-bench-")
    os.environ[wl_net.CERT_ENV] = cert_dir
    if any(w.startswith("tls_") for w in rows):
        wl_net.make_cert(Path(cert_dir))

    try:
        return run_suite(args, rows, loops, argv)
    finally:
        shutil.rmtree(cert_dir, ignore_errors=True)


def load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def cpu_split_lines(
    rows: list[str],
    loops: list[str],
    cpu: dict[tuple[str, str], list[tuple[float, float]]],
    errors: dict,
) -> list[str]:
    """The network rows' CPU time, user space and kernel, per unit (medians): how much of a
    message's time any loop's own code could still save."""
    shown = [w for w in rows if any((w, lp) in cpu and (w, lp) not in errors for lp in loops)]
    if not shown:
        return []
    lines = [
        "",
        "CPU time per unit, user space / kernel (median of the runs, the row's unit; the "
        "row's whole call, connection set-up included). The kernel's share is the system "
        "calls and the loopback TCP stack, much the same work on every loop that makes the "
        "same calls:",
        "",
        "| workload | " + " | ".join(loops) + " |",
        "|---|" + "---|" * len(loops),
    ]
    for w in shown:
        cells = []
        for lp in loops:
            v = cpu.get((w, lp))
            if not v or (w, lp) in errors:
                cells.append("–")
                continue
            user = statistics.median(u for u, _ in v)
            kernel = statistics.median(k for _, k in v)
            cells.append(f"{fmt_value(user)} / {fmt_value(kernel)}")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return lines


def run_suite(args: argparse.Namespace, rows: list[str], loops: list[str], argv) -> int:
    load_before = load_average()
    samples: dict[tuple[str, str], list[float]] = {(w, lp): [] for w in rows for lp in loops}
    cpu: dict[tuple[str, str], list[tuple[float, float]]] = {}
    errors: dict[tuple[str, str], str] = {}
    dead: dict[str, str] = {}  # loop -> import error: skip it from then on
    started = time.time()
    total = args.repeat * len(rows) * len(loops)
    done = 0
    for r in range(args.repeat):
        for w in rows:
            for lp in loops:
                done += 1
                if lp in dead or (w, lp) in errors or not applicable(w, lp):
                    continue  # failures are deterministic enough: don't pay for them R times
                res = run_worker(w, lp, args.quick)
                if "value" in res:
                    samples[(w, lp)].append(res["value"])
                    if "user" in res:
                        cpu.setdefault((w, lp), []).append((res["user"], res["sys"]))
                    msg = f"{res['value']:.4g} {res['unit']}"
                else:
                    errors[(w, lp)] = res["error"]
                    if res.get("fatal"):
                        dead[lp] = res["error"]
                    msg = "n/a: " + short(res["error"], 100)
                spent = time.time() - started
                print(
                    f"[{done}/{total} {spent:.0f}s] r{r + 1} {w} {lp}: {msg}",
                    file=sys.stderr,
                    flush=True,
                )
    for lp, why in dead.items():
        for w in rows:
            errors[(w, lp)] = why
    medians = {k: statistics.median(v) for k, v in samples.items() if v and k not in errors}

    mode = "quick" if args.quick else "full"
    mods = [LOOPS[lp][0] for lp in loops]
    if any(ROWS[w].group == G_HTTP for w in rows):
        mods += ["aiohttp", "uvicorn", "httptools"]
    if any(ROWS[w].group == G_TREE for w in rows):
        mods += ["pyperformance"]
    header = [
        "# ferroloop benchmark results",
        "",
        (
            f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}, "
            f"git {git_rev()}, {mode} sizes, median of {args.repeat} runs "
            f"(each a fresh process per loop and row; loops interleaved within each round)"
        ),
        (
            f"- python {platform.python_version()} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs; {versions(mods)}"
        ),
        f"- load average (1/5/15 min) {load_before} at the start, {load_average()} at the end "
        "(the machine is shared: other work inflates every loop's times)",
        f"- wall time {time.time() - started:.0f}s; command: `bench/run.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`",
        "",
    ]
    table, notes = build_table(rows, loops, medians, errors, args.quick)
    legend = [
        "",
        (
            f"Cells: median (lower is better) and, in brackets, {BASELINE}'s value ÷ the loop's "
            f"(>1: better than {BASELINE}). `{SUBJECT} vs X` = X's value ÷ {SUBJECT}'s: "
            f">1 means {SUBJECT} is faster (or, for memory rows, smaller)."
        ),
        "",
        "Rows: see bench/README.md. Echo rows time only the echo traffic (connections are "
        "set up before the clock starts); both ends run on the loop under test. The HTTP "
        "rows' load comes from bench/httpclient.py in a separate process pinned to the "
        "server's CPU (CPU time of both per request). async_tree rows "
        f"run {wl_core.async_tree_source()}'s bm_async_tree classes on each loop "
        "(3.11 has no eager task factory, so the eager variants are left out).",
    ]
    if notes:
        legend += ["", "n/a reasons:", "", *notes]
    spread = ["", "Spread (min–max of the runs, same unit):", ""]
    for (w, lp), v in samples.items():
        if v and (w, lp) in medians:
            spread.append(f"- {w} / {lp}: {fmt_value(min(v))}–{fmt_value(max(v))} (n={len(v)})")
    split = cpu_split_lines(rows, loops, cpu, errors)
    chart_line = []
    png = args.output.with_suffix(".png")
    if not args.no_chart:
        try:
            import chart

            subtitle = (
                f"{mode} sizes, median of {args.repeat} runs, git {git_rev()}, "
                f"{datetime.date.today().isoformat()}, load average {load_before}"
            )
            chart.draw(png, rows, loops, medians, ROWS, BASELINE, subtitle)
            chart_line = ["", f"![speed-up vs {BASELINE}]({png.name})"]
        except ImportError as exc:
            print(f"chart skipped: {exc} (pip install matplotlib)", file=sys.stderr)
    text = "\n".join(header + table + legend + chart_line + split + spread) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    raw = {
        "mode": mode,
        "repeat": args.repeat,
        "samples": {f"{w}/{lp}": v for (w, lp), v in samples.items()},
        "errors": {f"{w}/{lp}": e for (w, lp), e in errors.items()},
        "cpu_user_sys": {f"{w}/{lp}": v for (w, lp), v in cpu.items()},
    }
    args.output.with_suffix(".json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    print(f"wrote {args.output}" + ("" if args.no_chart else f" and {png}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
