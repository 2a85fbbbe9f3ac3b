"""ferroloop.gather against asyncio.gather (the oracle).

Owns tests/test_native_gather.py.

1. CPython 3.11's own gather tests with ``asyncio.gather`` rebound to ``ferroloop.gather`` for
   the duration of each test (``ferroloop.patch_asyncio()`` in setUp, undone by a cleanup):
   - ``GatherTestsBase``'s ``FutureGatherTests`` and ``CoroutineGatherTests``, on CPython's
     TestLoop (as CPython runs them), on ``asyncio.SelectorEventLoop``, on ferroloop's loop and
     on ferroloop's loop with ``native_tasks=True``. Each ferroloop.gather class has an oracle
     twin running the same tests with asyncio.gather on the same loop; a test that fails with
     asyncio.gather too is listed in ``ORACLE_FAILS`` and expected to fail in both.
     ``test_env_var_debug`` (five interpreters checking PYTHONASYNCIODEBUG, no gather) is left
     out.
   - ``BaseTaskTests`` (test_tasks' Task tests, which use gather in test_task_del_collect,
     test_shield_gather, test_gather_shield, test_cancel_gather_1/2, test_context_3 and through
     ``asyncio.run``), whole, with asyncio's C Task/Future and with ferroloop's Task/Future.
     Their asyncio.gather oracles are test_native_task.py's TestAsyncioCTask_CFuture and
     TestFerroTask_FerroFuture.
   - The gather tests of BaseTaskTests again with ferroloop's event loop policy (plain and
     native), for the tests that make their own loop with ``asyncio.new_event_loop()``.
2. Our own tests, over asyncio's and ferroloop's loops (and ferroloop's native-task loop): each
   scenario runs with asyncio.gather and with ferroloop.gather on a fresh loop of the same kind,
   and both traces must be equal (and match what the scenario states).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import sys
import unittest
import weakref
from asyncio import futures, tasks

import ferroloop
import pytest
from test.test_asyncio import test_tasks
from test.test_asyncio import utils as test_utils

# --------------------------------------------------------------------------------------------
# 1. CPython's tests with asyncio.gather rebound.
# --------------------------------------------------------------------------------------------


class _FerroGather:
    """asyncio.gather and asyncio.tasks.gather are ferroloop.gather during each test."""

    def setUp(self):
        ferroloop.patch_asyncio()
        self.addCleanup(ferroloop.unpatch_asyncio)
        super().setUp()


class _AsyncioGather:
    """The oracle: asyncio's own gather (checked, so a leaked patch cannot hide)."""

    def setUp(self):
        assert asyncio.gather is tasks.gather and tasks.gather.__module__ == "asyncio.tasks"
        super().setUp()


def _loop_override(make_loop):
    """Methods making GatherTestsBase use `make_loop()` instead of CPython's TestLoop."""

    def new_test_loop(self, gen=None):
        loop = make_loop()
        self.set_event_loop(loop)
        return loop

    def _run_loop(self, loop):
        # GatherTestsBase._run_loop reads TestLoop's `_ready`; ferroloop counts instead.
        pending = loop._ready_count if hasattr(loop, "_ready_count") else lambda: len(loop._ready)
        while pending():
            test_utils.run_briefly(loop)

    return {"new_test_loop": new_test_loop, "_run_loop": _run_loop}


GATHER_LOOPS = {
    "TestLoop": None,  # CPython's own set-up
    "Selector": asyncio.SelectorEventLoop,
    "FerroAsyncioTasks": lambda: ferroloop.new_event_loop(native_tasks=False),
    "FerroNative": ferroloop.new_event_loop,
}

# Tests that fail with asyncio.gather itself on a loop (so expected to fail with both).
ORACLE_FAILS = {
    # It patches asyncio.base_events.BaseEventLoop.call_exception_handler, which ferroloop's
    # loop is not; the assertion then finds no mock on the loop.
    ("FerroAsyncioTasks", "test_issue46672"): "mocks BaseEventLoop.call_exception_handler",
    ("FerroNative", "test_issue46672"): "mocks BaseEventLoop.call_exception_handler",
}


def _expected_failure(test):
    """unittest.expectedFailure on a copy (it marks the function object, which CPython's class
    shares with every other subclass)."""

    @functools.wraps(test)
    def wrapper(self):
        return test(self)

    return unittest.expectedFailure(wrapper)


def _make_gather_classes():
    made = {}
    for loop_name, make_loop in GATHER_LOOPS.items():
        for base_name in ("FutureGatherTests", "CoroutineGatherTests"):
            base = getattr(test_tasks, base_name)
            for impl, mixin in (("Asyncio", _AsyncioGather), ("Ferro", _FerroGather)):
                ns = {"test_env_var_debug": None}
                if make_loop is not None:
                    ns.update(_loop_override(make_loop))
                for (lp, test), _why in ORACLE_FAILS.items():
                    if lp == loop_name and hasattr(base, test):
                        ns[test] = _expected_failure(getattr(base, test))
                name = f"Test{impl}Gather_{base_name}_{loop_name}"
                made[name] = type(name, (mixin, base), ns)
    return made


globals().update(_make_gather_classes())


class TestFerroGather_CTask_CFuture(_FerroGather, test_tasks.BaseTaskTests, test_utils.TestCase):
    Task = tasks._CTask
    Future = futures._CFuture


class TestFerroGather_FerroTask_FerroFuture(
    _FerroGather, test_tasks.BaseTaskTests, test_utils.TestCase
):
    Task = ferroloop.Task
    Future = ferroloop.Future


TASK_GATHER_TESTS = (
    "test_task_del_collect",
    "test_shield_gather",
    "test_gather_shield",
    "test_cancel_gather_1",
    "test_cancel_gather_2",
    "test_context_3",
)


class _NativePolicy(ferroloop.EventLoopPolicy):
    def _loop_factory(self):
        return ferroloop.new_event_loop(native_tasks=True)


class _Policy:
    """asyncio.new_event_loop() makes ferroloop loops during each test."""

    policy = None

    def setUp(self):
        asyncio.set_event_loop_policy(self.policy())
        self.addCleanup(asyncio.set_event_loop_policy, None)
        super().setUp()


def _make_policy_classes():
    made = {}
    policies = {"FerroPolicy": ferroloop.EventLoopPolicy, "FerroNativePolicy": _NativePolicy}
    pairs = {
        "CTask": (tasks._CTask, futures._CFuture),
        "FerroTask": (ferroloop.Task, ferroloop.Future),
    }
    others = [
        n
        for n in dir(test_tasks.BaseTaskTests)
        if n.startswith("test") and n not in TASK_GATHER_TESTS
    ]
    for pol_name, policy in policies.items():
        for pair_name, (task_cls, fut_cls) in pairs.items():
            for impl, mixin in (("Asyncio", _AsyncioGather), ("Ferro", _FerroGather)):
                ns = {"Task": task_cls, "Future": fut_cls, "policy": policy}
                ns.update({n: None for n in others})
                name = f"Test{impl}Gather_TaskTests_{pair_name}_{pol_name}"
                made[name] = type(
                    name, (mixin, _Policy, test_tasks.BaseTaskTests, test_utils.TestCase), ns
                )
    return made


globals().update(_make_policy_classes())


# --------------------------------------------------------------------------------------------
# 2. Our own tests: the same scenario with asyncio.gather and ferroloop.gather.
# --------------------------------------------------------------------------------------------

OWN_LOOPS = {
    "asyncio": asyncio.SelectorEventLoop,
    "ferroloop": ferroloop.new_event_loop,
    "ferroloop-asyncio-tasks": lambda: ferroloop.new_event_loop(native_tasks=False),
}
GATHERS = {"asyncio": asyncio.gather, "ferroloop": ferroloop.gather}


@pytest.fixture(params=list(OWN_LOOPS))
def loop_factory(request):
    """This module's loop_factory: asyncio's and ferroloop's loops, and ferroloop's loop with
    native Future/Task (where the outer future is ferroloop's too)."""
    made = []

    def make():
        loop = OWN_LOOPS[request.param]()
        made.append(loop)
        return loop

    yield make
    for loop in made:
        if not loop.is_closed():
            loop.close()
    asyncio.set_event_loop(None)


def describe(value):
    """A loop-independent picture of a result or exception, for comparing traces."""
    if isinstance(value, BaseException):
        return (type(value).__name__, value.args)
    if isinstance(value, list):
        return [describe(v) for v in value]
    return value


def run_both(loop_factory, scenario):
    """Runs `scenario(gather, loop, trace)` (a coroutine function) with each gather on a fresh
    loop; returns the traces, asserting they are equal. Exception-handler calls are traced."""
    traces = {}
    for name, gather in GATHERS.items():
        loop = loop_factory()
        trace = []
        loop.set_exception_handler(lambda lp, ctx, trace=trace: trace.append(("handler", ctx)))
        try:
            outcome = loop.run_until_complete(scenario(gather, loop, trace))
            trace.append(("returned", describe(outcome)))
        except BaseException as exc:  # noqa: BLE001 - part of the trace
            trace.append(("raised", describe(exc)))
        # Let stray callbacks run, then collect, so finalizer reports land in the trace.
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        gc.collect()
        loop.close()
        traces[name] = [("handler", _handler_view(t[1])) if t[0] == "handler" else t for t in trace]
    assert traces["asyncio"] == traces["ferroloop"]
    return traces["ferroloop"]


def _handler_view(ctx):
    return (ctx.get("message"), describe(ctx.get("exception")))


async def _value(x, delay=0.0):
    await asyncio.sleep(delay)
    return x


async def _fail(exc, delay=0.0):
    await asyncio.sleep(delay)
    raise exc


def test_results_in_argument_order(loop_factory):
    async def scenario(gather, loop, trace):
        fut = loop.create_future()
        loop.call_later(0.002, fut.set_result, "f")
        task = loop.create_task(_value("t", 0.001))
        return await gather(_value(1, 0.003), fut, task, _value(4), _value(5, 0.002))

    trace = run_both(loop_factory, scenario)
    assert trace == [("returned", [1, "f", "t", 4, 5])]


def test_duplicates_awaited_once(loop_factory):
    async def scenario(gather, loop, trace):
        runs = []

        async def once(x):
            runs.append(x)
            return x

        coro = once("c")
        fut = loop.create_future()
        loop.call_soon(fut.set_result, "f")
        res = await gather(coro, fut, coro, once("d"), fut, coro)
        trace.append(("runs", runs))
        return res

    trace = run_both(loop_factory, scenario)
    assert trace == [
        ("runs", ["c", "d"]),
        ("returned", ["c", "f", "c", "d", "f", "c"]),
    ]


def test_no_arguments(loop_factory):
    async def scenario(gather, loop, trace):
        outer = gather()
        trace.append(("done", outer.done(), outer.get_loop() is loop))
        return await outer

    assert run_both(loop_factory, scenario) == [("done", True, True), ("returned", [])]


def test_no_arguments_uses_the_set_loop(loop_factory):
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    try:
        for gather in GATHERS.values():
            outer = gather()
            assert outer.get_loop() is loop
            assert loop.run_until_complete(outer) == []
    finally:
        asyncio.set_event_loop(None)


def test_no_loop_errors_alike():
    asyncio.set_event_loop(None)
    outcomes = []
    for gather in GATHERS.values():
        coro = _value(1)
        with pytest.raises(RuntimeError) as info:
            gather(coro)
        coro.close()
        outcomes.append(str(info.value))
        with pytest.raises(RuntimeError) as info:
            gather()
        outcomes.append(str(info.value))
    assert outcomes[:2] == outcomes[2:]
    assert "no current event loop" in outcomes[0]


@pytest.mark.parametrize("flag", [True, 1, "yes", False, 0, None])
def test_return_exceptions(loop_factory, flag):
    async def scenario(gather, loop, trace):
        cancelled = loop.create_task(_value("never", 10))
        loop.call_soon(cancelled.cancel, "bye")
        err = ValueError("v")
        try:
            res = await gather(
                _value(1),
                _fail(err, 0.001),
                cancelled,
                _fail(KeyError("k")),
                return_exceptions=flag,
            )
        except BaseException as exc:  # noqa: BLE001
            trace.append(("caught", describe(exc), exc is err))
            await asyncio.sleep(0.005)
            return None
        trace.append(("same error object", res[1] is err))
        return res

    trace = run_both(loop_factory, scenario)
    if flag:
        assert trace[-1] == (
            "returned",
            # A task's cancel message is not kept once the task is cancelled (3.11).
            [1, ("ValueError", ("v",)), ("CancelledError", ("",)), ("KeyError", ("k",))],
        )
    else:
        # The first child to finish badly wins: the task cancelled by call_soon.
        assert trace[0] == ("caught", ("CancelledError", ("bye",)), False)


def test_first_exception_propagates_others_keep_running(loop_factory):
    async def scenario(gather, loop, trace):
        finished = []

        async def slow(x):
            await asyncio.sleep(0.005)
            finished.append(x)
            return x

        err = ZeroDivisionError("z")
        a, b = loop.create_task(slow("a")), loop.create_task(slow("b"))
        outer = gather(a, _fail(err), b)
        try:
            await outer
        except ZeroDivisionError as exc:
            trace.append(("caught", exc is err, outer.exception() is err))
        trace.append(("running", a.done(), b.done(), outer.cancel()))
        await asyncio.sleep(0.02)
        trace.append(("finished", sorted(finished), a.result(), b.result()))
        return outer.done()

    assert run_both(loop_factory, scenario) == [
        ("caught", True, True),
        ("running", False, False, False),
        ("finished", ["a", "b"], "a", "b"),
        ("returned", True),
    ]


def test_later_exceptions_are_marked_retrieved(loop_factory):
    # After the first error, the other children's errors are consumed by gather: no
    # "exception was never retrieved" report (asyncio's "Mark exception retrieved").
    async def scenario(gather, loop, trace):
        outer = gather(_fail(ValueError(1)), _fail(ValueError(2), 0.001), _fail(KeyError(3)))
        try:
            await outer
        except ValueError as exc:
            trace.append(("caught", describe(exc)))
        await asyncio.sleep(0.01)
        return None

    trace = run_both(loop_factory, scenario)
    assert trace == [("caught", ("ValueError", (1,))), ("returned", None)]


def test_unretrieved_outer_exception_is_reported(loop_factory):
    async def scenario(gather, loop, trace):
        gather(_fail(ValueError("lost")))
        await asyncio.sleep(0.001)
        await asyncio.sleep(0)
        gc.collect()
        return None

    trace = run_both(loop_factory, scenario)
    assert trace == [
        ("handler", ("_GatheringFuture exception was never retrieved", ("ValueError", ("lost",)))),
        ("returned", None),
    ]


def test_cancel_outer_cancels_children(loop_factory):
    async def scenario(gather, loop, trace):
        children = [loop.create_task(_value(i, 10)) for i in range(3)]
        done_child = loop.create_future()
        done_child.set_result("early")
        outer = gather(*children, done_child)
        await asyncio.sleep(0)
        trace.append(("cancel", outer.cancel("stop"), outer._cancel_requested, outer.done()))
        try:
            await outer
        except asyncio.CancelledError as exc:
            trace.append(("outer raised", describe(exc), outer.cancelled()))
        trace.append(("children", [c.cancelled() for c in children], done_child.result()))
        trace.append(("cancel again", outer.cancel()))
        return len(outer._children)

    assert run_both(loop_factory, scenario) == [
        ("cancel", True, True, False),
        # The outer future ends with the CancelledError as its exception: not cancelled().
        ("outer raised", ("CancelledError", ("stop",)), False),
        ("children", [True, True, True], "early"),
        ("cancel again", False),
        ("returned", 4),
    ]


def test_cancel_outer_with_return_exceptions(loop_factory):
    # bpo-32684: cancelling gather wins over return_exceptions=True.
    async def scenario(gather, loop, trace):
        children = [loop.create_task(_value(i, 10)) for i in range(2)]
        outer = gather(*children, _value("fast"), return_exceptions=True)
        await asyncio.sleep(0)
        outer.cancel()
        try:
            res = await outer
        except asyncio.CancelledError as exc:
            return ("cancelled", describe(exc), outer.cancelled())
        return ("result", res)

    assert run_both(loop_factory, scenario) == [
        ("returned", ("cancelled", ("CancelledError", ()), False))
    ]


def test_cancel_when_all_children_done_refused(loop_factory):
    async def scenario(gather, loop, trace):
        fut = loop.create_future()
        outer = gather(fut)
        fut.set_result(1)
        trace.append(("cancel", outer.cancel(), outer.done()))
        return await outer

    assert run_both(loop_factory, scenario) == [("cancel", False, False), ("returned", [1])]


def test_child_cancelled_propagates_to_outer(loop_factory):
    async def scenario(gather, loop, trace):
        victim = loop.create_task(_value("v", 10))
        other = loop.create_task(_value("o", 0.002))
        outer = gather(victim, other)
        loop.call_soon(victim.cancel, "child msg")
        try:
            await outer
        except asyncio.CancelledError as exc:
            trace.append(("raised", describe(exc), outer.cancelled(), other.done()))
        trace.append(("other", await other))
        return outer.done()

    assert run_both(loop_factory, scenario) == [
        ("raised", ("CancelledError", ("child msg",)), False, False),
        ("other", "o"),
        ("returned", True),
    ]


def test_cancelling_awaiting_task_cancels_children(loop_factory):
    async def scenario(gather, loop, trace):
        started = []

        async def child(i):
            started.append(i)
            await asyncio.sleep(10)

        gathered = None

        async def parent():
            nonlocal gathered
            gathered = gather(child(1), child(2), gather(child(3), child(4)))
            await gathered

        task = loop.create_task(parent())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel("from parent")
        try:
            await task
        except asyncio.CancelledError as exc:
            trace.append(("parent", describe(exc)))
        children = [c.cancelled() for c in gathered._children]
        trace.append(("gathered", gathered.cancelled(), children))
        return sorted(started)

    assert run_both(loop_factory, scenario) == [
        ("parent", ("CancelledError", ("from parent",))),
        # Children tasks are cancelled; the inner gather, like the outer, holds the error.
        ("gathered", False, [True, True, False]),
        ("returned", [1, 2, 3, 4]),
    ]


def test_awaitable_objects_are_wrapped(loop_factory):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"

    async def scenario(gather, loop, trace):
        return await gather(Awaitable(), _value(2))

    assert run_both(loop_factory, scenario) == [("returned", ["awaited", 2])]


def test_equal_awaitables_are_merged_like_asyncio(loop_factory):
    # asyncio de-duplicates through a dict: equal, hashable awaitables count as one.
    class Same:
        def __init__(self, tag):
            self.tag = tag

        def __eq__(self, other):
            return isinstance(other, Same)

        def __hash__(self):
            return 1

        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return self.tag

    async def scenario(gather, loop, trace):
        return await gather(Same("first"), Same("second"), _value(3))

    assert run_both(loop_factory, scenario) == [("returned", ["first", "first", 3])]


def test_bad_arguments(loop_factory):
    async def scenario(gather, loop, trace):
        for bad in (42, {}, [1]):
            coro = _value(1)
            try:
                gather(coro, bad)
            except TypeError as exc:
                trace.append(("TypeError", str(exc)))
            await asyncio.sleep(0)
        return None

    trace = run_both(loop_factory, scenario)
    assert [t[0] for t in trace] == ["TypeError"] * 3 + ["returned"]


def test_futures_of_different_loops(loop_factory):
    async def scenario(gather, loop, trace):
        other = loop_factory()
        try:
            for args in (
                (loop.create_future(), other.create_future()),
                (_value(1), other.create_future()),
            ):
                try:
                    gather(*args)
                except ValueError as exc:
                    trace.append(("ValueError", str(exc)))
                await asyncio.sleep(0)
        finally:
            other.close()
        return None

    trace = run_both(loop_factory, scenario)
    assert trace[0] == (
        "ValueError",
        "The future belongs to a different loop than the one specified as the loop argument",
    )
    assert len(trace) == 3


def test_gather_of_other_loop_futures_is_on_that_loop(loop_factory):
    main, other = loop_factory(), loop_factory()
    for gather in GATHERS.values():
        futs = [other.create_future() for _ in range(2)]
        outer = gather(*futs)
        assert outer.get_loop() is other
        for i, f in enumerate(futs):
            f.set_result(i)
        assert other.run_until_complete(outer) == [0, 1]
    main.close()


def test_task_factory_is_used(loop_factory):
    async def scenario(gather, loop, trace):
        made = []

        def factory(lp, coro, **kwargs):
            made.append(coro.__name__)
            return asyncio.Task(coro, loop=lp, **kwargs)

        loop.set_task_factory(factory)
        try:
            res = await gather(_value(1), _fail(KeyError(2)), return_exceptions=True)
        finally:
            loop.set_task_factory(None)
        trace.append(("made", made))
        return res

    assert run_both(loop_factory, scenario) == [
        ("made", ["_value", "_fail"]),
        ("returned", [1, ("KeyError", (2,))]),
    ]


def test_outer_future_type(loop_factory):
    async def scenario(gather, loop, trace):
        outer = gather(_value(1))
        native_loop = type(loop.create_future()) is ferroloop.Future
        trace.append(
            (
                type(outer).__name__,
                isinstance(outer, asyncio.Future) or native_loop,
                asyncio.isfuture(outer),
                repr(outer).startswith("<_GatheringFuture pending"),
            )
        )
        await outer
        trace.append(("repr", repr(outer)))
        return None

    assert run_both(loop_factory, scenario) == [
        ("_GatheringFuture", True, True, True),
        ("repr", "<_GatheringFuture finished result=[1]>"),
        ("returned", None),
    ]


def test_outer_is_asyncio_future_on_asyncio_futures():
    loop = ferroloop.new_event_loop()
    try:
        outer = ferroloop.gather(loop.create_future())
        assert isinstance(outer, asyncio.Future)
        outer.cancel()
    finally:
        loop.close()


def _weak_gather(loop, gather):
    """A finished gather: weak references to its outer future and children."""

    async def run():
        children = [loop.create_task(_value(i)) for i in range(3)]
        outer = gather(*children, _value(3), return_exceptions=True)
        assert await outer == [0, 1, 2, 3]
        return [weakref.ref(outer)] + [weakref.ref(c) for c in outer._children]

    return loop.run_until_complete(run())


def test_finished_gather_is_freed(loop_factory):
    """No reference cycle is left behind: what asyncio frees without the collector, so does
    ferroloop.gather; everything is gone after a collection."""
    alive = {}
    for name, gather in GATHERS.items():
        loop = loop_factory()
        gc.disable()
        try:
            refs = _weak_gather(loop, gather)
            alive[name] = [r() is not None for r in refs]
        finally:
            gc.enable()
        gc.collect()
        assert all(r() is None for r in refs), name
        loop.close()
    assert alive["ferroloop"] == alive["asyncio"]
    assert not any(alive["ferroloop"])


def test_abandoned_gather_is_collected(loop_factory):
    """A gather whose children never finish, dropped with its loop: the cycle
    children -> callback -> outer -> children is collectable."""
    for gather in GATHERS.values():
        loop = loop_factory()
        futs = [loop.create_future() for _ in range(3)]
        outer = gather(*futs)
        refs = [weakref.ref(outer)] + [weakref.ref(f) for f in futs]
        del outer, futs
        gc.collect()
        assert all(r() is None for r in refs)
        loop.close()


def test_no_reference_leak(loop_factory):
    loop = loop_factory()
    payload = object()

    async def many():
        for _ in range(200):
            await ferroloop.gather(_value(payload), _value(payload), return_exceptions=True)
            try:
                await ferroloop.gather(_value(payload), _fail(ValueError()))
            except ValueError:
                pass

    loop.run_until_complete(many())
    gc.collect()
    before = sys.getrefcount(payload)
    loop.run_until_complete(many())
    gc.collect()
    assert sys.getrefcount(payload) == before


def test_patch_asyncio_is_explicit_and_reversible():
    code = (
        "import asyncio, asyncio.tasks, ferroloop\n"
        "orig = asyncio.gather\n"
        "assert asyncio.gather is asyncio.tasks.gather and orig.__module__ == 'asyncio.tasks'\n"
        "ferroloop.patch_asyncio()\n"
        "assert asyncio.gather is ferroloop.gather is asyncio.tasks.gather\n"
        "async def one(): return 1\n"
        "async def main(): return await asyncio.gather(one(), one())\n"
        "assert ferroloop.run(main()) == [1, 1]\n"
        "assert asyncio.run(main()) == [1, 1]\n"
        "ferroloop.unpatch_asyncio()\n"
        "assert asyncio.gather is orig is asyncio.tasks.gather\n"
        "print('ok')\n"
    )
    from tests.conftest import run_python

    proc = run_python(["-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_destroyed_pending_children_reported_like_asyncio(loop_factory):
    """Tasks gather made for coroutines are not reported as "destroyed but pending" (nobody
    else can await them); a task the caller made still is."""
    reports = {}
    for name, gather in GATHERS.items():
        loop = loop_factory()
        seen = []
        loop.set_exception_handler(lambda lp, ctx, seen=seen: seen.append(ctx["message"]))

        async def wait(fut):
            return await fut

        async def start(gather=gather, loop=loop):
            waiter = loop.create_future()
            outer = gather(wait(waiter), loop.create_task(wait(waiter)))
            await asyncio.sleep(0)
            return weakref.ref(outer)

        ref = loop.run_until_complete(start())
        loop.close()
        gc.collect()
        assert ref() is None
        reports[name] = seen
    assert reports["ferroloop"] == reports["asyncio"]
    assert reports["ferroloop"] == ["Task was destroyed but it is pending!"]
