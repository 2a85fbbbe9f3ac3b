"""Runs CPython's own test.test_asyncio modules on asyncio or ferroloop.

Owns tests/cpython/runner.py.

    python -m tests.cpython.runner --loop {asyncio,ferroloop} MODULE... --json OUT [--isolate]

Without ``--isolate`` the modules run in this process with unittest and OUT gets per-test
outcomes: pass, fail, error, skip, xfail, unexpected-success, plus hang (the per-test watchdog
fired) and crash (the process died in the test). A live progress log (OUT + ".jsonl") is
appended as tests run, so a parent process can recover the results of a run that was killed.
A hang ends such a run (exit status 3) once OUT is written; later tests and modules do not run.

With ``--isolate`` each module runs in child runner processes (see ``run_isolated``): a hang or
crash ends only that child, and the module resumes in a fresh child after the offending test,
within a per-module time budget. table.py and tests/test_cpython_conformance.py use this.

``--loop ferroloop`` makes ferroloop's policy the default one for the whole run: it is set
before each module, and ``asyncio.set_event_loop_policy(None)`` (every module's
``tearDownModule``, many tests' ``tearDown``) brings ferroloop's policy back rather than stock
asyncio's. Modules that build ``SelectorEventLoop`` themselves go through explicit_loop.py.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.events
import faulthandler
import importlib
import json
import os
import pkgutil
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
from pathlib import Path

import test.test_asyncio
from test import support

from tests.cpython import explicit_loop

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "test.test_asyncio"
OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "unexpected-success", "hang", "crash")
# Outcomes that stand for "the test did not get to run" in a comparison.
NOT_RUN = "not-run"
HANG_EXIT = 3
DETAIL_LINES = 12
DETAIL_CHARS = 2000


def short_traceback(text: str) -> str:
    """The tail of a formatted traceback: enough to see where and why, short enough for a table."""
    lines = text.rstrip().splitlines()
    if len(lines) > DETAIL_LINES:
        lines = ["..."] + lines[-DETAIL_LINES:]
    out = "\n".join(lines)
    if len(out) > DETAIL_CHARS:
        out = "..." + out[-DETAIL_CHARS:]
    return out


# --------------------------------------------------------------------------- loop selection


LOOPS = ("asyncio", "ferroloop", "ferroloop-asyncio-tasks")


def ferroloop_factory(loop: str):
    """The loop factory a ferroloop variant stands for: "ferroloop" is the default loop (native
    Future/Task), "ferroloop-asyncio-tasks" the loop with asyncio's own Future/Task
    (native_tasks=False)."""
    import functools

    import ferroloop

    if loop == "ferroloop-asyncio-tasks":
        return functools.partial(ferroloop.new_event_loop, native_tasks=False)
    return ferroloop.new_event_loop


def use_loop(loop: str) -> None:
    """Make ``loop``'s policy the process default, and keep it so across policy resets."""
    if loop == "asyncio":
        asyncio.set_event_loop_policy(None)
        return
    # Imported only when asked for, so that asyncio runs need no ferroloop build.
    import ferroloop

    class Policy(ferroloop.EventLoopPolicy):
        _loop_factory = staticmethod(ferroloop_factory(loop))

    def _init_ferroloop_policy() -> None:
        # Stands in for asyncio.events._init_event_loop_policy, which lazily creates the
        # default policy after set_event_loop_policy(None): ferroloop's policy instead.
        with asyncio.events._lock:
            if asyncio.events._event_loop_policy is None:
                asyncio.events._event_loop_policy = Policy()

    asyncio.events._init_event_loop_policy = _init_ferroloop_policy
    asyncio.set_event_loop_policy(Policy())


def _policy_loop_type() -> str:
    """What the current policy builds (a check that the run tests the loop it claims to)."""
    probe = asyncio.new_event_loop()
    probe.close()
    return f"{type(probe).__module__}.{type(probe).__qualname__}"


def prepare_module(module, loop: str) -> list[str]:
    """Before a module's tests load: point explicit loop construction at ferroloop."""
    if loop == "asyncio" or module.__name__ not in explicit_loop.EXPLICIT_LOOP_MODULES:
        return []
    return explicit_loop.substitute(module, ferroloop_factory(loop))


# --------------------------------------------------------------------------- progress log


class Progress:
    """Append-only JSON-lines log of the run, flushed per line so it survives a hard kill."""

    def __init__(self, path: Path | None):
        self._fh = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._lock = threading.Lock()

    def emit(self, **event) -> None:
        if self._fh is None:
            return
        with self._lock:
            self._fh.write(json.dumps(event) + "\n")
            self._fh.flush()


# --------------------------------------------------------------------------- watchdog


class Watchdog:
    """Per-test timeout guard.

    A Python thread notices a test past its deadline, logs a "hang" with every thread's stack
    and ends the process (HANG_EXIT). If the stuck code holds the GIL the thread cannot run, so
    faulthandler's C-level timer (a little later) dumps the stacks and exits as a backstop.
    """

    def __init__(self, timeout: float, progress: Progress, on_hang):
        self.timeout = timeout
        self._progress = progress
        self._on_hang = on_hang
        self._cond = threading.Condition()
        self._current: tuple[str, float] | None = None
        threading.Thread(target=self._watch, name="conformance-watchdog", daemon=True).start()

    def arm(self, test_id: str) -> None:
        with self._cond:
            self._current = (test_id, time.monotonic() + self.timeout)
            self._cond.notify()
        faulthandler.dump_traceback_later(self.timeout + 15, exit=True, file=sys.__stderr__)

    def disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        with self._cond:
            self._current = None
            self._cond.notify()

    def _watch(self) -> None:
        while True:
            with self._cond:
                while self._current is None:
                    self._cond.wait()
                test_id, deadline = self._current
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
            self._fire(test_id)

    def _fire(self, test_id: str) -> None:
        sys.__stderr__.write(f"\n*** {test_id}: no result after {self.timeout:.0f}s\n")
        sys.__stderr__.flush()
        faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        frame = sys._current_frames().get(threading.main_thread().ident)
        stack = "".join(traceback.format_stack(frame)) if frame else "(no main thread)"
        detail = f"{stack}hung: no result after {self.timeout:.0f}s (main thread's stack above)"
        self._progress.emit(
            event="result",
            id=test_id,
            outcome="hang",
            detail=short_traceback(detail),
            time=self.timeout,
        )
        self._on_hang(test_id, detail)
        os._exit(HANG_EXIT)


# --------------------------------------------------------------------------- unittest result


class RecordingResult(unittest.TestResult):
    """Keeps one outcome per test id (a failing subtest fails its test)."""

    def __init__(self, tests: dict, progress: Progress, watchdog: Watchdog | None):
        super().__init__()
        self.buffer = True  # swallow the tests' own output; it is kept with failures
        self.tests = tests
        self._progress = progress
        self._watchdog = watchdog
        self._started: dict[str, float] = {}

    def _record(self, test, outcome: str, detail: str = "") -> None:
        test_id = test.id()
        elapsed = time.monotonic() - self._started.get(test_id, time.monotonic())
        previous = self.tests.get(test_id)
        if previous and previous["outcome"] in ("fail", "error"):
            if outcome == "pass":
                return  # a failed subtest already decided it
            if outcome in ("fail", "error"):
                detail = previous["detail"] + "\n---\n" + detail
        entry = {"outcome": outcome, "time": round(elapsed, 3), "detail": short_traceback(detail)}
        self.tests[test_id] = entry
        self._progress.emit(event="result", id=test_id, **entry)

    def startTest(self, test):
        test_id = test.id()
        self._started[test_id] = time.monotonic()
        self._progress.emit(event="start", id=test_id)
        if self._watchdog:
            self._watchdog.arm(test_id)
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        if self._watchdog:
            self._watchdog.disarm()

    def _err(self, test, err) -> str:
        # With buffer set this includes the test's captured output, so it need not also be
        # echoed to the real stdout/stderr (unittest's default for failing tests).
        self._mirrorOutput = False
        return self._exc_info_to_string(err, test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "fail", self._err(test, err))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self._err(test, err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "unexpected-success")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._record(
                test, kind, f"[subtest {subtest._subDescription()}]\n" + self._err(test, err)
            )


# --------------------------------------------------------------------------- in-process run


def _filtered(suite, exclude: set[str]):
    """A copy of ``suite`` without the excluded test ids (keeps the suite nesting)."""
    if isinstance(suite, unittest.TestSuite):
        out = type(suite)()
        for item in suite:
            kept = _filtered(item, exclude)
            if kept is not None:
                out.addTest(kept)
        return out
    return None if suite.id() in exclude else suite


def _ids(suite) -> list[str]:
    if isinstance(suite, unittest.TestSuite):
        return [i for item in suite for i in _ids(item)]
    return [suite.id()]


def run_modules(
    loop: str,
    modules: list[str],
    *,
    timeout: float,
    progress: Progress,
    exclude: set[str],
    on_update,
) -> dict:
    """Run ``modules`` here; returns {module: {"status", "duration", "tests", "notes"}}."""
    support.use_resources = []  # as regrtest's default: no test reaches beyond this machine
    report: dict = {}
    watchdog: Watchdog | None = None

    def on_hang(test_id: str, detail: str) -> None:
        for entry in report.values():
            if test_id in entry.get("plan", ()):
                entry["status"] = "hang"
                entry["tests"][test_id] = {
                    "outcome": "hang",
                    "time": timeout,
                    "detail": short_traceback(detail),
                }
        on_update(report)

    if timeout > 0:
        watchdog = Watchdog(timeout, progress, on_hang)
    for name in modules:
        entry = {"status": "ok", "duration": 0.0, "tests": {}, "notes": [], "plan": []}
        report[name] = entry
        progress.emit(event="module", module=name)
        started = time.monotonic()
        try:
            use_loop(loop)
            module = importlib.import_module(name)
            entry["notes"] = [f"asyncio.new_event_loop() gives {_policy_loop_type()}"]
            entry["notes"] += prepare_module(module, loop)
            suite = unittest.defaultTestLoader.loadTestsFromModule(module)
        except unittest.SkipTest as exc:
            entry["status"] = "skipped"
            entry["notes"].append(f"module skipped: {exc}")
            entry["tests"][name] = {"outcome": "skip", "time": 0.0, "detail": str(exc)}
            progress.emit(event="result", id=name, outcome="skip", time=0.0, detail=str(exc))
            continue
        except Exception:  # noqa: BLE001 -- any import failure is the module's result
            detail = short_traceback(traceback.format_exc())
            entry["status"] = "import-error"
            entry["tests"][name] = {"outcome": "error", "time": 0.0, "detail": detail}
            progress.emit(event="result", id=name, outcome="error", time=0.0, detail=detail)
            continue
        if exclude:
            suite = _filtered(suite, exclude)
        entry["plan"] = _ids(suite)
        progress.emit(event="plan", module=name, ids=entry["plan"])
        result = RecordingResult(entry["tests"], progress, watchdog)
        result.startTestRun()
        try:
            suite.run(result)
        finally:
            result.stopTestRun()
            entry["duration"] = round(time.monotonic() - started, 3)
            progress.emit(event="module_end", module=name, duration=entry["duration"])
            on_update(report)
    return report


def write_report(path: Path, loop: str, modules: dict) -> None:
    data = {"loop": loop, "python": sys.version, "modules": modules}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------- isolated run


def _read_progress(path: Path) -> list[dict]:
    events = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # a line cut short by a kill
    return events


def _dump_head(stderr: str) -> str:
    """The useful part of a dead child's stderr.

    faulthandler (segfault, abort, its own timeout) prints one block per thread, most recent
    call first: keep its headline and the top of the stack of the thread that was running a
    test (not the harness's watchdog thread). Otherwise keep the tail of the output.
    """
    for marker in ("Fatal Python error", "Timeout ("):
        at = stderr.rfind(marker)
        if at < 0:
            continue
        blocks = re.split(r"\n\s*\n", stderr[at:])
        threads = [b for b in blocks[1:] if "thread" in b.split("\n", 1)[0].lower()]
        threads = [b for b in threads if " in _watch" not in b] or threads
        current = [b for b in threads if b.startswith("Current thread")]
        stack = (current or threads or [""])[0].splitlines()[: DETAIL_LINES - 3]
        return "\n".join([blocks[0].splitlines()[0], *stack])
    return stderr[-DETAIL_CHARS:]


_SEVERITY = ("ok", "skipped", "hang", "crash", "import-error", "timeout")


def _worst(a: str, b: str) -> str:
    rank = {s: i for i, s in enumerate(_SEVERITY)}
    return a if rank.get(a, 0) >= rank.get(b, 0) else b


def run_isolated(
    loop: str,
    module: str,
    *,
    budget: float = 300.0,
    test_timeout: float = 60.0,
    max_restarts: int = 8,
    python: str = sys.executable,
) -> dict:
    """Run one module in child runner processes; survive hangs and crashes.

    A child that dies leaves its progress log: the test it was in is marked hang or crash,
    and a new child runs the tests that have not run yet. ``budget`` bounds the whole module;
    tests left over when it runs out (or after ``max_restarts``) are marked not-run.
    """
    started = time.monotonic()
    tests: dict[str, dict] = {}
    plan: list[str] = []
    status = "ok"
    notes: list[str] = []
    restarts = 0
    with tempfile.TemporaryDirectory(prefix="ferroloop-conformance-") as tmp:
        workdir = Path(tmp)
        while True:
            left = budget - (time.monotonic() - started)
            if left <= 1:
                status = "timeout"
                notes.append(f"module budget of {budget:.0f}s used up")
                break
            out = workdir / f"run{restarts}.json"
            exclude = workdir / f"exclude{restarts}.txt"
            exclude.write_text("\n".join(tests), encoding="utf-8")
            cmd = [
                python,
                "-X",
                "faulthandler",
                "-m",
                "tests.cpython.runner",
                "--loop",
                loop,
                "--json",
                str(out),
                "--exclude-file",
                str(exclude),
                "--test-timeout",
                str(min(test_timeout, max(left - 1, 1))),
                "--workdir",
                str(workdir),
                module,
            ]
            env = dict(
                os.environ,
                PYTHONPATH=os.pathsep.join(
                    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p
                ),
            )
            log = workdir / f"stderr{restarts}.txt"
            killed = False
            with open(log, "wb") as err:
                proc = subprocess.Popen(
                    cmd, cwd=REPO_ROOT, env=env, stdout=err, stderr=err, stdin=subprocess.DEVNULL
                )
                try:
                    proc.wait(timeout=left)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    killed = True
            events = _read_progress(Path(str(out) + ".jsonl"))
            current = None  # the test in progress when the child ended, if any
            watchdog_hang = None  # a test the child's own watchdog reported hung
            finished = False  # the child got past the module's last test
            for ev in events:
                kind = ev.get("event")
                if kind == "plan" and not plan:
                    plan = list(ev["ids"])
                elif kind == "start":
                    current = ev["id"]
                elif kind == "result":
                    tests[ev["id"]] = {k: ev[k] for k in ("outcome", "time", "detail") if k in ev}
                    if ev["id"] == current:
                        current = None
                    if ev.get("outcome") == "hang":
                        watchdog_hang = ev["id"]
                elif kind == "module_end":
                    finished = True
            if proc.returncode == 0 and not killed:
                if out.exists():
                    final = json.loads(out.read_text(encoding="utf-8"))["modules"].get(module, {})
                    if final.get("status") not in (None, "ok"):
                        status = _worst(status, final["status"])
                    notes.extend(n for n in final.get("notes", []) if n not in notes)
                    for test_id, entry in final.get("tests", {}).items():
                        tests.setdefault(test_id, entry)
                break
            tail = _dump_head(log.read_text(encoding="utf-8", errors="replace"))
            if killed:
                why, detail = "hang", f"{tail}\nhung: module budget ({budget:.0f}s) ran out here"
            elif proc.returncode == HANG_EXIT or "Timeout (" in tail:
                why, detail = "hang", f"{tail}\nhung: no result after {test_timeout:.0f}s"
            else:
                why, detail = "crash", f"{tail}\nrunner died: exit status {proc.returncode}"
            status = _worst(status, "timeout" if killed else why)
            if current is not None:
                tests[current] = {"outcome": why, "time": 0.0, "detail": short_traceback(detail)}
                culprit = current
            elif watchdog_hang is not None and proc.returncode == HANG_EXIT:
                culprit = watchdog_hang
            else:
                where = "after the last test" if finished else "outside any test"
                tests[f"{module} ({where})"] = {
                    "outcome": why,
                    "time": 0.0,
                    "detail": short_traceback(detail),
                }
                break  # died between tests: resuming could loop forever
            if killed:
                break
            restarts += 1
            if restarts > max_restarts:
                notes.append(f"gave up after {max_restarts} restarts")
                break
            notes.append(f"restarted after {why} in {culprit}")
    for test_id in plan:
        if test_id not in tests:
            tests[test_id] = {
                "outcome": NOT_RUN,
                "time": 0.0,
                "detail": f"not run: module {status}",
            }
    return {
        "status": status,
        "duration": round(time.monotonic() - started, 3),
        "tests": tests,
        "notes": notes,
        "restarts": restarts,
    }


# --------------------------------------------------------------------------- comparison


def is_harness_skip(entry: dict) -> bool:
    return entry.get("outcome") == "skip" and str(entry.get("detail", "")).startswith(
        explicit_loop.HARNESS_SKIP_PREFIX
    )


# Tests that skip themselves on any loop other than asyncio's own selector loop, because they
# check that class's internals: their skip on ferroloop is not a regression.
NOT_APPLICABLE = {
    # `if not isinstance(loop, selector_events.BaseSelectorEventLoop): skipTest(...)`, then
    # checks BaseSelectorEventLoop's self-pipe (`_internal_fds`, `_csock`, `_ssock`).
    "test.test_asyncio.test_events.EPollEventLoopTests.test_internal_fds",
}


def regressions(stock: dict[str, dict], other: dict[str, dict]) -> dict[str, dict]:
    """Tests passing on stock asyncio that do not pass on the other loop.

    A test missing from the other run counts (it did not get to pass); a skip that the
    harness itself made (a duplicate selector class) does not, nor the self-skip of a test in
    NOT_APPLICABLE.
    """
    out = {}
    for test_id, entry in stock.items():
        if entry.get("outcome") != "pass":
            continue
        theirs = other.get(test_id, {"outcome": NOT_RUN, "detail": "not in the run"})
        if theirs.get("outcome") == "pass" or is_harness_skip(theirs):
            continue
        if test_id in NOT_APPLICABLE and theirs.get("outcome") == "skip":
            continue
        out[test_id] = theirs
    return out


def discover_modules() -> list[str]:
    """Every test module of the stdlib's test.test_asyncio package, sorted."""
    return sorted(
        f"{PACKAGE}.{m.name}"
        for m in pkgutil.iter_modules(test.test_asyncio.__path__)
        if m.name.startswith("test_")
    )


def qualify(name: str) -> str:
    """Accept ``test_locks`` as shorthand for ``test.test_asyncio.test_locks``."""
    return name if "." in name else f"{PACKAGE}.{name}"


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    # A background job of a non-interactive shell starts with SIGINT ignored, and the child
    # processes inherit that; test_runners' Ctrl-C tests then wait forever. Tests expect
    # Python's default SIGINT handling.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(
        prog="python -m tests.cpython.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--loop", choices=LOOPS, required=True)
    parser.add_argument("--json", type=Path, required=True, help="where to write the outcomes")
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=60.0,
        help="seconds one test may take before it counts as hung (0: no guard)",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="each module in child processes that survive hangs and crashes",
    )
    parser.add_argument(
        "--module-budget",
        type=float,
        default=300.0,
        help="with --isolate: seconds for one module in all",
    )
    parser.add_argument("--exclude-file", type=Path, help="test ids (one a line) not to run")
    parser.add_argument(
        "--workdir", type=Path, help="directory to run in (tests write scratch files in the cwd)"
    )
    parser.add_argument(
        "modules",
        nargs="*",
        help="e.g. test.test_asyncio.test_locks or "
        "test_locks; default: every module of test.test_asyncio",
    )
    args = parser.parse_args(argv)
    modules = [qualify(m) for m in args.modules] or discover_modules()
    out = args.json.resolve()

    if args.isolate:
        report = {}
        for name in modules:
            report[name] = run_isolated(
                args.loop, name, budget=args.module_budget, test_timeout=args.test_timeout
            )
            write_report(out, args.loop, report)
            _print_summary(name, report[name])
        return 0 if all(r["status"] in ("ok", "skipped") for r in report.values()) else 1

    exclude = set()
    if args.exclude_file and args.exclude_file.exists():
        exclude = set(filter(None, args.exclude_file.read_text(encoding="utf-8").splitlines()))
    progress = Progress(Path(str(out) + ".jsonl"))
    scratch = None
    if args.workdir is None:
        scratch = tempfile.TemporaryDirectory(prefix="ferroloop-conformance-")
        workdir = Path(scratch.name)
    else:
        workdir = args.workdir.resolve()
    os.chdir(workdir)

    def on_update(report: dict) -> None:
        write_report(
            out,
            args.loop,
            {m: {k: v for k, v in e.items() if k != "plan"} for m, e in report.items()},
        )

    report = run_modules(
        args.loop,
        modules,
        timeout=args.test_timeout,
        progress=progress,
        exclude=exclude,
        on_update=on_update,
    )
    on_update(report)
    for name, entry in report.items():
        _print_summary(name, entry)
    os.chdir(REPO_ROOT)
    if scratch is not None:
        scratch.cleanup()
    return 0


def _print_summary(name: str, entry: dict) -> None:
    counts: dict[str, int] = {}
    for result in entry["tests"].values():
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    shown = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(
        f"{name}: {entry['status']} {entry['duration']:.1f}s {shown}",
        file=sys.__stdout__,
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
