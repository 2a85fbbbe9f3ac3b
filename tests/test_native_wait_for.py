"""ferroloop.wait_for against asyncio.wait_for (the oracle).

Owns tests/test_native_wait_for.py.

1. CPython 3.11's own tests with ``asyncio.wait_for`` (and ``asyncio.tasks.wait_for``) rebound
   to ``ferroloop.wait_for`` for the duration of each test: test_waitfor on asyncio's loop and
   on ferroloop's, and test_tasks' ``BaseTaskTests`` (its wait_for tests, and shield and
   cancellation tests around them) with asyncio's C Task/Future and with ferroloop's. Their
   oracles are the same classes run with asyncio's wait_for (test_native_task.py and the
   conformance suite).
2. Our own scenarios over asyncio's and ferroloop's loops, each run with asyncio.wait_for and
   with ferroloop.wait_for; the traces (results, exceptions with their cause/context chains,
   the order of events) must be equal.
"""

from __future__ import annotations

import asyncio
import sys
import types
from asyncio import futures, tasks

import ferroloop
import pytest
from test.test_asyncio import test_tasks, test_waitfor
from test.test_asyncio import utils as test_utils

pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="ferroloop's wait_for follows Python 3.11's"
)

ASYNCIO_WAIT_FOR = tasks.wait_for


class _FerroWaitFor:
    """asyncio.wait_for and asyncio.tasks.wait_for are ferroloop.wait_for during each test."""

    def setUp(self):
        asyncio.wait_for = tasks.wait_for = ferroloop.wait_for
        self.addCleanup(setattr, asyncio, "wait_for", ASYNCIO_WAIT_FOR)
        self.addCleanup(setattr, tasks, "wait_for", ASYNCIO_WAIT_FOR)
        super().setUp()


class _FerroloopPolicy:
    """The module's IsolatedAsyncioTestCase loops are ferroloop's."""

    def setUp(self):
        asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())
        self.addCleanup(asyncio.set_event_loop_policy, None)
        super().setUp()


class TestFerroWaitFor(_FerroWaitFor, test_waitfor.AsyncioWaitForTest):
    pass


class TestFerroWaitFor_FerroLoop(_FerroloopPolicy, _FerroWaitFor, test_waitfor.AsyncioWaitForTest):
    pass


class TestFerroWaitFor_CTask_CFuture(_FerroWaitFor, test_tasks.BaseTaskTests, test_utils.TestCase):
    Task = tasks._CTask
    Future = futures._CFuture


class TestFerroWaitFor_FerroTask_FerroFuture(
    _FerroWaitFor, test_tasks.BaseTaskTests, test_utils.TestCase
):
    Task = ferroloop.Task
    Future = ferroloop.Future


# --------------------------------------------------------------------------------------------
# 2. Our own scenarios: asyncio.wait_for and ferroloop.wait_for give the same trace.
# --------------------------------------------------------------------------------------------

WAIT_FORS = {"asyncio": ASYNCIO_WAIT_FOR, "ferroloop": ferroloop.wait_for}


def _exc(exc, depth=0):
    """An exception as comparable data, its cause and context chain included."""
    if exc is None or depth > 4:
        return None
    return (
        type(exc).__name__,
        exc.args,
        _exc(exc.__cause__, depth + 1),
        _exc(exc.__context__, depth + 1),
        exc.__suppress_context__,
    )


async def _outcome(awaitable):
    try:
        return ("ok", await awaitable)
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        return ("raised", _exc(exc))


class _Awaitable:
    """A third-party awaitable: __await__ returns a generator."""

    def __init__(self, fut):
        self.fut = fut

    def __await__(self):
        return (yield from self.fut)


@types.coroutine
def _generator_coroutine(value):
    yield
    return value


async def _scenario_results(wait_for):
    trace = []
    loop = asyncio.get_running_loop()

    async def value(v, delay=0):
        await asyncio.sleep(delay)
        return v

    async def fail():
        await asyncio.sleep(0)
        raise ValueError("inner")

    trace.append(await _outcome(wait_for(value(1), 1)))
    trace.append(await _outcome(wait_for(value(2), None)))
    trace.append(await _outcome(wait_for(fail(), 1)))
    trace.append(await _outcome(wait_for(fail(), None)))
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "soon")
    trace.append(await _outcome(wait_for(fut, 1)))
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "via awaitable")
    trace.append(await _outcome(wait_for(_Awaitable(fut), None)))
    trace.append(await _outcome(wait_for(_generator_coroutine("gen"), None)))
    trace.append(await _outcome(wait_for(_generator_coroutine("gen2"), 1)))
    done = loop.create_future()
    done.set_result("done")
    trace.append(await _outcome(wait_for(done, 0)))
    trace.append(await _outcome(wait_for(done, -1)))
    failed = loop.create_future()
    failed.set_exception(KeyError("stored"))
    trace.append(await _outcome(wait_for(failed, 0)))
    trace.append(await _outcome(wait_for(failed, 1)))
    trace.append(await _outcome(wait_for(value(3, 0.001), 0)))
    return trace


async def _scenario_timeouts(wait_for):
    trace = []
    loop = asyncio.get_running_loop()
    events = []

    async def slow(tag):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append(("cancelled", tag))
            raise
        finally:
            events.append(("finally", tag))

    trace.append(await _outcome(wait_for(slow("a"), 0.005)))
    trace.append(await _outcome(wait_for(slow("b"), 0)))
    fut = loop.create_future()
    trace.append(await _outcome(wait_for(fut, 0.001)))
    trace.append(fut.cancelled())

    async def stubborn():
        # Swallows the first cancellation and returns a value: wait_for returns it.
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("swallowed")
        return "kept going"

    trace.append(await _outcome(wait_for(stubborn(), 0.001)))

    async def fails_on_cancel():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("while cancelling") from None

    trace.append(await _outcome(wait_for(fails_on_cancel(), 0.001)))
    trace.append(events)
    return trace


async def _scenario_outer_cancel(wait_for):
    trace = []
    events = []

    async def inner():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            events.append(("inner cancelled", exc.args))
            raise

    async def outer(timeout):
        return await wait_for(inner(), timeout)

    for timeout in (3600, None):
        task = asyncio.create_task(outer(timeout))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel("from outside")
        trace.append(await _outcome(task))
        trace.append(task.cancelled())

    # The inner future finishes in the same turn as the outer cancellation: its result wins.
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    task = asyncio.create_task(wait_for(fut, 3600))
    await asyncio.sleep(0)
    fut.set_result("raced")
    task.cancel()
    trace.append(await _outcome(task))
    trace.append(events)
    return trace


async def _scenario_misuse(wait_for):
    trace = []
    trace.append(await _outcome(wait_for(42, None)))
    trace.append(await _outcome(wait_for(42, 1)))
    trace.append(await _outcome(wait_for(42, 0)))

    async def nothing():
        return "nothing"

    inner = nothing()
    trace.append(await _outcome(wait_for(inner, "soon")))
    inner.close()
    coro = nothing()
    trace.append(await _outcome(wait_for(coro, None)))
    trace.append(await _outcome(wait_for(coro, None)))  # reusing a finished coroutine

    class BadAwait:
        def __await__(self):
            return 5

    trace.append(await _outcome(wait_for(BadAwait(), None)))
    # The coroutine protocol of the wait_for coroutine itself.
    inner = nothing()
    w = wait_for(inner, None)
    try:
        w.send("x")
    except TypeError as exc:
        trace.append(("send non-None first", str(exc)))
    w.close()
    trace.append(await _outcome(w))
    inner.close()
    inner = nothing()
    w = wait_for(inner, None)
    try:
        w.throw(KeyError("thrown before start"))
    except KeyError as exc:
        trace.append(("throw before start", exc.args))
    inner.close()
    w = wait_for(nothing(), 1)
    trace.append(type(w).__name__ in ("coroutine", "WaitForCoroutine"))
    trace.append(asyncio.iscoroutine(w))
    trace.append(await w)
    return trace


async def _scenario_close_while_waiting(wait_for):
    """A wait_for closed while suspended cancels its timer and leaves fut pending."""
    trace = []
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    w = wait_for(fut, 3600)
    trace.append(w.send(None) is not None)
    w.close()
    trace.append(("fut", fut.done(), fut.cancelled()))
    scheduled = getattr(loop, "_scheduled", None)
    if isinstance(scheduled, list):
        trace.append(sum(not h.cancelled() for h in scheduled))
    fut.cancel()
    return trace


SCENARIOS = {
    "results": _scenario_results,
    "timeouts": _scenario_timeouts,
    "outer_cancel": _scenario_outer_cancel,
    "misuse": _scenario_misuse,
    "close_while_waiting": _scenario_close_while_waiting,
}
LOOPS = {"asyncio": asyncio.new_event_loop, "ferroloop": ferroloop.new_event_loop}


def _run(loop_factory, scenario, wait_for):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(scenario(wait_for))


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_trace_equals_asyncio_wait_for(loop_name, scenario):
    expected = _run(LOOPS[loop_name], SCENARIOS[scenario], WAIT_FORS["asyncio"])
    got = _run(LOOPS[loop_name], SCENARIOS[scenario], WAIT_FORS["ferroloop"])
    assert got == expected


def test_patch_asyncio_installs_and_restores_wait_for():
    ferroloop.patch_asyncio()
    try:
        assert asyncio.wait_for is ferroloop.wait_for
        assert asyncio.tasks.wait_for is ferroloop.wait_for
    finally:
        ferroloop.unpatch_asyncio()
    assert asyncio.wait_for is ASYNCIO_WAIT_FOR
    assert asyncio.tasks.wait_for is ASYNCIO_WAIT_FOR
