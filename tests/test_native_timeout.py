"""ferroloop.timeout / timeout_at / Timeout against asyncio's (the oracle).

Owns tests/test_native_timeout.py.

1. CPython 3.11's own test_timeouts with ``asyncio.timeout``, ``asyncio.timeout_at`` and
   ``asyncio.Timeout`` (and the same names in ``asyncio.timeouts``) rebound to ferroloop's for
   the duration of each test, on asyncio's loop and on ferroloop's. Its oracle is the same
   class run with asyncio's own timeouts (the conformance suite).
2. Our own scenarios over asyncio's and ferroloop's loops, each run with asyncio's timeouts and
   with ferroloop's; the traces must be equal: expiry and its exception chain, no expiry,
   reschedule (later, earlier, to the past, to None), nesting, an outer cancel that wins,
   misuse errors, repr at each state, awaiting the enter/exit steps by hand.
"""

from __future__ import annotations

import asyncio
import asyncio.timeouts
import gc
import sys
import weakref

import ferroloop
import pytest
from test.test_asyncio import test_timeouts

pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="ferroloop's timeouts follow Python 3.11's"
)

ASYNCIO_TIMEOUTS = {
    name: getattr(asyncio.timeouts, name) for name in ("timeout", "timeout_at", "Timeout")
}
FERRO_TIMEOUTS = {
    "timeout": ferroloop.timeout,
    "timeout_at": ferroloop.timeout_at,
    "Timeout": ferroloop.Timeout,
}


class _FerroTimeouts:
    """asyncio's timeout names are ferroloop's during each test."""

    def setUp(self):
        for name, native in FERRO_TIMEOUTS.items():
            for module in (asyncio, asyncio.timeouts):
                setattr(module, name, native)
                self.addCleanup(setattr, module, name, ASYNCIO_TIMEOUTS[name])
        super().setUp()


class _FerroloopPolicy:
    """The module's IsolatedAsyncioTestCase loops are ferroloop's."""

    def setUp(self):
        asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())
        self.addCleanup(asyncio.set_event_loop_policy, None)
        super().setUp()


class TestFerroTimeouts(_FerroTimeouts, test_timeouts.TimeoutTests):
    pass


class TestFerroTimeouts_FerroLoop(_FerroloopPolicy, _FerroTimeouts, test_timeouts.TimeoutTests):
    pass


# --------------------------------------------------------------------------------------------
# 2. Our own scenarios: asyncio's timeouts and ferroloop's give the same trace.
# --------------------------------------------------------------------------------------------

IMPLS = {"asyncio": ASYNCIO_TIMEOUTS, "ferroloop": FERRO_TIMEOUTS}


def _exc(exc):
    """An exception as comparable data, its chain included."""
    if exc is None:
        return None
    return (
        type(exc).__name__,
        exc.args,
        _exc(exc.__cause__) if exc.__cause__ is not exc else "self",
        type(exc.__context__).__name__ if exc.__context__ is not None else None,
        exc.__suppress_context__,
    )


def _shape(text):
    """A repr with the loop-time deadline replaced (it differs run to run)."""
    if " when=" in text and "when=None" not in text:
        return text.split(" when=")[0] + " when=<t>>"
    return text


async def _scenario_expire(t):
    trace = []
    cm = t["timeout"](0.01)
    trace.append(_shape(repr(cm)))
    try:
        async with cm as entered:
            trace.append(entered is cm)
            trace.append(_shape(repr(cm)))
            trace.append(cm.expired())
            await asyncio.sleep(3600)
    except TimeoutError as exc:
        trace.append(("raised", _exc(exc)))
    trace.append(cm.expired())
    trace.append(repr(cm))
    trace.append(asyncio.current_task().cancelling())
    return trace


async def _scenario_no_expiry(t):
    trace = []
    loop = asyncio.get_running_loop()
    async with t["timeout"](3600) as cm:
        await asyncio.sleep(0)
        trace.append(cm.when() > loop.time())
    trace.append((cm.expired(), repr(cm)))
    async with t["timeout"](None) as cm:
        trace.append(cm.when())
        trace.append(repr(cm))
    async with t["timeout_at"](None) as cm:
        await asyncio.sleep(0)
    trace.append(repr(cm))
    # An exception from the body passes through untouched.
    try:
        async with t["timeout"](3600):
            raise KeyError("body")
    except KeyError as exc:
        trace.append(("raised", _exc(exc)))
    return trace


async def _scenario_reschedule(t):
    trace = []
    loop = asyncio.get_running_loop()
    async with t["timeout"](None) as cm:
        cm.reschedule(loop.time() + 3600)
        trace.append(cm.when() > loop.time())
        cm.reschedule(None)
        trace.append(cm.when())
        await asyncio.sleep(0.005)
    trace.append(cm.expired())
    try:
        async with t["timeout"](3600) as cm:
            cm.reschedule(loop.time() + 0.005)
            await asyncio.sleep(3600)
    except TimeoutError:
        trace.append("rescheduled earlier: expired")
    try:
        async with t["timeout"](3600) as cm:
            cm.reschedule(loop.time() - 1)  # in the past: on the next loop turn
            trace.append(_shape(repr(cm)))
            await asyncio.sleep(3600)
    except TimeoutError:
        trace.append("rescheduled to the past: expired")
    try:
        async with t["timeout_at"](loop.time() - 1):
            trace.append("entered with a past deadline")
            await asyncio.sleep(0)
            trace.append("not reached")
    except TimeoutError:
        trace.append("past deadline: expired")
    return trace


async def _scenario_nested_and_outer_cancel(t):
    trace = []
    try:
        async with t["timeout"](0.005) as outer:
            async with t["timeout"](3600) as inner:
                await asyncio.sleep(3600)
    except TimeoutError:
        trace.append(("outer", outer.expired(), "inner", inner.expired()))
    try:
        async with t["timeout"](3600) as outer:
            async with t["timeout"](0.005) as inner:
                await asyncio.sleep(3600)
            trace.append("inner expired, outer goes on")
    except TimeoutError:
        trace.append("not reached")
    trace.append((outer.expired(), inner.expired()))

    # The task is cancelled from outside while the timeout is also due: the outer cancel
    # request stays a CancelledError.
    async def body():
        async with t["timeout"](0.005) as cm:
            asyncio.current_task().cancel("outside")
            await asyncio.sleep(3600)
        return cm

    task = asyncio.create_task(body())
    try:
        await task
    except asyncio.CancelledError as exc:
        trace.append(("cancelled", exc.args))

    # Expiry and a cancel from outside in the same turn.
    async def both():
        async with t["timeout"](0):
            await asyncio.sleep(0)
            await asyncio.sleep(3600)

    task = asyncio.create_task(both())
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        trace.append(("both", type(exc).__name__))
    return trace


async def _scenario_misuse(t):
    trace = []
    loop = asyncio.get_running_loop()

    def outcome(fn):
        try:
            return ("ok", fn())
        except BaseException as exc:  # noqa: BLE001
            return ("raised", type(exc).__name__, str(exc))

    cm = t["Timeout"](None)
    trace.append(outcome(lambda: cm.reschedule(1)))
    trace.append(repr(cm))
    async with cm:
        pass
    trace.append(outcome(lambda: cm.reschedule(1)))
    try:
        async with cm:
            pass
    except RuntimeError as exc:
        trace.append(("reenter", str(exc)))
    cm = t["timeout"](0)
    try:
        async with cm:
            await asyncio.sleep(1)
    except TimeoutError:
        trace.append(outcome(lambda: cm.reschedule(None)))
    trace.append(outcome(lambda: t["timeout"]("soon")))
    trace.append(outcome(lambda: t["Timeout"]()))
    trace.append(outcome(lambda: t["Timeout"](1, 2)))
    trace.append(outcome(lambda: t["Timeout"](1, when=2)))
    trace.append(outcome(lambda: t["Timeout"](whenever=2)))
    trace.append(outcome(lambda: t["Timeout"](when=5).when()))
    # Outside a task: a callback awaits the enter step by hand.
    result = []

    def drive():
        step = t["Timeout"](None).__aenter__()
        try:
            for _ in step.__await__():
                pass
        except BaseException as exc:  # noqa: BLE001
            result.append((type(exc).__name__, str(exc)))

    loop.call_soon(drive)
    await asyncio.sleep(0)
    trace.append(result)
    # The enter step, awaited by hand inside a task, returns the Timeout; exit returns None.
    cm = t["Timeout"](None)
    trace.append((await cm.__aenter__()) is cm)
    trace.append(await cm.__aexit__(None, None, None))
    trace.append(repr(cm))
    return trace


SCENARIOS = {
    "expire": _scenario_expire,
    "no_expiry": _scenario_no_expiry,
    "reschedule": _scenario_reschedule,
    "nested_and_outer_cancel": _scenario_nested_and_outer_cancel,
    "misuse": _scenario_misuse,
}


def _run(loop_factory, scenario, impl):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(scenario(impl))


LOOPS = {"asyncio": asyncio.new_event_loop, "ferroloop": ferroloop.new_event_loop}


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_trace_equals_asyncio_timeouts(loop_name, scenario):
    expected = _run(LOOPS[loop_name], SCENARIOS[scenario], IMPLS["asyncio"])
    got = _run(LOOPS[loop_name], SCENARIOS[scenario], IMPLS["ferroloop"])
    assert got == expected


@pytest.mark.parametrize("loop_name", LOOPS)
def test_expiry_leaves_no_timer_and_frees_the_timeout(loop_name):
    async def main():
        loop = asyncio.get_running_loop()
        cm = ferroloop.timeout(3600)
        async with cm:
            await asyncio.sleep(0)
        ref = weakref.ref(cm)
        del cm
        gc.collect()
        scheduled = getattr(loop, "_scheduled", None)
        live = sum(not h.cancelled() for h in scheduled) if isinstance(scheduled, list) else 0
        return ref() is None, live

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        assert runner.run(main()) == (True, 0)


def test_patch_asyncio_installs_and_restores_timeouts():
    ferroloop.patch_asyncio()
    try:
        assert asyncio.timeout is ferroloop.timeout
        assert asyncio.timeouts.timeout_at is ferroloop.timeout_at
        assert asyncio.Timeout is ferroloop.Timeout
    finally:
        ferroloop.unpatch_asyncio()
    assert asyncio.timeout is ASYNCIO_TIMEOUTS["timeout"]
    assert asyncio.timeouts.Timeout is ASYNCIO_TIMEOUTS["Timeout"]
