"""Implicit exception chaining (``__context__``) of errors ferroloop raises, against asyncio.

Owns tests/test_exception_chaining.py.

An exception raised while another one is handled gets it as ``__context__`` (the "During handling
of the above exception, another exception occurred" part of a traceback). asyncio's C Future and
Task raise their errors (InvalidStateError, a stored exception, CancelledError) with
``PyErr_SetObject``, which chains them so; ferroloop's must chain the same way. Each scenario
raises inside an ``except`` block and records the chain; the trace on ferroloop's loop (native
Future/Task, native gather) must equal the one on asyncio's loop with asyncio's classes.
"""

from __future__ import annotations

import asyncio

import ferroloop
import pytest


def _chain(exc):
    out = []
    while exc is not None and len(out) < 6:
        out.append((type(exc).__name__, str(exc), exc.__cause__ is not None))
        exc = exc.__context__
    return out


def _during(handled, action):
    """Runs `action` while `handled` is being handled; the chain of what it raises."""
    try:
        raise handled
    except type(handled):
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - the chain is what is compared
            return _chain(exc)
    return "nothing raised"


async def _during_await(handled, awaitable):
    try:
        raise handled
    except type(handled):
        try:
            await awaitable
        except BaseException as exc:  # noqa: BLE001
            return _chain(exc)
    return "nothing raised"


async def _scenario(gather):
    loop = asyncio.get_running_loop()
    trace = []
    done = loop.create_future()
    done.set_result(1)
    trace.append(_during(KeyError("outer"), lambda: done.set_result(2)))
    trace.append(_during(KeyError("outer"), lambda: done.set_exception(ValueError())))
    trace.append(_during(KeyError("outer"), lambda: loop.create_future().result()))
    failed = loop.create_future()
    failed.set_exception(ValueError("stored"))
    trace.append(_during(KeyError("outer"), failed.result))
    trace.append(await _during_await(KeyError("outer"), failed))
    cancelled = loop.create_future()
    cancelled.cancel("why")
    trace.append(_during(KeyError("outer"), cancelled.result))
    trace.append(_during(KeyError("outer"), cancelled.exception))
    trace.append(await _during_await(KeyError("outer"), cancelled))

    async def boom():
        raise ValueError("from a task")

    task = asyncio.create_task(boom())
    await asyncio.sleep(0)
    trace.append(_during(KeyError("outer"), task.result))
    trace.append(await _during_await(KeyError("outer"), task))

    async def forever():
        await asyncio.sleep(3600)

    task = asyncio.create_task(forever())
    await asyncio.sleep(0)
    task.cancel("stop")
    trace.append(await _during_await(KeyError("outer"), task))
    trace.append(_during(KeyError("outer"), task.result))

    outer = gather(asyncio.sleep(3600))
    await asyncio.sleep(0)
    outer.cancel()
    trace.append(await _during_await(KeyError("outer"), outer))
    trace.append(_during(KeyError("outer"), outer.result))
    return trace


def _run(loop_factory, gather):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_scenario(gather))


@pytest.mark.parametrize("gather", ["asyncio", "ferroloop"])
def test_chains_equal_asyncio(gather):
    gather_fn = ferroloop.gather if gather == "ferroloop" else asyncio.gather
    expected = _run(asyncio.new_event_loop, asyncio.gather)
    got = _run(ferroloop.new_event_loop, gather_fn)
    assert got == expected
    # The scenarios do raise chained errors (guards against a trace of nothing).
    assert all(isinstance(entry, list) and len(entry) >= 2 for entry in expected)
