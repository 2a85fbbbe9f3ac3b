#!/usr/bin/env python3
"""Run every program in examples/ under stock asyncio and under ferroloop; compare and time.

Owned by the examples suite: this script and examples/*.py (nothing else).

Each example is an ordinary asyncio program with deterministic output. It is run as a
subprocess of the interpreter running this script (sys.executable):

    asyncio:    python examples/X.py
    ferroloop:  python -m ferroloop examples/X.py   (the same program, on ferroloop's loop)

Runs are repeated (--repeat, interleaved between loops so that machine noise affects both
alike). For every run the "transcript" (stdout, stderr and exit code) is captured, and the
wall time of the whole subprocess is measured (interpreter start-up included). A table shows
the median times, the ratio asyncio/ferroloop (> 1 means ferroloop was faster) and whether
the outputs match. Every ferroloop transcript must equal asyncio's exactly, and each loop's
repeated runs must agree with each other.

Exit status: 0 all good; 1 some output differed, a run failed or timed out (unified diffs
are printed after the table); 2 usage error or ferroloop cannot be imported.

Usage:
    python scripts/run_examples.py [--loops asyncio,ferroloop] [--repeat N] [--only NAME]
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"

# Interpreter arguments that select the event loop; the example's path is appended.
LOOP_ARGS: dict[str, list[str]] = {
    "asyncio": [],
    "ferroloop": ["-m", "ferroloop"],
}
# The loop whose output is the reference that the other loops must reproduce.
REFERENCE_LOOP = "asyncio"


@dataclass
class Run:
    """One subprocess run of one example under one loop."""

    transcript: str  # stdout + stderr + exit status, the text that is compared
    seconds: float  # wall time of the subprocess
    ok: bool  # exited with status 0 (and did not time out)


@dataclass
class Outcome:
    """All runs of one example, per loop, and the verdict."""

    name: str
    runs: dict[str, list[Run]] = field(default_factory=dict)
    status: str = "OK"  # OK | DIFF | UNSTABLE | FAIL
    # (label of expected text, expected, label of actual text, actual): shown as diffs.
    diffs: list[tuple[str, str, str, str]] = field(default_factory=list)
    # (label, transcript) of runs that exited non-zero or timed out.
    failures: list[tuple[str, str]] = field(default_factory=list)


def find_examples() -> list[Path]:
    return sorted(p for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))


def select_examples(examples: list[Path], only: list[str]) -> list[Path]:
    """Keep examples whose stem or file name equals a NAME, or whose stem starts with it."""
    if not only:
        return examples
    chosen = [
        p for p in examples if any(n in (p.stem, p.name) or p.stem.startswith(n) for n in only)
    ]
    return chosen


def transcript_of(stdout: str, stderr: str, status: str) -> str:
    """The text that is compared between runs: output streams plus how the process ended."""
    text = stdout
    if stderr:
        text += "[stderr]\n" + stderr + ("" if stderr.endswith("\n") else "\n")
    return text + f"[{status}]\n"


def run_once(loop: str, example: Path, timeout: float) -> Run:
    # Run from the repository root with a relative path, so that any traceback names the
    # file identically under both loops.
    rel = example.relative_to(ROOT).as_posix()
    cmd = [sys.executable, *LOOP_ARGS[loop], rel]
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        seconds = time.perf_counter() - start
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        return Run(transcript_of(out, err, f"timed out after {timeout:g} s"), seconds, False)
    seconds = time.perf_counter() - start
    status = f"exit code {proc.returncode}"
    return Run(transcript_of(proc.stdout, proc.stderr, status), seconds, proc.returncode == 0)


def judge(outcome: Outcome, loops: list[str]) -> None:
    """Set outcome.status and collect what explains a non-OK status."""
    reference_loop = REFERENCE_LOOP if REFERENCE_LOOP in loops else loops[0]
    reference = outcome.runs[reference_loop][0].transcript
    problems: set[str] = set()
    for loop in loops:
        for i, run in enumerate(outcome.runs[loop]):
            label = f"{loop} run {i + 1}"
            if not run.ok:
                problems.add("FAIL")
                outcome.failures.append((label, run.transcript))
            if run.transcript != reference:
                # Another loop disagreeing with the reference is a DIFF; the reference loop
                # disagreeing with itself means the example (or the machine) is not stable.
                problems.add("UNSTABLE" if loop == reference_loop else "DIFF")
                outcome.diffs.append((f"{reference_loop} run 1", reference, label, run.transcript))
    for status in ("FAIL", "DIFF", "UNSTABLE"):  # most severe first
        if status in problems:
            outcome.status = status
            break


def median_ms(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs) * 1000.0


def print_diff(expected_label: str, expected: str, actual_label: str, actual: str) -> None:
    lines = difflib.unified_diff(
        expected.splitlines(keepends=True),
        actual.splitlines(keepends=True),
        fromfile=expected_label,
        tofile=actual_label,
    )
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")


def probe_ferroloop() -> None:
    """Exit with status 2 and an explanation if ferroloop cannot be imported."""
    proc = subprocess.run(
        [sys.executable, "-c", "import ferroloop"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = textwrap.indent("\n".join(proc.stderr.strip().splitlines()[-5:]), "    ")
        print(f"error: `import ferroloop` fails with {sys.executable}:", file=sys.stderr)
        print(tail, file=sys.stderr)
        print(
            "Build and install it first (bash scripts/setup.sh), then run this script with\n"
            ".venv/bin/python, or pass --loops asyncio to run the examples on asyncio only.",
            file=sys.stderr,
        )
        sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run examples/*.py under asyncio and ferroloop; compare output and time."
    )
    parser.add_argument(
        "--loops",
        default="asyncio,ferroloop",
        help="comma-separated loops to run (default: asyncio,ferroloop; "
        f"choices: {', '.join(LOOP_ARGS)})",
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per example and loop (default: 5)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this example (file name, stem, or stem prefix such as 04); "
        "may be repeated or comma-separated",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds before a single run is killed and counted as failed (default: 60)",
    )
    args = parser.parse_args(argv)

    args.loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    unknown = [x for x in args.loops if x not in LOOP_ARGS]
    if not args.loops or unknown:
        parser.error(f"unknown loop(s) {unknown}; choose from {', '.join(LOOP_ARGS)}")
    args.loops = list(dict.fromkeys(args.loops))  # drop duplicates, keep order
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.only = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loops: list[str] = args.loops

    examples = select_examples(find_examples(), args.only)
    if not examples:
        print(f"error: no example matches {args.only} in {EXAMPLES_DIR}", file=sys.stderr)
        return 2
    if "ferroloop" in loops:
        probe_ferroloop()

    # Table layout: one row per example, printed as soon as that example is finished.
    name_width = max(len("example"), *(len(p.stem) for p in examples))
    header = f"{'example':<{name_width}}"
    for loop in loops:
        header += f"  {loop + ' ms':>12}"
    both = REFERENCE_LOOP in loops and "ferroloop" in loops
    if both:
        header += f"  {'ratio':>7}"
    header += "  output"
    print(f"{sys.executable}: {args.repeat} run(s) per example and loop, median wall time")
    print(header)
    print("-" * len(header))

    outcomes: list[Outcome] = []
    ratios: list[float] = []
    for example in examples:
        outcome = Outcome(example.stem, {loop: [] for loop in loops})
        # Interleave loops run by run, so slow phases of the machine hit every loop alike.
        for _ in range(args.repeat):
            for loop in loops:
                outcome.runs[loop].append(run_once(loop, example, args.timeout))
        judge(outcome, loops)
        outcomes.append(outcome)

        row = f"{outcome.name:<{name_width}}"
        for loop in loops:
            row += f"  {median_ms(outcome.runs[loop]):>12.1f}"
        if both:
            ratio = median_ms(outcome.runs[REFERENCE_LOOP]) / median_ms(outcome.runs["ferroloop"])
            ratios.append(ratio)
            row += f"  {ratio:>6.2f}x"
        row += f"  {outcome.status}"
        print(row, flush=True)

    if both and ratios:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        pad = name_width + 14 * len(loops)
        print("-" * len(header))
        print(f"{'geometric mean ratio (asyncio/ferroloop)':<{pad}}  {geomean:>6.2f}x")

    failed = [o for o in outcomes if o.status != "OK"]
    for outcome in failed:
        print(f"\n=== {outcome.name}: {outcome.status} ===")
        shown: set[str] = set()  # transcripts already printed for this example
        for expected_label, expected, actual_label, actual in outcome.diffs:
            if actual in shown:  # identical wrong transcripts: show the diff only once
                continue
            shown.add(actual)
            print_diff(expected_label, expected, actual_label, actual)
        for label, transcript in outcome.failures:
            if transcript in shown:  # already visible in a diff above
                continue
            shown.add(transcript)
            print(f"--- {label} failed; its transcript:")
            sys.stdout.write(transcript)

    if failed:
        print(
            f"\n{len(failed)} of {len(outcomes)} example(s) not OK: "
            + ", ".join(f"{o.name} ({o.status})" for o in failed)
        )
        return 1
    print(f"\nall {len(outcomes)} example(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
