"""ferroloop.wait against asyncio.wait (the oracle).

Owns tests/test_native_wait.py.

1. CPython 3.11's test_tasks ``BaseTaskTests`` (its test_wait* tests, and the as_completed,
   cancellation and shield tests around them) with ``asyncio.wait`` (and ``asyncio.tasks.wait``)
   rebound to ``ferroloop.wait``, with asyncio's C Task/Future and with ferroloop's. Their
   oracles are the same classes run with asyncio.wait (test_native_task.py).
2. Our own scenarios over asyncio's and ferroloop's loops, each run with asyncio.wait and with
   ferroloop.wait; the traces (done/pending sets, errors, callbacks left on the futures) must be
   equal.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio import futures, tasks

import ferroloop
import pytest
from test.test_asyncio import test_tasks
from test.test_asyncio import utils as test_utils

pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="ferroloop's wait follows Python 3.11's"
)

ASYNCIO_WAIT = tasks.wait


class _FerroWait:
    """asyncio.wait and asyncio.tasks.wait are ferroloop.wait during each test."""

    def setUp(self):
        asyncio.wait = tasks.wait = ferroloop.wait
        self.addCleanup(setattr, asyncio, "wait", ASYNCIO_WAIT)
        self.addCleanup(setattr, tasks, "wait", ASYNCIO_WAIT)
        super().setUp()


class TestFerroWait_CTask_CFuture(_FerroWait, test_tasks.BaseTaskTests, test_utils.TestCase):
    Task = tasks._CTask
    Future = futures._CFuture


class TestFerroWait_FerroTask_FerroFuture(
    _FerroWait, test_tasks.BaseTaskTests, test_utils.TestCase
):
    Task = ferroloop.Task
    Future = ferroloop.Future


# --------------------------------------------------------------------------------------------
# 2. Our own scenarios: asyncio.wait and ferroloop.wait give the same trace.
# --------------------------------------------------------------------------------------------

WAITS = {"asyncio": ASYNCIO_WAIT, "ferroloop": ferroloop.wait}


async def _outcome(awaitable):
    try:
        return ("ok", await awaitable)
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        return ("raised", type(exc).__name__, str(exc))


def _names(done_pending, names):
    done, pending = done_pending
    return (sorted(names[f] for f in done), sorted(names[f] for f in pending))


async def _scenario_modes(wait):
    trace = []
    loop = asyncio.get_running_loop()

    async def after(delay, value=None, exc=None):
        await asyncio.sleep(delay)
        if exc is not None:
            raise exc
        return value

    for mode in (asyncio.ALL_COMPLETED, asyncio.FIRST_COMPLETED, asyncio.FIRST_EXCEPTION):
        fs = {
            asyncio.create_task(after(0.001, "a")): "a",
            asyncio.create_task(after(0.003, exc=ValueError("b"))): "b",
            asyncio.create_task(after(0.01, "c")): "c",
        }
        result = await wait(list(fs), return_when=mode)
        trace.append((mode, _names(result, fs)))
        await wait(list(fs))
    # FIRST_EXCEPTION: a cancelled future does not count as an exception.
    fut_a, fut_b = loop.create_future(), loop.create_future()
    loop.call_soon(fut_a.cancel)
    loop.call_later(0.002, fut_b.set_result, 1)
    result = await wait([fut_a, fut_b], return_when=asyncio.FIRST_EXCEPTION)
    trace.append(("cancelled first", _names(result, {fut_a: "a", fut_b: "b"})))
    # A timeout returns what is done by then; nothing is raised or cancelled.
    slow = asyncio.create_task(after(3600))
    quick = asyncio.create_task(after(0, "q"))
    result = await wait({slow, quick}, timeout=0.005)
    trace.append(("timeout", _names(result, {slow: "slow", quick: "quick"}), slow.cancelled()))
    slow.cancel()
    # Already-done futures: returns without waiting for the loop.
    done = loop.create_future()
    done.set_result(None)
    result = await wait([done, done], timeout=0)
    trace.append(("done already", _names(result, {done: "done"})))
    # An iterator of tasks; duplicates collapse.
    t = asyncio.create_task(after(0, "t"))
    result = await wait(iter([t, t]))
    trace.append(("iterator", _names(result, {t: "t"})))
    # The shared callback is removed from every future afterwards.
    pending = loop.create_future()
    finished = loop.create_future()
    loop.call_soon(finished.set_result, 0)
    await wait([pending, finished], return_when=asyncio.FIRST_COMPLETED)
    trace.append(("callbacks left", pending._callbacks, finished._callbacks))
    pending.cancel()
    return trace


async def _scenario_errors(wait):
    trace = []
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    async def coro():
        return None

    c = coro()
    trace.append(await _outcome(wait(fut)))
    trace.append(await _outcome(wait(c)))
    c.close()
    trace.append(await _outcome(wait([])))
    trace.append(await _outcome(wait(set())))
    trace.append(await _outcome(wait([fut], return_when="SOMETIMES")))
    trace.append(await _outcome(wait([fut], return_when=None)))
    c = coro()
    trace.append(await _outcome(wait([fut, c])))
    c.close()
    trace.append(await _outcome(wait([42])))
    trace.append(await _outcome(wait(42)))
    trace.append(await _outcome(wait([fut], timeout="soon")))
    trace.append(fut._callbacks)
    fut.cancel()
    return trace


async def _scenario_outer_cancel(wait):
    trace = []
    loop = asyncio.get_running_loop()
    futs = [loop.create_future() for _ in range(3)]
    task = asyncio.create_task(wait(futs, timeout=3600))
    await asyncio.sleep(0)
    task.cancel("outer")
    trace.append(await _outcome(task))
    trace.append([f._callbacks for f in futs])
    trace.append([f.cancelled() for f in futs])
    # close() while waiting runs _wait's finally: the callbacks go.
    w = wait(futs)
    trace.append(w.send(None) is not None)
    w.close()
    trace.append([f._callbacks for f in futs])
    for f in futs:
        f.cancel()
    w = wait(futs)
    trace.append(asyncio.iscoroutine(w))
    w.close()
    return trace


SCENARIOS = {
    "modes": _scenario_modes,
    "errors": _scenario_errors,
    "outer_cancel": _scenario_outer_cancel,
}
LOOPS = {"asyncio": asyncio.new_event_loop, "ferroloop": ferroloop.new_event_loop}


def _run(loop_factory, scenario, wait):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(scenario(wait))


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_trace_equals_asyncio_wait(loop_name, scenario):
    expected = _run(LOOPS[loop_name], SCENARIOS[scenario], WAITS["asyncio"])
    got = _run(LOOPS[loop_name], SCENARIOS[scenario], WAITS["ferroloop"])
    assert got == expected


def test_patch_asyncio_installs_and_restores_wait():
    ferroloop.patch_asyncio()
    try:
        assert asyncio.wait is ferroloop.wait
        assert asyncio.tasks.wait is ferroloop.wait
    finally:
        ferroloop.unpatch_asyncio()
    assert asyncio.wait is ASYNCIO_WAIT
    assert asyncio.tasks.wait is ASYNCIO_WAIT
