"""Callbacks ferroloop runs natively (asyncio.sleep's `_set_result_unless_cancelled` on a
ferroloop Future; `fut.set_result` bound to a future) behave as asyncio's callback does. Each
test runs on both loops.

Owns tests/test_known_callbacks.py.
"""

from __future__ import annotations

import asyncio
import asyncio.futures


def test_sleep_result_and_order(loop):
    order = []

    async def sleeper(delay, tag):
        value = await asyncio.sleep(delay, tag)
        order.append(value)
        return value

    async def main():
        return await asyncio.gather(sleeper(0.02, "b"), sleeper(0.01, "a"), sleeper(0, "z"))

    assert loop.run_until_complete(main()) == ["b", "a", "z"]
    assert order == ["z", "a", "b"]


def test_cancelled_sleep_leaves_no_timer_and_no_error(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        task = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"

    assert loop.run_until_complete(main()) == "cancelled"
    assert errors == []


def test_timer_on_a_cancelled_future_does_nothing(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    fut = loop.create_future()
    loop.call_later(0.001, asyncio.futures._set_result_unless_cancelled, fut, 1)
    fut.cancel()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert fut.cancelled()
    assert errors == []


def test_timer_on_a_done_future_reports_invalid_state(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    fut = loop.create_future()
    handle = loop.call_later(0.001, asyncio.futures._set_result_unless_cancelled, fut, 1)
    fut.set_result(0)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert fut.result() == 0
    assert len(errors) == 1
    ctx = errors[0]
    assert type(ctx["exception"]) is asyncio.InvalidStateError
    assert ctx["handle"] is handle
    assert ctx["message"].startswith("Exception in callback _set_result_unless_cancelled(")


def test_sleep_timer_run_by_hand_then_cancelled(loop):
    """A sleep-style timer whose `_run()` is called by hand while it is still scheduled
    completes its future at once; cancelled afterwards, it never runs again and the task that
    awaited the future has its result."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        fut = loop.create_future()
        handle = loop.call_later(10, asyncio.futures._set_result_unless_cancelled, fut, "early")

        async def wait():
            return await fut

        waiter = asyncio.ensure_future(wait())
        await asyncio.sleep(0)
        handle._run()
        assert fut.result() == "early"
        handle.cancel()
        assert handle.cancelled()
        value = await waiter
        await asyncio.sleep(0.01)
        return value

    assert loop.run_until_complete(main()) == "early"
    assert errors == []


def test_subclass_set_result_is_called(loop):
    calls = []

    base = type(loop.create_future())  # ferroloop.Future on ferroloop's loop

    class MyFuture(base):
        def set_result(self, result):
            calls.append(result)
            super().set_result(result)

    fut = MyFuture(loop=loop)
    loop.call_later(0.001, asyncio.futures._set_result_unless_cancelled, fut, "r")
    assert loop.run_until_complete(fut) == "r"
    assert calls == ["r"]


def test_timer_nobody_keeps_on_a_done_future_reports_invalid_state(loop):
    """The same with the handle held by the loop alone (it lets go of its references as it
    runs, so the report has to put them back)."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append((ctx, repr(ctx["handle"]))))
    fut = loop.create_future()
    loop.call_later(0.001, asyncio.futures._set_result_unless_cancelled, fut, 1)
    fut.set_result(0)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert len(errors) == 1
    ctx, handle_repr = errors[0]
    assert type(ctx["exception"]) is asyncio.InvalidStateError
    assert type(ctx["handle"]).__name__ == "TimerHandle"
    assert ctx["message"].startswith("Exception in callback _set_result_unless_cancelled(")
    assert "_set_result_unless_cancelled(" in handle_repr


# --- call_soon(fut.set_result, value): the bound method, run without entering a context ---


def test_bound_set_result_resolves_the_future_in_order(loop):
    async def main():
        futs = [loop.create_future() for _ in range(3)]
        order = []
        for i, f in enumerate(futs):
            f.add_done_callback(lambda f, i=i: order.append(i))
        for i, f in reversed(list(enumerate(futs))):
            loop.call_soon(f.set_result, i * 10)
        results = [await f for f in futs]
        return results, order

    assert loop.run_until_complete(main()) == ([0, 10, 20], [2, 1, 0])


def test_bound_set_result_on_a_done_future_reports_invalid_state(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append((ctx, repr(ctx["handle"]))))
    fut = loop.create_future()
    held = loop.call_soon(fut.set_result, 1)
    loop.call_soon(fut.set_result, 2)  # the loop alone holds this one
    fut.set_result(0)
    loop.run_until_complete(asyncio.sleep(0))
    assert fut.result() == 0
    assert len(errors) == 2
    for ctx, handle_repr in errors:
        assert type(ctx["exception"]) is asyncio.InvalidStateError
        assert ctx["message"].startswith("Exception in callback ")
        assert "set_result" in ctx["message"]
        assert "set_result" in handle_repr
    assert errors[0][0]["handle"] is held


def test_bound_set_result_on_a_cancelled_future_reports_invalid_state(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 1)
    fut.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert fut.cancelled()
    assert [type(c["exception"]) for c in errors] == [asyncio.InvalidStateError]


def test_bound_set_result_of_a_task_raises_as_task_set_result(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    async def main():
        task = asyncio.ensure_future(asyncio.sleep(0.01))
        loop.call_soon(task.set_result, 1)
        await task
        return task.result()

    assert loop.run_until_complete(main()) is None
    assert [type(c["exception"]) for c in errors] == [RuntimeError]
    assert "Task does not support set_result operation" in str(errors[0]["exception"])


def test_bound_set_result_of_a_subclass_override_is_called(loop):
    calls = []
    base = type(loop.create_future())

    class MyFuture(base):
        def set_result(self, result):
            calls.append(result)
            super().set_result(result)

    fut = MyFuture(loop=loop)
    loop.call_soon(fut.set_result, "r")
    assert loop.run_until_complete(fut) == "r"
    assert calls == ["r"]


def test_bound_set_result_with_a_wrong_argument_count_reports_type_error(loop):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 1, 2)
    loop.call_soon(fut.set_result)
    loop.run_until_complete(asyncio.sleep(0))
    assert not fut.done()
    assert [type(c["exception"]) for c in errors] == [TypeError, TypeError]


def test_bound_set_result_done_callbacks_keep_their_own_context(loop):
    import contextvars

    var = contextvars.ContextVar("var", default="unset")
    seen = []

    async def main():
        fut = loop.create_future()
        var.set("at add")
        fut.add_done_callback(lambda f: seen.append(var.get()))
        var.set("at call_soon")
        loop.call_soon(fut.set_result, None)
        var.set("after")
        await fut
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert seen == ["at add"]
