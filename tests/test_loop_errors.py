"""Errors: closed loops, running loops, debug-mode checks, bad arguments; never a Rust panic."""

from __future__ import annotations

import asyncio
import contextvars
import decimal
import inspect
import math
import signal
import threading

import ferroloop
import pytest


def cb():
    pass


async def coro_fn():
    pass


def assert_not_panic(exc: BaseException) -> None:
    assert type(exc).__name__ != "PanicException", repr(exc)
    assert type(exc).__module__ != "pyo3_runtime", repr(exc)


# -- closed loop ---------------------------------------------------------------------------------


def _closed_calls(loop):
    """(name, thunk) for every operation that must fail on a closed loop."""
    fut = asyncio.Future(loop=loop)
    return [
        ("call_soon", lambda: loop.call_soon(cb)),
        ("call_soon_threadsafe", lambda: loop.call_soon_threadsafe(cb)),
        ("call_later", lambda: loop.call_later(1, cb)),
        ("call_at", lambda: loop.call_at(loop.time() + 1, cb)),
        ("run_forever", lambda: loop.run_forever()),
        ("run_until_complete-future", lambda: loop.run_until_complete(fut)),
        ("add_reader", lambda: loop.add_reader(0, cb)),
        ("add_writer", lambda: loop.add_writer(1, cb)),
        ("run_in_executor", lambda: loop.run_in_executor(None, cb)),
        ("add_signal_handler", lambda: loop.add_signal_handler(signal.SIGUSR1, cb)),
    ]


CLOSED_NAMES = [
    "call_soon",
    "call_soon_threadsafe",
    "call_later",
    "call_at",
    "run_forever",
    "run_until_complete-future",
    "add_reader",
    "add_writer",
    "run_in_executor",
    "add_signal_handler",
]


@pytest.mark.parametrize("name", CLOSED_NAMES)
def test_closed_loop_raises(loop, name):
    loop.close()
    calls = dict(_closed_calls(loop))
    assert sorted(calls) == sorted(CLOSED_NAMES)
    thunk = calls[name]
    with pytest.raises(RuntimeError) as exc:
        thunk()
    assert str(exc.value) == "Event loop is closed"


def test_closed_loop_create_task(loop):
    loop.close()
    coro = coro_fn()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.create_task(coro)
    coro.close()


def test_closed_loop_run_until_complete_coroutine(loop):
    loop.close()
    coro = coro_fn()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.run_until_complete(coro)
    coro.close()


def test_closed_loop_still_answers(loop):
    loop.close()
    assert loop.is_closed()
    assert not loop.is_running()
    loop.close()
    loop.stop()
    # The default debug mode: PYTHONASYNCIODEBUG / -X dev, else off.
    assert loop.get_debug() is asyncio.coroutines._is_debug_mode()
    assert isinstance(loop.time(), float)
    # A future can still be created (asyncio does not check).
    assert isinstance(loop.create_future(), asyncio.Future)
    assert loop.remove_reader(0) is False
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_close_drops_pending_callbacks(loop):
    ran = []
    loop.call_soon(ran.append, 1)
    loop.call_later(0, ran.append, 2)
    loop.close()
    assert ran == []


# -- running loops -------------------------------------------------------------------------------


def test_close_running_loop(loop):
    errors = []

    def try_close():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(try_close)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_run_forever_inside_itself(loop):
    errors = []

    def nested():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        coro = coro_fn()
        try:
            loop.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        coro.close()
        loop.stop()

    loop.call_soon(nested)
    loop.run_forever()
    assert errors == ["This event loop is already running"] * 2


def test_run_other_loop_inside_running_loop(loop_factory):
    outer = loop_factory()
    inner = loop_factory()
    errors = []

    def nested():
        try:
            inner.run_forever()
        except RuntimeError as exc:
            errors.append(str(exc))
        coro = coro_fn()
        try:
            inner.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        coro.close()
        outer.stop()

    outer.call_soon(nested)
    outer.run_forever()
    assert errors == ["Cannot run the event loop while another loop is running"] * 2
    # Both loops are fine afterwards.
    inner.call_soon(inner.stop)
    inner.run_forever()
    outer.close()
    inner.close()


def test_run_until_complete_inside_coroutine(loop):
    async def main():
        coro = coro_fn()
        try:
            asyncio.get_running_loop().run_until_complete(coro)
        except RuntimeError as exc:
            return str(exc)
        finally:
            coro.close()

    assert loop.run_until_complete(main()) == "This event loop is already running"


# -- debug-mode checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_debug_call_from_other_thread(loop, method):
    loop.set_debug(True)
    results = []

    def in_thread():
        try:
            if method == "call_soon":
                loop.call_soon(cb)
            elif method == "call_later":
                loop.call_later(0, cb)
            else:
                loop.call_at(loop.time(), cb)
            results.append("no error")
        except RuntimeError as exc:
            results.append(str(exc))
        loop.call_soon_threadsafe(loop.stop)

    thread = None

    def start():
        nonlocal thread
        thread = threading.Thread(target=in_thread)
        thread.start()

    loop.call_soon(start)
    safety = loop.call_later(10, loop.stop)
    loop.run_forever()
    safety.cancel()
    thread.join()
    assert results == [
        "Non-thread-safe operation invoked on an event loop other than the current one"
    ]


def test_non_debug_call_from_other_thread_not_checked(loop):
    loop.set_debug(False)  # the behaviour under test is non-debug mode
    results = []

    def in_thread():
        try:
            loop.call_soon(results.append, "ran")
        except RuntimeError as exc:
            results.append(str(exc))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=in_thread).start())
    safety = loop.call_later(10, loop.stop)
    loop.run_forever()
    safety.cancel()
    if results != ["ran"]:
        # The callback may be queued after stop: give it one more iteration.
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert results == ["ran"]


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
@pytest.mark.parametrize(
    "callback,message",
    [
        (1, "a callable object was expected by {m}(), got 1"),
        (None, "a callable object was expected by {m}(), got None"),
        ("text", "a callable object was expected by {m}(), got 'text'"),
        (coro_fn, "coroutines cannot be used with {m}()"),
    ],
    ids=["int", "None", "str", "coroutine-function"],
)
def test_debug_bad_callback(loop, method, callback, message):
    loop.set_debug(True)
    with pytest.raises(TypeError) as exc:
        if method in ("call_soon", "call_soon_threadsafe"):
            getattr(loop, method)(callback)
        elif method == "call_later":
            loop.call_later(1, callback)
        else:
            loop.call_at(loop.time() + 1, callback)
    # call_later() delegates to call_at(), whose name asyncio's message carries.
    assert str(exc.value) == message.format(m=method.replace("call_later", "call_at"))


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_debug_coroutine_object_callback(loop, method):
    loop.set_debug(True)
    coro = coro_fn()
    try:
        with pytest.raises(TypeError) as exc:
            if method in ("call_soon", "call_soon_threadsafe"):
                getattr(loop, method)(coro)
            elif method == "call_later":
                loop.call_later(1, coro)
            else:
                loop.call_at(loop.time() + 1, coro)
        name = method.replace("call_later", "call_at")
        assert str(exc.value) == f"coroutines cannot be used with {name}()"
    finally:
        coro.close()


def test_non_debug_bad_callback_fails_when_run(loop):
    loop.set_debug(False)  # the behaviour under test is non-debug mode
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    loop.call_soon(1)
    loop.call_soon(None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert [(c["message"], type(c["exception"]), str(c["exception"])) for c in contexts] == [
        ("Exception in callback 1()", TypeError, "'int' object is not callable"),
        ("Exception in callback None()", TypeError, "'NoneType' object is not callable"),
    ]


# -- bad delays and deadlines --------------------------------------------------------------------


def test_call_later_none_delay(loop):
    with pytest.raises(TypeError) as exc:
        loop.call_later(None, cb)
    assert str(exc.value) == "delay must not be None"


def test_call_at_none(loop):
    with pytest.raises(TypeError) as exc:
        loop.call_at(None, cb)
    assert str(exc.value) == "when cannot be None"


@pytest.mark.parametrize(
    "delay", ["1", b"1", [1], object()], ids=["str", "bytes", "list", "object"]
)
def test_call_later_non_numeric_delay_type(loop, delay):
    with pytest.raises(TypeError):
        loop.call_later(delay, cb)


def test_call_later_non_numeric_delay_message(loop):
    with pytest.raises(TypeError) as exc:
        loop.call_later("1", cb)
    assert str(exc.value) == "unsupported operand type(s) for +: 'float' and 'str'"


def test_call_later_decimal_delay(loop):
    with pytest.raises(TypeError) as exc:
        loop.call_later(decimal.Decimal(1), cb)
    assert str(exc.value) == "unsupported operand type(s) for +: 'float' and 'decimal.Decimal'"


def test_call_later_huge_int_delay(loop):
    with pytest.raises(OverflowError) as exc:
        loop.call_later(2**1100, cb)
    assert str(exc.value) == "int too large to convert to float"


def test_call_later_fraction_delay(loop):
    import fractions

    ran = []
    loop.call_later(fractions.Fraction(1, 100), ran.append, "x")
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert ran == ["x"]


@pytest.mark.parametrize("when", [math.inf, 1e308], ids=["inf", "1e308"])
def test_far_timers_never_fire(loop, when):
    ran = []
    loop.call_at(when, ran.append, "far")
    loop.call_later(when, ran.append, "far-later")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert ran == []


def test_negative_infinite_deadline_fires(loop):
    ran = []
    loop.call_at(-math.inf, ran.append, "past")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert ran == ["past"]


def test_bad_context_argument(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    loop.call_soon(cb, context=1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert [(type(c["exception"]), str(c["exception"])) for c in contexts] == [
        (AttributeError, "'int' object has no attribute 'run'")
    ]


def test_create_task_not_a_coroutine(loop):
    for bad in (1, None, cb):
        with pytest.raises(TypeError) as exc:
            loop.create_task(bad)
        assert str(exc.value) == f"a coroutine was expected, got {bad!r}"


# -- no Rust panic, whatever the arguments ---------------------------------------------------


class Weird:
    """Raises from every protocol a Rust conversion might call."""

    def __index__(self):
        raise ZeroDivisionError("index")

    def __float__(self):
        raise ZeroDivisionError("float")

    def __int__(self):
        raise ZeroDivisionError("int")

    def __bool__(self):
        raise ZeroDivisionError("bool")

    def __repr__(self):
        raise ZeroDivisionError("repr")

    def fileno(self):
        raise ZeroDivisionError("fileno")


class BigFileno:
    def fileno(self):
        return 2**80


BAD_VALUES = [
    None,
    0,
    1,
    -1,
    2**31,
    2**63,
    2**64,
    -(2**63) - 1,
    2**200,
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    "x",
    b"y",
    (),
    [],
    {},
    object(),
    Weird(),
    BigFileno(),
    cb,
    coro_fn,
    True,
    contextvars.Context(),
    0.5,
]

# Methods never called without arguments (they would block, close or stop the loop).
NO_EMPTY_CALL = {"run_forever", "close", "stop"}


def _public_methods(loop):
    names = []
    for name in sorted(dir(loop)):
        if name.startswith("_"):
            continue
        attr = getattr(loop, name, None)
        if callable(attr):
            names.append(name)
    return names


def _call_and_check(loop, name, args, kwargs):
    method = getattr(loop, name)
    try:
        result = method(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - every exception is checked
        assert_not_panic(exc)
        return
    if inspect.iscoroutine(result):
        result.close()
    elif isinstance(result, (asyncio.Handle, asyncio.Future)):
        result.cancel()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_fuzz_bad_arguments_never_panic(loop):
    names = _public_methods(loop)
    assert "call_soon" in names and "add_reader" in names
    calls = 0
    for name in names:
        if name == "run_in_executor":
            # Bad callables would be submitted to a thread pool: checked separately.
            continue
        if name not in NO_EMPTY_CALL:
            _call_and_check(loop, name, (), {})
        for value in BAD_VALUES:
            for args in ((value,), (value, value), (value, cb), (1, value), (cb, value, value)):
                if name == "run_until_complete" and any(
                    inspect.iscoroutinefunction(a) for a in args
                ):
                    continue
                _call_and_check(loop, name, args, {})
                calls += 1
            for kw in ("context", "name", "loop"):
                _call_and_check(loop, name, (cb,), {kw: value})
                _call_and_check(loop, name, (1, cb), {kw: value})
        if loop.is_closed():
            # Some argument closed the loop: start a fresh one for the next method.
            loop = type(loop)() if not isinstance(loop, ferroloop.Loop) else ferroloop.Loop()
    assert calls > 1000
    # Whatever was scheduled, running the loop must not panic either.
    loop.set_exception_handler(lambda lp, ctx: None)
    try:
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
    except BaseException as exc:  # noqa: BLE001
        assert_not_panic(exc)
    if not loop.is_closed():
        loop.close()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("value", BAD_VALUES, ids=[f"v{i}" for i in range(len(BAD_VALUES))])
def test_fuzz_timer_then_run_never_panics(loop, value):
    loop.set_exception_handler(lambda lp, ctx: None)
    for schedule in (
        lambda: loop.call_later(value, cb),
        lambda: loop.call_at(value, cb),
        lambda: loop.call_soon(value),
        lambda: loop.call_soon(cb, value, context=value),
    ):
        try:
            schedule()
        except BaseException as exc:  # noqa: BLE001
            assert_not_panic(exc)
    try:
        loop.call_later(0.005, loop.stop)
        loop.run_forever()
    except BaseException as exc:  # noqa: BLE001
        assert_not_panic(exc)


@pytest.mark.parametrize("cls_name", ["Handle", "TimerHandle"])
def test_fuzz_handle_constructors_never_panic(loop, cls_name):
    cls = (
        getattr(ferroloop, cls_name)
        if isinstance(loop, ferroloop.Loop)
        else getattr(asyncio, cls_name)
    )
    made = 0
    for value in BAD_VALUES:
        arg_sets = [(value, (), loop), (cb, value, loop), (cb, (), loop, value), (value,) * 4]
        if cls_name == "TimerHandle":
            arg_sets = [(value, *a) for a in arg_sets[:3]] + [(1.0, *a) for a in arg_sets]
        for args in arg_sets:
            try:
                h = cls(*args)
            except BaseException as exc:  # noqa: BLE001
                assert_not_panic(exc)
                continue
            made += 1
            for op in (repr, lambda h: h.cancel(), lambda h: h.cancelled(), repr):
                try:
                    op(h)
                except BaseException as exc:  # noqa: BLE001
                    assert_not_panic(exc)
            if cls_name == "TimerHandle":
                for other in BAD_VALUES[:5]:
                    for op in ("__lt__", "__le__", "__eq__", "__ge__", "__gt__", "__ne__"):
                        try:
                            getattr(h, op)(other)
                        except BaseException as exc:  # noqa: BLE001
                            assert_not_panic(exc)
    assert made > 0


def test_fuzz_run_in_executor_never_panics(loop):
    for value in BAD_VALUES:
        try:
            fut = loop.run_in_executor(value, cb)
        except BaseException as exc:  # noqa: BLE001
            assert_not_panic(exc)
        else:
            loop.run_until_complete(fut)
    loop.run_until_complete(loop.shutdown_default_executor())


# --- the current-task bookkeeping (asyncio's _enter_task/_leave_task around each step) ---


def _run_once_with_intruder(loop, intruder):
    """Runs what is scheduled, checks that `intruder` is then the loop's entry in asyncio's
    current-task dict (and takes it out), and returns the exception handler's reports."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    current = asyncio.tasks._current_tasks
    loop.call_soon(loop.stop)
    loop.run_forever()
    try:
        assert current.get(loop) is intruder
    finally:
        current.pop(loop, None)
    return errors


def test_step_leaving_a_different_current_task_is_reported(loop):
    """A coroutine that replaces the loop's entry in asyncio's current-task dict: leaving the
    step raises asyncio's RuntimeError, reported through the exception handler, and the entry
    it put there stays."""
    current = asyncio.tasks._current_tasks
    intruder = object()

    async def swap():
        current[loop] = intruder
        return "done"

    task = loop.create_task(swap())
    errors = _run_once_with_intruder(loop, intruder)
    assert task.done() and task.result() == "done"
    assert [type(c["exception"]) for c in errors] == [RuntimeError]
    message = str(errors[0]["exception"])
    assert message.startswith("Leaving task ")
    assert "does not match the current task" in message


def test_step_entering_while_another_task_is_current_is_reported(loop):
    intruder = object()
    ran = []

    async def body():
        ran.append(True)

    loop.call_soon(asyncio.tasks._current_tasks.__setitem__, loop, intruder)
    task = loop.create_task(body())
    errors = _run_once_with_intruder(loop, intruder)
    assert ran == [] and not task.done()
    assert [type(c["exception"]) for c in errors] == [RuntimeError]
    assert str(errors[0]["exception"]).startswith("Cannot enter into task ")
    # The failed step is not retried: the task stays pending, on both loops.
    task.get_coro().close()  # never started: closing it does not warn
    task._log_destroy_pending = False
