"""ferroloop.sleep against asyncio.sleep (the oracle).

Owns tests/test_native_sleep.py.

1. CPython 3.11's own tests with ``asyncio.sleep`` (and ``asyncio.tasks.sleep``) rebound to
   ``ferroloop.sleep`` for the duration of each test: test_tasks' ``BaseTaskTests`` (sleeps in
   most of its tests: test_sleep, test_sleep_cancel, test_task_cancel_sleeping_task,
   cancellation, wait_for and shield tests) with asyncio's C Task/Future and with ferroloop's,
   and test_waitfor / test_timeouts (timeouts around sleeps) on asyncio's loop and on
   ferroloop's. Their oracles are the same classes run with asyncio.sleep
   (test_native_task.py, and the conformance suite).
2. Our own scenarios over asyncio's and ferroloop's loops, each run with asyncio.sleep and with
   ferroloop.sleep; the traces must be equal.
"""

from __future__ import annotations

import asyncio
from asyncio import futures, tasks

import ferroloop
import pytest
from test.test_asyncio import test_tasks, test_timeouts, test_waitfor
from test.test_asyncio import utils as test_utils

ASYNCIO_SLEEP = tasks.sleep


class _FerroSleep:
    """asyncio.sleep and asyncio.tasks.sleep are ferroloop.sleep during each test."""

    def setUp(self):
        asyncio.sleep = tasks.sleep = ferroloop.sleep
        self.addCleanup(setattr, asyncio, "sleep", ASYNCIO_SLEEP)
        self.addCleanup(setattr, tasks, "sleep", ASYNCIO_SLEEP)
        super().setUp()


class TestFerroSleep_CTask_CFuture(_FerroSleep, test_tasks.BaseTaskTests, test_utils.TestCase):
    Task = tasks._CTask
    Future = futures._CFuture


class TestFerroSleep_FerroTask_FerroFuture(
    _FerroSleep, test_tasks.BaseTaskTests, test_utils.TestCase
):
    Task = ferroloop.Task
    Future = ferroloop.Future


class _FerroloopPolicy:
    """The module's IsolatedAsyncioTestCase loops are ferroloop's."""

    def setUp(self):
        asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())
        self.addCleanup(asyncio.set_event_loop_policy, None)
        super().setUp()


class TestFerroSleep_WaitFor(_FerroSleep, test_waitfor.AsyncioWaitForTest):
    pass


class TestFerroSleep_WaitFor_FerroLoop(
    _FerroloopPolicy, _FerroSleep, test_waitfor.AsyncioWaitForTest
):
    pass


class TestFerroSleep_Timeouts(_FerroSleep, test_timeouts.TimeoutTests):
    pass


class TestFerroSleep_Timeouts_FerroLoop(_FerroloopPolicy, _FerroSleep, test_timeouts.TimeoutTests):
    pass


# --------------------------------------------------------------------------------------------
# 2. Our own scenarios: asyncio.sleep and ferroloop.sleep give the same trace.
# --------------------------------------------------------------------------------------------

SLEEPS = {"asyncio": ASYNCIO_SLEEP, "ferroloop": ferroloop.sleep}


def _outcome(fn):
    try:
        return ("ok", fn())
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        return ("raised", type(exc).__name__, str(exc))


async def _scenario_results(sleep):
    trace = []
    loop = asyncio.get_running_loop()
    trace.append(await sleep(0))
    trace.append(await sleep(0, "zero"))
    trace.append(await sleep(-5, ("a", "tuple")))
    trace.append(await sleep(0.001, [1, 2]))
    trace.append(await sleep(0.001))
    # sleep(0) yields to the loop exactly once: a callback scheduled before it runs first,
    # one scheduled from that callback does not.
    order = []
    loop.call_soon(lambda: (order.append("soon"), loop.call_soon(order.append, "next")))
    await sleep(0)
    order.append("after sleep(0)")
    await sleep(0)
    trace.append(order)
    return trace


async def _scenario_cancel(sleep):
    trace = []
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(sleep(3600, "never"))
    await sleep(0)
    timers_while_sleeping = _timer_count(loop)
    task.cancel("stop")
    trace.append(_outcome(lambda: None))
    try:
        await task
    except asyncio.CancelledError as exc:
        trace.append(("cancelled", exc.args))
    trace.append(task.cancelled())
    await sleep(0)
    if timers_while_sleeping is not None:
        # The cancelled sleep cancelled its timer (asyncio.sleep's finally: h.cancel()).
        trace.append(_timer_count(loop) == timers_while_sleeping - 1)
    return trace


def _timer_count(loop):
    """How many live timers the loop holds, where the loop tells (None elsewhere)."""
    scheduled = getattr(loop, "_scheduled", None)
    if isinstance(scheduled, list):
        return sum(not h.cancelled() for h in scheduled)
    return None


async def _scenario_timeout(sleep):
    trace = []
    try:
        await asyncio.wait_for(sleep(3600), 0.005)
    except TimeoutError:
        trace.append("timed out")
    try:
        async with asyncio.timeout(0.005):
            await sleep(3600)
    except TimeoutError:
        trace.append("timeout() expired")
    trace.append(await asyncio.wait_for(sleep(0.001, "in time"), 5))
    done, pending = await asyncio.wait([asyncio.ensure_future(sleep(0.001, 1))])
    trace.append(([t.result() for t in done], len(pending)))
    trace.append(await asyncio.gather(sleep(0.002, "b"), sleep(0.001, "a"), sleep(0, "c")))
    return trace


async def _scenario_protocol(sleep):
    """The coroutine protocol by hand: errors, throw, close, reuse."""
    trace = []
    trace.append(asyncio.iscoroutine(sleep(1)))
    coro = sleep(0)
    trace.append(_outcome(lambda: coro.send(1)))  # can't send non-None to a just-started one
    trace.append(_outcome(lambda: coro.send(None)))  # the bare yield of sleep(0)
    trace.append(_outcome(lambda: coro.send(None)))  # StopIteration(None)
    trace.append(_outcome(lambda: coro.send(None)))  # reused
    coro = sleep(0, "r")
    coro.send(None)
    trace.append(_outcome(lambda: coro.throw(ValueError("thrown"))))
    trace.append(_outcome(lambda: coro.send(None)))
    coro = sleep(0)
    trace.append(_outcome(lambda: coro.throw(KeyError, "k")))  # thrown before it started
    coro = sleep(0)
    coro.send(None)
    trace.append(_outcome(coro.close))
    trace.append(_outcome(lambda: coro.send(None)))
    coro = sleep(10)
    fut = coro.send(None)  # waits on a future of the running loop
    trace.append((asyncio.isfuture(fut), fut._asyncio_future_blocking, fut.done()))
    trace.append(_outcome(coro.close))
    await asyncio.sleep(0)
    trace.append(fut.done())  # closing cancels the timer, not the future
    try:
        await sleep("soon")
    except TypeError as exc:  # `delay <= 0` is evaluated when the coroutine starts
        trace.append(("TypeError", str(exc)))
    return trace


SCENARIOS = {
    "results": _scenario_results,
    "cancel": _scenario_cancel,
    "timeout": _scenario_timeout,
    "protocol": _scenario_protocol,
}


@pytest.mark.filterwarnings("ignore:coroutine 'sleep' was never awaited:RuntimeWarning")
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_same_trace_as_asyncio_sleep(loop_factory, scenario):
    traces = {}
    for name, sleep in SLEEPS.items():
        loop = loop_factory()
        traces[name] = loop.run_until_complete(SCENARIOS[scenario](sleep))
        loop.close()
    assert traces["ferroloop"] == traces["asyncio"]


@pytest.mark.filterwarnings("ignore:coroutine 'sleep' was never awaited:RuntimeWarning")
def test_no_running_loop():
    outcomes = []
    for sleep in SLEEPS.values():
        coro = sleep(1)
        outcomes.append(_outcome(lambda coro=coro: coro.send(None)))
    assert outcomes[0] == outcomes[1] == ("raised", "RuntimeError", "no running event loop")


def test_patch_asyncio_installs_and_removes_sleep():
    assert asyncio.sleep is ASYNCIO_SLEEP
    ferroloop.patch_asyncio()
    try:
        assert asyncio.sleep is ferroloop.sleep and tasks.sleep is ferroloop.sleep
    finally:
        ferroloop.unpatch_asyncio()
    assert asyncio.sleep is ASYNCIO_SLEEP and tasks.sleep is ASYNCIO_SLEEP


def test_cycle_through_a_sleep_is_collected(loop_factory):
    """A sleeping coroutine is visible to the collector: a cycle through its result (and
    through the task driving it) is freed once the loop is gone."""
    import gc
    import weakref

    class Holder:
        pass

    loop = loop_factory()
    holder = Holder()
    holder.coro = ferroloop.sleep(3600, holder)
    task = loop.create_task(holder.coro)
    loop.run_until_complete(asyncio.sleep(0))
    assert not task.done()
    ref = weakref.ref(holder)
    task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert task.cancelled()
    del holder, task
    loop.close()
    gc.collect()
    assert ref() is None
