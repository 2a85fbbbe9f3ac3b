"""Scheduling, handles, tasks, running, clock, debug mode, exception handler, executors and
async generators: the same observable behaviour on asyncio's loop and ferroloop's."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import inspect
import logging
import re
import sys
import threading
import time
import weakref

import pytest
from conftest import run_python

HERE = __file__


def cb(*args):
    """A module-level callback with a known source line (for reprs)."""
    return args


CB_LINE = cb.__code__.co_firstlineno


def slow_cb():
    time.sleep(0.06)


def _when(text: str) -> str:
    """Replace the float of when=... in a repr so reprs can be compared across loops."""
    return re.sub(r"when=[0-9.e+-]+", "when=W", text)


# -- call_soon / call_later / call_at ordering --------------------------------------------------


def test_call_soon_fifo(loop):
    order = []
    for i in range(20):
        loop.call_soon(order.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == list(range(20))


def test_call_soon_passes_args(loop):
    got = []
    loop.call_soon(lambda *a: got.append(a), 1, "two", None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert got == [(1, "two", None)]


def test_scheduling_methods_take_arguments_by_keyword_too(loop):
    got = []
    var = contextvars.ContextVar("var", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "ctx")

    def record(*args):
        got.append((args, var.get()))

    handles = [
        loop.call_soon(callback=record, context=ctx),
        loop.call_soon_threadsafe(record, "threadsafe", context=None),
        loop.call_later(delay=0, callback=record),
        loop.call_later(0, record, "later", context=ctx),
        loop.call_at(when=loop.time(), callback=record),
        loop.call_at(loop.time(), record, "at"),
    ]
    loop.run_until_complete(asyncio.sleep(0.01))
    assert got == [
        ((), "ctx"),
        (("threadsafe",), "outer"),
        ((), "outer"),
        (("later",), "ctx"),
        ((), "outer"),
        (("at",), "outer"),
    ]
    assert len(handles) == 6


BAD_SCHEDULING_CALLS = {
    "call_soon()": lambda lp: lp.call_soon(),
    "call_soon(cb, callback=cb)": lambda lp: lp.call_soon(print, callback=print),
    "call_soon(cb, foo=1)": lambda lp: lp.call_soon(print, foo=1),
    "call_soon(cb, context=1)": lambda lp: lp.call_soon(print, context=1),
    "call_soon_threadsafe()": lambda lp: lp.call_soon_threadsafe(),
    "call_later()": lambda lp: lp.call_later(),
    "call_later(1)": lambda lp: lp.call_later(1),
    "call_later(None, cb)": lambda lp: lp.call_later(None, print),
    "call_later('x', cb)": lambda lp: lp.call_later("x", print),
    "call_later(1, cb, bar=2)": lambda lp: lp.call_later(1, print, bar=2),
    "call_at()": lambda lp: lp.call_at(),
    "call_at(None, cb)": lambda lp: lp.call_at(None, print),
    "call_at(1, when=1)": lambda lp: lp.call_at(1, when=1),
}


@pytest.mark.parametrize("call", list(BAD_SCHEDULING_CALLS))
def test_scheduling_methods_bad_arguments(loop_factory, call):
    """Same exception type and message as asyncio's BaseEventLoop methods."""
    loop = loop_factory()
    oracle = asyncio.SelectorEventLoop()
    try:
        outcomes = []
        for lp in (oracle, loop):
            try:
                BAD_SCHEDULING_CALLS[call](lp)
            except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
                outcomes.append((type(exc), str(exc)))
            else:
                outcomes.append(None)
        assert outcomes[0] is not None or call == "call_soon(cb, context=1)"
        if call == "call_soon(cb, context=1)":
            # asyncio only fails when the handle runs (Context.run on a non-Context).
            return
        assert outcomes[1] == outcomes[0]
    finally:
        oracle.close()


def test_call_soon_from_callback_runs_next_iteration(loop):
    order = []

    def first():
        order.append("first")
        loop.call_soon(order.append, "nested")

    loop.call_soon(first)
    loop.call_soon(order.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # stop() runs in the same iteration as "second"; "nested" was queued after the stop handle
    # and runs in that same iteration on neither loop: it waits for the next run.
    assert order == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["first", "second", "nested"]


def test_call_at_ordered_by_deadline_ties_in_scheduling_order(loop):
    order = []
    t = loop.time()
    loop.call_at(t + 0.03, order.append, "c")
    loop.call_at(t + 0.01, order.append, "a")
    loop.call_at(t + 0.02, order.append, "b1")
    loop.call_at(t + 0.02, order.append, "b2")
    loop.call_at(t + 0.02, order.append, "b3")
    loop.call_at(t + 0.05, loop.stop)
    loop.run_forever()
    assert order == ["a", "b1", "b2", "b3", "c"]


def test_call_later_ordered_by_delay(loop):
    order = []
    # Gaps of 0.1 s: scheduling the three calls never takes that long, even on a loaded machine.
    loop.call_later(0.3, order.append, 3)
    loop.call_later(0.1, order.append, 1)
    loop.call_later(0.2, order.append, 2)
    loop.call_later(0.35, loop.stop)
    loop.run_forever()
    assert order == [1, 2, 3]


def test_call_later_zero_and_negative_never_overtake_call_soon(loop):
    order = []
    loop.call_soon(order.append, "soon1")
    loop.call_later(0, order.append, "later0")
    loop.call_later(-1, order.append, "later-1")
    loop.call_soon(order.append, "soon2")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert order == ["soon1", "soon2", "later-1", "later0"]


def test_timer_waits_for_its_deadline(loop):
    fired = []
    t0 = loop.time()
    loop.call_later(0.05, lambda: fired.append(loop.time()))
    loop.call_later(0.06, loop.stop)
    loop.run_forever()
    assert len(fired) == 1
    # Fired no earlier than its deadline (minus the clock resolution asyncio allows).
    assert fired[0] >= t0 + 0.05 - 0.002


# -- Handle / TimerHandle ------------------------------------------------------------------------


def test_handle_cancel(loop):
    ran = []
    h = loop.call_soon(ran.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    h.cancel()  # idempotent
    assert h.cancelled()
    th = loop.call_later(0.001, ran.append, 2)
    th.cancel()
    assert th.cancelled()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert ran == []


def test_timer_handle_when(loop):
    t = loop.time() + 123.5
    th = loop.call_at(t, cb)
    assert th.when() == t
    before = loop.time()
    th2 = loop.call_later(10, cb)
    after = loop.time()
    assert before + 10 <= th2.when() <= after + 10
    th.cancel()
    th2.cancel()
    assert th.when() == t


def test_handle_types(loop):
    h = loop.call_soon(cb)
    th = loop.call_later(1, cb)
    assert isinstance(h, asyncio.Handle) or type(h).__name__ == "Handle"
    assert type(h).__name__ == "Handle"
    assert type(th).__name__ == "TimerHandle"
    assert isinstance(th, type(h))
    h.cancel()
    th.cancel()


def _get_context(handle):
    # Handle.get_context() is new in Python 3.12; on 3.11 asyncio's handles only have _context.
    if hasattr(handle, "get_context"):
        return handle.get_context()
    return handle._context


def test_handle_get_context(loop):
    ctx = contextvars.copy_context()
    assert _get_context(loop.call_soon(cb, context=ctx)) is ctx
    assert _get_context(loop.call_later(1, cb, context=ctx)) is ctx
    assert _get_context(loop.call_at(loop.time() + 1, cb, context=ctx)) is ctx
    assert loop.call_soon(cb, context=ctx)._context is ctx
    own = _get_context(loop.call_soon(cb))
    assert isinstance(own, contextvars.Context)
    assert own is not contextvars.copy_context()


def test_handle_repr(loop):
    loop.set_debug(False)  # the behaviour under test is non-debug mode
    h = loop.call_soon(cb, 1, "x")
    assert repr(h) == f"<Handle cb(1, 'x') at {HERE}:{CB_LINE}>"
    h.cancel()
    assert repr(h) == "<Handle cancelled>"


def test_timer_handle_repr(loop):
    loop.set_debug(False)  # the behaviour under test is non-debug mode
    th = loop.call_at(12345.5, cb, 2)
    assert repr(th) == f"<TimerHandle when=12345.5 cb(2) at {HERE}:{CB_LINE}>"
    th2 = loop.call_later(5, cb)
    assert re.fullmatch(
        rf"<TimerHandle when=\d+\.\d+ cb\(\) at {re.escape(HERE)}:{CB_LINE}>", repr(th2)
    )
    th.cancel()
    th2.cancel()
    assert repr(th) == "<TimerHandle cancelled when=12345.5>"


def _call_with_line(method, *args):
    """Call a scheduling method; return the handle and the line it was called from."""
    handle = method(*args)
    return handle, _lineno() - 1


def test_handle_repr_debug(loop):
    loop.set_debug(True)
    h, h_line = _call_with_line(loop.call_soon, cb, 1)
    th, t_line = _call_with_line(loop.call_later, 5, cb)
    ta, a_line = _call_with_line(loop.call_at, 99.0, cb)
    assert h_line == t_line == a_line
    src = f"cb(1) at {HERE}:{CB_LINE}"
    assert repr(h) == f"<Handle {src} created at {HERE}:{h_line}>"
    assert (
        _when(repr(th))
        == f"<TimerHandle when=W cb() at {HERE}:{CB_LINE} created at {HERE}:{t_line}>"
    )
    assert (
        repr(ta) == f"<TimerHandle when=99.0 cb() at {HERE}:{CB_LINE} created at {HERE}:{a_line}>"
    )
    # In debug mode a cancelled handle keeps describing its callback.
    h.cancel()
    assert repr(h) == f"<Handle cancelled {src} created at {HERE}:{h_line}>"
    th.cancel()
    assert _when(repr(th)) == (
        f"<TimerHandle cancelled when=W cb() at {HERE}:{CB_LINE} created at {HERE}:{t_line}>"
    )
    ta.cancel()


def _lineno():
    import sys

    return sys._getframe(1).f_lineno


# -- contexts ----------------------------------------------------------------------------------

VAR = contextvars.ContextVar("VAR", default="default")


def test_context_argument(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in-ctx")
    seen = []
    loop.call_soon(lambda: seen.append(("soon", VAR.get())), context=ctx)
    loop.call_later(0, lambda: seen.append(("later", VAR.get())), context=ctx)
    loop.call_at(loop.time(), lambda: seen.append(("at", VAR.get())), context=ctx)
    loop.call_soon(lambda: seen.append(("plain", VAR.get())))

    async def coro():
        seen.append(("task", VAR.get()))

    loop.create_task(coro(), context=ctx)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert sorted(seen) == sorted(
        [
            ("soon", "in-ctx"),
            ("later", "in-ctx"),
            ("at", "in-ctx"),
            ("plain", "default"),
            ("task", "in-ctx"),
        ]
    )
    assert VAR.get() == "default"


def test_callback_runs_in_copy_of_current_context(loop):
    seen = []
    token = VAR.set("at-schedule")
    try:

        def setter():
            seen.append(VAR.get())
            VAR.set("changed-in-callback")

        loop.call_soon(setter)
        VAR.set("after-schedule")
        loop.call_soon(lambda: seen.append(VAR.get()))
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        VAR.reset(token)
    assert seen == ["at-schedule", "after-schedule"]


def test_shared_context_sees_changes(loop):
    ctx = contextvars.Context()
    seen = []
    loop.call_soon(VAR.set, "one", context=ctx)
    loop.call_soon(lambda: seen.append(VAR.get()), context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["one"]
    assert ctx[VAR] == "one"


# -- futures and tasks -------------------------------------------------------------------------


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    loop.call_soon(fut.set_result, 42)
    assert loop.run_until_complete(fut) == 42


def test_create_task_name_and_result(loop):
    async def coro(x):
        await asyncio.sleep(0)
        return x * 2

    task = loop.create_task(coro(21), name="my-task")
    assert isinstance(task, asyncio.Task)
    assert task.get_name() == "my-task"
    assert task.get_loop() is loop
    assert loop.run_until_complete(task) == 42
    unnamed = loop.create_task(coro(1))
    assert re.fullmatch(r"Task-\d+", unnamed.get_name())
    loop.run_until_complete(unnamed)


def test_unnamed_tasks_are_numbered_in_creation_order(loop, loop_factory):
    """Task-N numbers grow with each unnamed task; a named task takes no number. Three
    threads creating tasks at once still get distinct numbers."""

    async def coro():
        return None

    def number(task):
        m = re.fullmatch(r"Task-(\d+)", task.get_name())
        assert m, task.get_name()
        return int(m.group(1))

    first = loop.create_task(coro())
    named = loop.create_task(coro(), name="named")
    second = loop.create_task(coro())
    third = loop.create_task(coro())
    assert number(first) + 1 == number(second) == number(third) - 1
    assert named.get_name() == "named"
    assert re.fullmatch(r"<Task pending name='Task-\d+' .*>", repr(first))
    loop.run_until_complete(asyncio.gather(first, named, second, third))

    names = []
    failures = []

    def make_many():
        other = loop_factory()
        try:
            tasks = [other.create_task(coro()) for _ in range(200)]
            names.extend(t.get_name() for t in tasks)
            other.run_until_complete(asyncio.gather(*tasks))
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failures.append(exc)
        finally:
            other.close()

    threads = [threading.Thread(target=make_many) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(names) == 600
    assert len(set(names)) == 600


def test_create_task_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "task-ctx")

    async def coro():
        before = VAR.get()
        VAR.set("set-in-task")
        await asyncio.sleep(0)
        return before, VAR.get()

    assert loop.run_until_complete(loop.create_task(coro(), context=ctx)) == (
        "task-ctx",
        "set-in-task",
    )
    assert ctx[VAR] == "set-in-task"
    assert VAR.get() == "default"


def test_task_factory_two_args(loop):
    calls = []

    def factory(lp, coro):
        calls.append(lp)
        return asyncio.Task(coro, loop=lp)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        t = asyncio.get_running_loop().create_task(asyncio.sleep(0, "inner"), name="named")
        return t.get_name(), await t

    assert loop.run_until_complete(main()) == ("named", "inner")
    assert calls == [loop, loop]
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def test_task_factory_receives_context(loop):
    got = []

    def factory(lp, coro, **kwargs):
        got.append(sorted(kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "factory-ctx")

    async def coro():
        return VAR.get()

    task = loop.create_task(coro(), context=ctx)
    assert loop.run_until_complete(task) == "factory-ctx"
    assert loop.run_until_complete(loop.create_task(coro())) == "default"
    assert got == [["context"], []]


def test_two_arg_task_factory_with_context_raises(loop):
    loop.set_task_factory(lambda lp, coro: asyncio.Task(coro, loop=lp))
    coro = asyncio.sleep(0)
    with pytest.raises(TypeError) as exc:
        loop.create_task(coro, context=contextvars.copy_context())
    coro.close()
    assert str(exc.value) == (
        "test_two_arg_task_factory_with_context_raises.<locals>.<lambda>() "
        "got an unexpected keyword argument 'context'"
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing 1 required positional argument: 'coro'"),
        ((None, None), {}, "takes 2 positional arguments but 3 were given"),
        ((None,), {"x": 1}, "got an unexpected keyword argument 'x'"),
        ((None,), {"coro": None}, "got multiple values for argument 'coro'"),
    ],
    ids=["no-coro", "two-positional", "unknown-keyword", "coro-twice"],
)
def test_create_task_argument_errors(loop, args, kwargs, message):
    with pytest.raises(TypeError) as exc:
        loop.create_task(*args, **kwargs)
    assert str(exc.value) == f"BaseEventLoop.create_task() {message}"


def test_create_task_arguments_by_keyword(loop):
    async def work():
        return VAR.get()

    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "given")
    task = loop.create_task(coro=work(), name="by-keyword", context=ctx)
    assert task.get_name() == "by-keyword"
    assert loop.run_until_complete(task) == "given"
    assert str(inspect.signature(loop.create_task)) == "(coro, *, name=None, context=None)"


def test_create_task_outside_a_running_loop_lets_go_of_the_factory(loop):
    def factory(lp, coro, **kwargs):
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    before = sys.getrefcount(factory)
    task = loop.create_task(asyncio.sleep(0), name="made")
    loop.set_task_factory(None)
    assert sys.getrefcount(factory) == before - 1  # the loop let go of it too
    assert task.get_name() == "made"
    loop.run_until_complete(task)


def test_loop_methods_called_through_the_class(loop, loop_kind):
    """The scheduling methods give the same results called through the loop's class. On
    ferroloop they are method descriptors of that exact class (`ferroloop.Loop`, not only of
    its Rust base): what CPython 3.11 needs to specialise `loop.call_soon(...)` and the like."""
    cls = type(loop)
    fut = cls.create_future(loop)
    cls.call_soon(loop, fut.set_result, 1)
    assert loop.run_until_complete(fut) == 1
    assert isinstance(cls.time(loop), float)
    assert cls.get_debug(loop) is loop.get_debug()
    assert loop.run_until_complete(cls.create_task(loop, asyncio.sleep(0, "x"))) == "x"
    if loop_kind == "ferroloop":
        names = ["create_future", "time", "get_debug", "create_task", "call_soon"]
        names += ["call_soon_threadsafe", "call_later", "call_at"]
        for name in names:
            assert getattr(cls, name).__objclass__ is cls, name


def test_set_task_factory_not_callable(loop):
    with pytest.raises(TypeError, match="^task factory must be a callable or None$"):
        loop.set_task_factory(1)


# -- run_until_complete / run_forever / stop ----------------------------------------------------


def test_run_until_complete_result(loop):
    async def coro():
        await asyncio.sleep(0.001)
        return "result"

    assert loop.run_until_complete(coro()) == "result"
    fut = loop.create_future()
    fut.set_result(7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_raises(loop):
    async def coro():
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="^boom$"):
        loop.run_until_complete(coro())

    fut = loop.create_future()
    fut.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_not_awaitable(loop):
    with pytest.raises(TypeError) as exc:
        loop.run_until_complete(42)
    assert str(exc.value) == "An asyncio.Future, a coroutine or an awaitable is required"


def test_run_until_complete_stopped_early(loop):
    async def coro():
        asyncio.get_running_loop().stop()
        await asyncio.sleep(0.5)

    with pytest.raises(RuntimeError, match="^Event loop stopped before Future completed.$"):
        loop.run_until_complete(coro())
    # The abandoned task is cleaned up.
    for t in asyncio.all_tasks(loop):
        t.cancel()
    loop.run_until_complete(asyncio.sleep(0))


def test_run_until_complete_registers_done_callback(loop):
    from asyncio import base_events

    async def main():
        task = asyncio.current_task()
        return [cbk for cbk, _ctx in task._callbacks]

    callbacks = loop.run_until_complete(main())
    assert base_events._run_until_complete_cb in callbacks

    fut = loop.create_future()

    def check():
        seen.append([c for c, _ in fut._callbacks])
        fut.set_result(None)

    seen = []
    loop.call_soon(check)
    loop.run_until_complete(fut)
    assert seen == [[base_events._run_until_complete_cb]]
    # Removed again once run_until_complete returns.
    assert not fut._callbacks


def test_stop_before_run_forever_runs_one_iteration(loop):
    order = []

    def first():
        order.append("first")
        loop.call_soon(order.append, "next-iteration")

    loop.call_soon(first)
    loop.stop()
    loop.run_forever()
    assert order == ["first"]
    assert not loop.is_running()
    loop.stop()
    loop.run_forever()
    assert order == ["first", "next-iteration"]


def test_stop_inside_callback_finishes_iteration(loop):
    order = []
    loop.call_soon(lambda: (order.append("a"), loop.stop()))
    loop.call_soon(order.append, "b")
    loop.call_soon(lambda: loop.call_soon(order.append, "c"))
    loop.run_forever()
    assert order == ["a", "b"]


def test_is_running(loop):
    states = []
    loop.call_soon(lambda: states.append(loop.is_running()))
    loop.call_soon(loop.stop)
    assert not loop.is_running()
    loop.run_forever()
    assert states == [True]
    assert not loop.is_running()
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()  # closing twice is fine


def test_running_loop_is_set(loop):
    async def main():
        return asyncio.get_running_loop(), asyncio.get_event_loop()

    running, current = loop.run_until_complete(main())
    assert running is loop and current is loop
    with pytest.raises(RuntimeError, match="^no running event loop$"):
        asyncio.get_running_loop()


# -- clock --------------------------------------------------------------------------------------


def test_time_is_monotonic_clock(loop):
    assert abs(loop.time() - time.monotonic()) < 1.0
    values = [loop.time() for _ in range(2000)]
    assert values == sorted(values)
    assert abs(values[-1] - time.monotonic()) < 1.0


def test_time_resolution(loop):
    diffs = []
    for _ in range(2000):
        a = loop.time()
        b = loop.time()
        diffs.append(b - a)
    assert any(0 < d < 1e-6 for d in diffs)


def test_time_advances_with_sleep(loop):
    t0 = loop.time()
    time.sleep(0.02)
    assert loop.time() - t0 >= 0.019


# -- debug mode ---------------------------------------------------------------------------------


def test_get_set_debug(loop):
    # The default debug mode: PYTHONASYNCIODEBUG / -X dev, else off.
    assert loop.get_debug() is asyncio.coroutines._is_debug_mode()
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


@pytest.mark.parametrize("env_value,expected", [("1", "True"), ("", "False")])
def test_pythonasynciodebug_env(loop_kind, env_value, expected):
    factory = {
        "asyncio": "asyncio.SelectorEventLoop",
        "ferroloop": "ferroloop.new_event_loop",
    }[loop_kind]
    code = f"import asyncio, ferroloop\nloop = {factory}()\nprint(loop.get_debug())\nloop.close()\n"
    env = {"PYTHONASYNCIODEBUG": env_value} if env_value else {}
    proc = run_python(["-c", code], env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.02
    assert loop.slow_callback_duration == 0.02
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.call_soon(slow_cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    slow = [m for m in msgs if "slow_cb" in m]
    assert len(slow) == 1, msgs
    assert re.fullmatch(
        rf"Executing <Handle slow_cb\(\) at {re.escape(HERE)}:\d+ created at "
        rf"{re.escape(HERE)}:\d+> took \d+\.\d{{3}} seconds",
        slow[0],
    ), slow[0]
    assert [r.levelname for r in caplog.records if "slow_cb" in r.getMessage()] == ["WARNING"]


def test_no_slow_callback_warning_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.02
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.call_soon(slow_cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert not [r for r in caplog.records if "slow_cb" in r.getMessage()]


# -- exception handler --------------------------------------------------------------------------


def failing(x):
    raise ZeroDivisionError(f"failing {x}")


FAILING_LINE = failing.__code__.co_firstlineno


def test_exception_handler_get_set(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, context):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    with pytest.raises(TypeError) as exc:
        loop.set_exception_handler(1)
    assert str(exc.value) == "A callable object or None is expected, got 1"


def test_exception_in_callback_reaches_handler(loop):
    loop.set_debug(False)  # the behaviour under test is non-debug mode
    calls = []

    def handler(*args):
        calls.append(args)

    loop.set_exception_handler(handler)
    h = loop.call_soon(failing, 1)
    after = []
    loop.call_soon(after.append, "still running")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert after == ["still running"]
    assert len(calls) == 1
    lp, context = calls[0]
    assert lp is loop
    assert sorted(context) == ["exception", "handle", "message"]
    assert context["message"] == f"Exception in callback failing(1) at {HERE}:{FAILING_LINE}"
    assert type(context["exception"]) is ZeroDivisionError
    assert str(context["exception"]) == "failing 1"
    assert context["handle"] is h


def test_exception_in_timer_callback_reaches_handler(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
    th = loop.call_later(0.001, failing, "t")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert [c["message"] for c in calls] == [
        f"Exception in callback failing('t') at {HERE}:{FAILING_LINE}"
    ]
    assert calls[0]["handle"] is th


def test_exception_in_callback_default_handler_logs(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.call_soon(failing, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    rec = records[0]
    assert rec.levelname == "ERROR"
    first_line = rec.getMessage().splitlines()[0]
    assert first_line == f"Exception in callback failing(2) at {HERE}:{FAILING_LINE}"
    assert rec.getMessage().splitlines()[1].startswith("handle: <Handle failing(2) at ")
    assert rec.exc_info[0] is ZeroDivisionError


def test_call_exception_handler_direct(loop, caplog):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    ctx = {"message": "custom", "extra": 1}
    loop.call_exception_handler(ctx)
    assert calls == [(loop, ctx)]

    loop.set_exception_handler(None)
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.call_exception_handler({"message": "logged message", "zkey": [1, 2]})
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert msgs == ["logged message\nzkey: [1, 2]"]


def test_default_exception_handler_no_message(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.default_exception_handler({"exception": KeyError("k")})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert [r.getMessage() for r in recs] == ["Unhandled exception in event loop"]
    assert recs[0].exc_info[0] is KeyError


def test_failing_exception_handler_is_logged(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")

    def bad_handler(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(bad_handler)
    loop.call_exception_handler({"message": "original"})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    assert recs[0].getMessage().splitlines()[0] == "Unhandled error in exception handler"
    assert "context: {'message': 'original'}" in recs[0].getMessage()
    assert recs[0].exc_info[0] is RuntimeError


def test_exception_handler_keyboard_interrupt_propagates(loop):
    def handler(lp, ctx):
        raise KeyboardInterrupt

    loop.set_exception_handler(handler)
    with pytest.raises(KeyboardInterrupt):
        loop.call_exception_handler({"message": "x"})


def test_system_exit_in_callback_propagates(loop):
    def exit_cb():
        raise SystemExit(5)

    loop.call_soon(exit_cb)
    loop.call_soon(loop.stop)
    with pytest.raises(SystemExit) as exc:
        loop.run_forever()
    assert exc.value.code == 5
    assert not loop.is_running()


# -- executors ----------------------------------------------------------------------------------


def test_run_in_executor_default(loop):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident() != main_thread

    async def main():
        lp = asyncio.get_running_loop()
        return await lp.run_in_executor(None, work, 2, 3)

    assert loop.run_until_complete(main()) == (5, True)
    loop.run_until_complete(loop.shutdown_default_executor())


def test_run_in_executor_explicit_and_exception(loop):
    def boom():
        raise LookupError("from thread")

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        fut = loop.run_in_executor(ex, boom)
        assert isinstance(fut, asyncio.Future)
        with pytest.raises(LookupError, match="^from thread$"):
            loop.run_until_complete(fut)


def test_set_default_executor(loop):
    with pytest.raises(TypeError, match="^executor must be ThreadPoolExecutor instance$"):
        loop.set_default_executor(concurrent.futures.ProcessPoolExecutor)
    with pytest.raises(TypeError, match="^executor must be ThreadPoolExecutor instance$"):
        loop.set_default_executor(object())
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-default")
    loop.set_default_executor(ex)

    async def main():
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: threading.current_thread().name
        )

    assert loop.run_until_complete(main()).startswith("custom-default")
    loop.run_until_complete(loop.shutdown_default_executor())
    assert ex._shutdown


def test_shutdown_default_executor(loop):
    loop.run_until_complete(loop.run_in_executor(None, time.sleep, 0.01))
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="^Executor shutdown has been called$"):
        loop.run_in_executor(None, print)
    # An explicit executor still works.
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert loop.run_until_complete(loop.run_in_executor(ex, int, "7")) == 7


def test_run_in_executor_debug_checks(loop):
    loop.set_debug(True)

    async def coro_fn():
        pass

    with pytest.raises(TypeError, match=r"^coroutines cannot be used with run_in_executor\(\)$"):
        loop.run_in_executor(None, coro_fn)
    with pytest.raises(TypeError) as exc:
        loop.run_in_executor(None, 5)
    assert str(exc.value) == "a callable object was expected by run_in_executor(), got 5"


# -- async generators ---------------------------------------------------------------------------


def test_shutdown_asyncgens_finalizes_suspended_generator(loop):
    events = []

    async def agen():
        try:
            events.append("start")
            yield 1
            yield 2
        finally:
            events.append("finally")

    gen = agen()

    async def first():
        return await gen.__anext__()

    assert loop.run_until_complete(first()) == 1
    assert events == ["start"]
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["start", "finally"]
    # The generator is closed.
    with pytest.raises(StopAsyncIteration):
        loop.run_until_complete(first())


def test_shutdown_asyncgens_reports_errors(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))

    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("in finally")

    gen = agen()

    async def first():
        return await gen.__anext__()

    loop.run_until_complete(first())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(calls) == 1
    assert calls[0]["message"].startswith(
        "an error occurred during closing of asynchronous generator <async_generator object"
    )
    assert type(calls[0]["exception"]) is ValueError
    assert calls[0]["asyncgen"] is gen


def test_asyncgen_finalized_by_gc_while_running(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("closed")

    async def main():
        g = agen()
        await g.__anext__()
        del g  # refcount drops to zero: the loop's finalizer hook schedules aclose()
        for _ in range(5):
            await asyncio.sleep(0)
        return list(events)

    assert loop.run_until_complete(main()) == ["closed"]


def test_handle_kept_by_caller_is_never_reused(loop):
    ran = []
    kept = loop.call_soon(ran.append, "first")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # Many more callbacks after the first handle has run: none may come back as `kept`.
    later = [loop.call_soon(ran.append, i) for i in range(50)]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert all(h is not kept for h in later)
    assert not kept.cancelled()
    assert ran == ["first", *range(50)]


def test_weakly_referenced_handle_dies_after_running(loop):
    ran = []
    ref = weakref.ref(loop.call_soon(ran.append, 1))
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert ran == [1]
    assert ref() is None


def test_bare_yield_gives_up_one_turn_and_bad_yields_fail(loop):
    """A task whose coroutine yields None (asyncio.sleep(0), a bare `yield` in a
    types.coroutine) runs again in the next turn, behind callbacks already queued; one that
    yields anything else that is not a future fails with asyncio's RuntimeError."""
    import types

    order = []

    @types.coroutine
    def bare_yield():
        yield

    @types.coroutine
    def yields(value):
        yield value

    async def stepper(tag):
        order.append(f"{tag}1")
        loop.call_soon(order.append, f"{tag}-soon")
        await bare_yield()
        order.append(f"{tag}2")
        await asyncio.sleep(0)
        order.append(f"{tag}3")

    async def main():
        await asyncio.gather(stepper("a"), stepper("b"))
        bad = loop.create_task(yields(42))
        with pytest.raises(RuntimeError, match="^Task got bad yield: 42$"):
            await bad
        gen = loop.create_task(yields(x for x in ()))
        with pytest.raises(RuntimeError, match="instead of yield from for generator in task"):
            await gen

    loop.run_until_complete(main())
    assert order == ["a1", "b1", "a-soon", "a2", "b-soon", "b2", "a3", "b3"]
