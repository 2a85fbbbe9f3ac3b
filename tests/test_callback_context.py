"""The context a scheduled callback runs in, on asyncio's loop and ferroloop's.

asyncio gives every call_soon/call_later/call_at without ``context=`` a ``copy_context()`` taken
when it is scheduled. ferroloop takes the current context's variables then and makes the
Context when the callback runs (or when ``handle._context`` is looked at), and reuses a Context
that nothing kept for the next callback. These tests pin down that none of that shows: the
values seen, the isolation between callbacks, the identity of ``_context``, tokens, and when
values set in a callback are released.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import weakref

import pytest

VAR = contextvars.ContextVar("VAR", default="default")


def test_snapshot_taken_when_scheduled(loop):
    seen = []
    token = VAR.set("at schedule")
    try:
        loop.call_soon(lambda: seen.append(VAR.get()))
        loop.call_later(0, lambda: seen.append(VAR.get()))
        loop.call_at(loop.time(), lambda: seen.append(VAR.get()))
        VAR.set("changed after")
    finally:
        VAR.reset(token)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["at schedule"] * 3


def test_snapshot_of_a_context_being_run(loop):
    """call_soon from inside Context.run snapshots that context, not the thread's outer one."""
    seen = []
    ctx = contextvars.Context()

    def schedule():
        VAR.set("inside ctx")
        loop.call_soon(lambda: seen.append(VAR.get()))

    ctx.run(schedule)
    loop.call_soon(lambda: seen.append(VAR.get()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["inside ctx", "default"]


def test_callbacks_do_not_see_each_others_sets(loop):
    seen = []

    def setter(value):
        seen.append(("before", VAR.get()))
        VAR.set(value)
        seen.append(("after", VAR.get()))

    for i in range(5):
        loop.call_soon(setter, i)
    loop.call_soon(lambda: seen.append(("last", VAR.get())))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [x for i in range(5) for x in (("before", "default"), ("after", i))] + [
        ("last", "default")
    ]
    assert VAR.get() == "default"


def test_context_attribute_is_the_context_run_in(loop):
    """handle._context (and get_context()) is one object, the one the callback runs in."""

    def cb():
        VAR.set("set by callback")

    handle = loop.call_soon(cb)
    ctx = handle._context
    assert isinstance(ctx, contextvars.Context)
    assert handle._context is ctx
    if hasattr(handle, "get_context"):
        assert handle.get_context() is ctx
    assert VAR not in ctx
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ctx[VAR] == "set by callback"
    assert handle._context is ctx


def test_context_looked_at_after_run_is_the_one_run_in(loop):
    handle = loop.call_later(0, VAR.set, "from timer")
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    ctx = handle._context
    assert ctx is not None
    assert ctx[VAR] == "from timer"


def test_token_from_one_callback_is_foreign_to_the_next(loop):
    """A token keeps its Context: the next callback runs in another one, so reset() fails."""
    tokens = []
    errors = []

    def first():
        tokens.append(VAR.set("first"))

    def second():
        try:
            VAR.reset(tokens[0])
        except ValueError as exc:
            errors.append(str(exc))

    loop.call_soon(first)
    loop.call_soon(second)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(errors) == 1
    assert "different Context" in errors[0]


def test_copy_context_in_callback_keeps_the_values(loop):
    copies = []

    def cb(value):
        VAR.set(value)
        copies.append(contextvars.copy_context())

    for i in range(3):
        loop.call_soon(cb, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert [c[VAR] for c in copies] == [0, 1, 2]


class Payload:
    pass


def test_value_set_in_callback_released_after_it(loop):
    """What a callback stored in its context goes with the callback (no collection needed)."""
    refs = []

    def cb():
        payload = Payload()
        refs.append(weakref.ref(payload))
        VAR.set(payload)

    async def main():
        loop.call_soon(cb)
        for _ in range(3):
            await asyncio.sleep(0)

    gc.disable()
    try:
        loop.run_until_complete(main())
        assert refs and refs[0]() is None
    finally:
        gc.enable()


def test_value_in_scheduling_context_kept_while_pending(loop):
    """A pending callback keeps the values of the context it was scheduled in."""
    seen = []

    def schedule():
        payload = Payload()
        VAR.set(payload)
        loop.call_soon(lambda: seen.append(VAR.get()))
        return weakref.ref(payload)

    ref = contextvars.Context().run(schedule)
    gc.collect()
    assert ref() is not None
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [ref()] and isinstance(seen[0], Payload)


def test_threadsafe_call_snapshots_the_calling_thread(loop):
    seen = []

    def from_thread():
        VAR.set("thread value")
        loop.call_soon_threadsafe(lambda: seen.append(VAR.get()))
        loop.call_soon_threadsafe(loop.stop)

    token = VAR.set("loop thread value")
    try:
        loop.call_soon(lambda: threading.Thread(target=from_thread).start())
        loop.run_forever()
    finally:
        VAR.reset(token)
    assert seen == ["thread value"]


def test_cancelled_handle_keeps_no_context_values(loop):
    ref = None

    def schedule():
        nonlocal ref
        payload = Payload()
        ref = weakref.ref(payload)
        VAR.set(payload)
        return loop.call_soon(print)

    handle = contextvars.Context().run(schedule)
    assert ref() is not None
    handle.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    del handle
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("loop_kind", ["ferroloop"], indirect=True)
def test_pending_callbacks_hold_no_tracked_context(loop):
    """ferroloop only: queued callbacks hold their context's variables, not a Context each, so
    scheduling many creates no objects for the cyclic collector (asyncio creates a Context per
    callback; a queue of them makes collections that traverse them all)."""
    if loop.get_debug():
        pytest.skip("debug mode records each callback's creation stack, made of GC objects")
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(2000):
            loop.call_soon(print)
        grown = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert grown < 100
    loop.close()


# -- Future.add_done_callback -------------------------------------------------------------------


@pytest.fixture(params=["create_future", "asyncio.Future"])
def make_future(request, loop):
    if request.param == "create_future":
        return loop.create_future
    return lambda: asyncio.Future(loop=loop)


@pytest.mark.parametrize("done_before", [False, True], ids=["pending", "already-done"])
def test_done_callback_snapshot_taken_when_added(loop, make_future, done_before):
    seen = []
    fut = make_future()
    if done_before:
        fut.set_result(None)
    token = VAR.set("at add")
    try:
        fut.add_done_callback(lambda f: seen.append(VAR.get()))
        VAR.set("changed after")
    finally:
        VAR.reset(token)
    if not done_before:
        fut.set_result(None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["at add"]


def test_done_callbacks_shown_context_is_the_one_run_in(loop, make_future):
    fut = make_future()

    def cb(f):
        VAR.set("set by done callback")

    fut.add_done_callback(cb)
    [(shown_cb, ctx)] = fut._callbacks
    assert shown_cb is cb
    assert isinstance(ctx, contextvars.Context)
    assert fut._callbacks[0][1] is ctx
    fut.set_result(None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ctx[VAR] == "set by done callback"


def test_done_callbacks_isolated_and_removable(loop, make_future):
    seen = []
    fut = make_future()

    def setter(f):
        seen.append(VAR.get())
        VAR.set("leaked?")

    def removed(f):
        seen.append("removed ran")

    for _ in range(3):
        fut.add_done_callback(setter)
    fut.add_done_callback(removed)
    assert fut.remove_done_callback(removed) == 1
    fut.set_result(None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["default"] * 3


def test_remove_done_callback_matches_identity_first(loop, make_future):
    """The C Future compares with PyObject_RichCompareBool: the same object matches even if
    its __eq__ says otherwise; an equal one matches through __eq__."""
    eq_calls = []

    class NeverEqual:
        def __call__(self, fut):
            pass

        def __eq__(self, other):
            eq_calls.append(other)
            return False

        __hash__ = object.__hash__

    class AlwaysEqual(NeverEqual):
        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

    fut = make_future()
    never = NeverEqual()
    fut.add_done_callback(never)
    fut.add_done_callback(never)
    assert fut.remove_done_callback(never) == 2
    assert eq_calls == []
    fut.add_done_callback(NeverEqual())
    fut.add_done_callback(NeverEqual())
    assert fut.remove_done_callback(AlwaysEqual()) == 2
    assert fut.remove_done_callback(never) == 0
