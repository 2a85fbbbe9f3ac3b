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
import inspect
import sys
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


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "add_done_callback() takes exactly 1 positional argument (0 given)"),
        ((print, print), {}, "add_done_callback() takes exactly 1 positional argument (2 given)"),
        ((), {"fn": print}, "add_done_callback() takes exactly 1 positional argument (0 given)"),
        ((print,), {"x": 1}, "'x' is an invalid keyword argument for add_done_callback()"),
    ],
    ids=["none", "two", "fn-by-keyword", "unknown-keyword"],
)
def test_add_done_callback_argument_errors(loop, make_future, args, kwargs, message):
    fut = make_future()
    with pytest.raises(TypeError) as exc:
        fut.add_done_callback(*args, **kwargs)
    assert str(exc.value) == message
    fut.add_done_callback(print, context=None)
    assert len(fut._callbacks) == 1


def test_future_methods_are_builtin_methods_of_the_class(loop):
    """result/exception/cancelled/done/add_done_callback of the loop's futures and tasks are
    methods of their own class, with the C Future's signatures and receiver check."""

    async def work():
        return 1

    fut = loop.create_future()
    task = loop.create_task(work())
    for obj in (fut, task):
        cls = type(obj)
        for name in ("result", "exception", "cancelled", "done"):
            assert str(inspect.signature(getattr(cls, name))) == "(self, /)"
            with pytest.raises(TypeError) as exc:
                getattr(cls, name)(1)
            assert str(exc.value).startswith(f"descriptor '{name}' for '")
            assert str(exc.value).endswith("' objects doesn't apply to a 'int' object")
    assert loop.run_until_complete(task) == 1
    assert (type(task).result(task), type(task).done(task), type(task).cancelled(task)) == (
        1,
        True,
        False,
    )
    assert type(task).exception(task) is None


def test_calls_outside_a_running_loop_let_go_at_once(loop):
    """What a call made outside a running loop lets go of is released when it returns: a
    bound method made for add_done_callback (the future then holds one reference to its
    instance, through the method or the instance itself), a value a done future refuses."""

    class Owner:
        def on_done(self, fut):
            pass

    owner = Owner()
    fut = loop.create_future()
    before = sys.getrefcount(owner)
    fut.add_done_callback(owner.on_done)
    assert sys.getrefcount(owner) == before + 1
    done = loop.create_future()
    done.set_result(None)
    value = object()
    before = sys.getrefcount(value)
    with pytest.raises(asyncio.InvalidStateError):
        done.set_result(value)
    assert sys.getrefcount(value) == before


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


# -- Task contexts ------------------------------------------------------------------------------
#
# asyncio gives every Task without ``context=`` a ``copy_context()`` taken at creation, kept as
# ``_context`` and entered for each step. ferroloop keeps only the variables between steps until
# someone asks for the Context, lends a Context for each step, and keeps that Context from the
# moment anything other than the task holds it. None of that may show.
#
# 3.11's C Task shows no ``_context`` (3.12 adds ``get_context()``), so on asyncio's loop these
# tests use asyncio's pure-Python Task, the reference the C one follows.


def new_task(loop, coro):
    if isinstance(loop, asyncio.BaseEventLoop):
        return asyncio.tasks._PyTask(coro, loop=loop)
    return loop.create_task(coro)


def test_task_context_is_a_copy_taken_at_creation(loop):
    async def child():
        return VAR.get()

    async def main():
        VAR.set("before")
        task = new_task(loop, child())
        VAR.set("after")
        return await task, VAR.get()

    assert loop.run_until_complete(main()) == ("before", "after")


def test_task_sets_last_across_its_steps_and_stay_in_the_task(loop):
    seen = []

    async def child(tag):
        VAR.set(tag)
        await asyncio.sleep(0)
        seen.append((tag, VAR.get()))
        await asyncio.sleep(0)
        seen.append((tag, VAR.get()))

    async def main():
        await asyncio.gather(*(new_task(loop, child(tag)) for tag in "abc"))
        return VAR.get()

    assert loop.run_until_complete(main()) == "default"
    assert sorted(seen) == [(t, t) for t in "aabbcc"]


def test_task_context_asked_for_before_it_runs_is_the_one_entered(loop):
    inside = []

    async def child():
        ctx = asyncio.current_task()._context
        inside.append(ctx)
        VAR.set("one")
        assert ctx[VAR] == "one"
        with pytest.raises(RuntimeError, match="already entered"):
            ctx.run(VAR.get)
        await asyncio.sleep(0)
        VAR.set("two")

    async def main():
        task = new_task(loop, child())
        first = task._context
        await task
        return task, first

    task, first = loop.run_until_complete(main())
    assert first is inside[0] is task._context
    assert first[VAR] == "two"


def test_task_context_asked_for_only_after_its_steps_holds_their_values(loop):
    async def child():
        VAR.set("one")
        await asyncio.sleep(0)
        VAR.set("two")
        await asyncio.sleep(0)

    async def main():
        task = new_task(loop, child())
        await task
        return task

    task = loop.run_until_complete(main())
    ctx = task._context
    assert isinstance(ctx, contextvars.Context)
    assert ctx is task._context
    assert ctx[VAR] == "two"
    assert ctx.run(VAR.get) == "two"


def test_task_context_asked_for_between_steps_is_entered_by_the_next(loop):
    seen = []

    async def child():
        VAR.set("one")
        await asyncio.sleep(0)
        seen.append(asyncio.current_task()._context)
        VAR.set("two")

    async def main():
        task = new_task(loop, child())
        await asyncio.sleep(0)  # the task's first step has run
        between = task._context
        assert between[VAR] == "one"
        await task
        return task, between

    task, between = loop.run_until_complete(main())
    assert seen == [between] and seen[0] is between is task._context
    assert between[VAR] == "two"


def test_task_context_kept_by_a_step_is_the_one_later_steps_run_in(loop):
    kept = {}

    async def child():
        kept["ctx"] = asyncio.current_task()._context
        VAR.set("one")
        await asyncio.sleep(0)
        assert asyncio.current_task()._context is kept["ctx"]
        VAR.set("two")
        await asyncio.sleep(0)

    task = loop.run_until_complete(_run_task(loop, child()))
    assert kept["ctx"] is task._context
    assert kept["ctx"][VAR] == "two"


def test_task_context_weakly_referenced_by_a_step_stays_the_task_context(loop):
    refs = []

    async def child():
        refs.append(weakref.ref(asyncio.current_task()._context))
        VAR.set("one")
        await asyncio.sleep(0)
        VAR.set("two")

    task = loop.run_until_complete(_run_task(loop, child()))
    gc.collect()
    assert refs[0]() is task._context
    assert refs[0]()[VAR] == "two"


def test_task_context_dropped_by_a_step_still_shows_later_values(loop):
    """A step looks at its context and lets go of it: later steps' sets are still what the
    task's context holds."""

    async def child():
        assert VAR not in asyncio.current_task()._context
        VAR.set("one")
        await asyncio.sleep(0)
        assert VAR.get() == "one"
        VAR.set("two")

    task = loop.run_until_complete(_run_task(loop, child()))
    assert task._context[VAR] == "two"


def test_value_set_by_a_task_released_with_the_task(loop):
    class Value:
        pass

    async def child():
        VAR.set(Value())
        refs.append(weakref.ref(VAR.get()))
        await asyncio.sleep(0)

    refs = []
    task = loop.run_until_complete(_run_task(loop, child()))
    assert refs[0]() is not None  # the finished task's context still holds it, as asyncio's
    del task
    gc.collect()
    assert refs[0]() is None


def test_cycle_through_a_task_context_value_is_collected(loop):
    async def child():
        VAR.set(asyncio.current_task())  # task -> its context's values -> task
        await asyncio.sleep(0)

    task = loop.run_until_complete(_run_task(loop, child()))
    ref = weakref.ref(task)
    del task
    gc.collect()
    assert ref() is None


async def _run_task(loop, coro):
    task = new_task(loop, coro)
    await task
    return task


@pytest.mark.parametrize("loop_kind", ["ferroloop"], indirect=True)
def test_pending_tasks_hold_no_context_object(loop):
    """ferroloop only: a pending task, before its first step and between steps, holds its
    context's variables, not a Context: two objects for the collector (the Task and its
    coroutine) where asyncio's Task makes three."""
    if loop.get_debug():
        pytest.skip("debug mode records each task's creation stack, made of GC objects")
    n = 2000
    gate = loop.create_future()

    async def child():
        await gate

    def tracked_contexts():
        return sum(type(o) is contextvars.Context for o in gc.get_objects())

    async def main():
        gc.collect()
        contexts_before = tracked_contexts()
        tasks = [loop.create_task(child()) for _ in range(n)]
        not_started = tracked_contexts() - contexts_before
        await asyncio.sleep(0)  # every task ran its first step and waits on `gate`
        waiting = tracked_contexts() - contexts_before
        gate.set_result(None)
        await asyncio.gather(*tasks)
        return not_started, waiting

    not_started, waiting = loop.run_until_complete(main())
    assert not_started == 0
    assert waiting <= 1  # at most the pool's spare


def test_finalizers_asking_for_task_contexts_during_collections(loop):
    """With a collection at nearly every allocation, finalizers of garbage cycles ask running
    and pending tasks for their context (`_context`) while ferroloop may be making one: every
    task still runs in one context of its own, with its own values, and nothing breaks."""
    tasks = []
    seen = []

    class Asker:
        def __del__(self):
            for t in tasks:
                seen.append(t._context)

    def litter():
        a, b = Asker(), Asker()
        a.other, b.other = b, a  # a cycle only the collector frees

    async def child(tag):
        litter()
        VAR.set(tag)
        await asyncio.sleep(0)
        litter()
        assert VAR.get() == tag
        await asyncio.sleep(0)
        return VAR.get(), asyncio.current_task()._context

    async def main():
        for i in range(20):
            tasks.append(new_task(loop, child(i)))
        return await asyncio.gather(*tasks)

    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)
    try:
        results = loop.run_until_complete(main())
    finally:
        gc.set_threshold(*old)
        gc.collect()
    assert [tag for tag, _ in results] == list(range(20))
    for task, (tag, ctx) in zip(tasks, results, strict=True):
        assert ctx is task._context and ctx[VAR] == tag
    assert seen  # the finalizers did run and ask


# --------------------------------------------------------------------------------------------
# A future's done callbacks: `loop.call_soon(callback, future, context=...)` in asyncio. On a
# ferroloop loop (outside debug mode) they are queued without a Handle; these tests pin down
# that nothing shows: order, context, errors and what the exception handler gets.
# --------------------------------------------------------------------------------------------


def test_done_callbacks_queue_in_order_with_call_soon(loop):
    order = []
    fut = loop.create_future()
    fut.add_done_callback(lambda f: order.append(("first", f.result())))
    fut.add_done_callback(lambda f: order.append(("second", f.result())))
    loop.call_soon(order.append, "before")
    fut.set_result(7)
    loop.call_soon(order.append, "after")
    # Added once the future is done: queued at once, behind "after".
    fut.add_done_callback(lambda f: order.append(("late", f.result())))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["before", ("first", 7), ("second", 7), "after", ("late", 7)]


def test_done_callbacks_run_in_their_context(loop):
    seen = []
    fut = loop.create_future()
    token = VAR.set("when added")
    try:
        fut.add_done_callback(lambda f: seen.append(("snapshot", VAR.get())))
        given = contextvars.copy_context()
        given.run(VAR.set, "given")
        fut.add_done_callback(lambda f: seen.append(("given", VAR.get())), context=given)
        VAR.set("when done")
        fut.set_result(None)
        fut.add_done_callback(lambda f: seen.append(("late", VAR.get())))
    finally:
        VAR.reset(token)

    def sets_a_value(f):
        VAR.set("set by a callback")

    fut.add_done_callback(sets_a_value)
    fut.add_done_callback(lambda f: seen.append(("next", VAR.get())))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [
        ("snapshot", "when added"),
        ("given", "given"),
        ("late", "when done"),
        ("next", "default"),
    ]
    assert given[VAR] == "given"


def test_done_callback_error_goes_to_the_handler_with_a_handle(loop):
    reported = []
    loop.set_exception_handler(lambda lp, ctx: reported.append(ctx))
    ran = []

    def fails(f):
        raise ValueError("from a done callback")

    fut = loop.create_future()
    fut.add_done_callback(fails)
    fut.add_done_callback(lambda f: ran.append("next"))
    fut.set_result("value")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["next"]  # the error did not stop the loop's turn
    [ctx] = reported
    assert set(ctx) - {"source_traceback"} == {"message", "exception", "handle"}
    assert ("source_traceback" in ctx) == loop.get_debug()
    assert ctx["message"].startswith(
        "Exception in callback test_done_callback_error_goes_to_the_handler_with_a_handle"
        ".<locals>.fails(<Future finis"  # cut by reprlib, as asyncio's
    )
    assert ctx["message"].endswith(f"at {__file__}:{fails.__code__.co_firstlineno}")
    assert type(ctx["exception"]) is ValueError
    handle = ctx["handle"]
    assert type(handle).__name__ == "Handle"  # ferroloop's own Handle class on ferroloop
    assert handle._callback is fails and handle._args == (fut,)
    assert repr(handle).startswith("<Handle test_done_callback_error_goes_to_the_handler")
    assert not handle.cancelled()


def test_done_callback_system_exit_leaves_the_loop(loop):
    def exits(f):
        raise SystemExit(3)

    fut = loop.create_future()
    fut.add_done_callback(exits)
    fut.set_result(None)
    with pytest.raises(SystemExit) as info:
        loop.run_forever()
    assert info.value.code == 3
    assert not loop.is_running()


def test_done_callbacks_of_a_closed_loop(loop_factory):
    """set_result on a future of a closed loop with callbacks: call_soon's RuntimeError."""
    loop = loop_factory()
    fut = loop.create_future()
    fut.add_done_callback(lambda f: None)
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        fut.set_result(1)


@pytest.mark.parametrize("kind", ["function", "bound_method"])
def test_done_callback_cycle_is_collected_after_close(loop_factory, kind):
    """A callback queued when the loop is closed is released with the queue (a function
    holding the payload, or the payload's own bound method)."""

    class Payload:
        def on_done(self, fut):
            pass

    loop = loop_factory()
    fut = loop.create_future()
    payload = Payload()
    payload.self_ref = payload
    probe = weakref.ref(payload)
    if kind == "function":
        fut.add_done_callback(lambda f, p=payload: p)
    else:
        fut.add_done_callback(payload.on_done)
    fut.set_result(None)  # queued
    del payload
    loop.close()
    del fut
    gc.collect()
    assert probe() is None


def test_done_callback_error_handle_kept_in_a_cycle_is_collected(loop):
    """The exception handler keeps the Handle of a failed done callback in a cycle through the
    callback: the collector frees it all once dropped."""

    class Probe:
        pass

    def setup():
        keep = [Probe()]

        def fails(f, keep=keep):
            raise ValueError("kept")

        loop.set_exception_handler(lambda lp, ctx: keep.append(ctx["handle"]))
        fut = loop.create_future()
        fut.add_done_callback(fails)
        fut.set_result(None)
        return weakref.ref(keep[0])

    probe = setup()
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.set_exception_handler(None)
    gc.collect()
    assert probe() is None


# --------------------------------------------------------------------------------------------
# A bound method given as a done callback (`fut.add_done_callback(self._on_done)`, as
# asyncio.TaskGroup adds `_on_task_done`). ferroloop keeps a method nobody else can see as its
# function and instance and calls `func(self, fut)` without a method object; these tests pin
# down that nothing shows.
# --------------------------------------------------------------------------------------------


class _Watcher:
    """Records what its bound methods see."""

    def __init__(self, seen):
        self.seen = seen

    def on_done(self, fut):
        self.seen.append(("on_done", fut.result(), VAR.get()))

    def fails(self, fut):
        raise ValueError("from a bound method")


def test_bound_method_callbacks_run_in_order_and_context(loop, make_future):
    seen = []
    watcher = _Watcher(seen)
    fut = make_future()
    token = VAR.set("when added")
    try:
        fut.add_done_callback(watcher.on_done)
        fut.add_done_callback(lambda f: seen.append(("lambda", f.result(), VAR.get())))
        given = contextvars.copy_context()
        given.run(VAR.set, "given")
        fut.add_done_callback(watcher.on_done, context=given)
    finally:
        VAR.reset(token)
    loop.call_soon(seen.append, "before")
    fut.set_result(5)
    loop.call_soon(seen.append, "after")
    fut.add_done_callback(_Watcher(seen).on_done)  # already done: queued at once
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [
        "before",
        ("on_done", 5, "when added"),
        ("lambda", 5, "when added"),
        ("on_done", 5, "given"),
        "after",
        ("on_done", 5, "default"),
    ]


def test_bound_method_callback_shown_and_removed_as_an_equal_method(loop, make_future):
    seen = []
    watcher = _Watcher(seen)
    fut = make_future()
    fut.add_done_callback(watcher.on_done)
    fut.add_done_callback(watcher.fails)
    [(first, ctx), (second, _)] = fut._callbacks
    assert first == watcher.on_done and first.__self__ is watcher
    assert first.__func__ is _Watcher.on_done
    assert second == watcher.fails
    assert isinstance(ctx, contextvars.Context)
    assert fut.remove_done_callback(watcher.fails) == 1
    assert fut.remove_done_callback(_Watcher(seen).on_done) == 0  # another instance
    fut.set_result(1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [("on_done", 1, "default")]


def test_bound_method_kept_by_the_caller_is_shown_as_itself(loop, make_future):
    """A method object the caller also holds is the one `_callbacks` shows, as on asyncio."""
    watcher = _Watcher([])
    method = watcher.on_done
    fut = make_future()
    fut.add_done_callback(method)
    assert fut._callbacks[0][0] is method


def test_bound_method_callback_error_reported_with_an_equal_method(loop):
    reported = []
    loop.set_exception_handler(lambda lp, ctx: reported.append(ctx))
    watcher = _Watcher([])
    fut = loop.create_future()
    fut.add_done_callback(watcher.fails)
    fut.set_result("value")
    loop.call_soon(loop.stop)
    loop.run_forever()
    [ctx] = reported
    assert ctx["message"].startswith("Exception in callback _Watcher.fails(<Future finis")
    assert type(ctx["exception"]) is ValueError
    handle = ctx["handle"]
    assert handle._callback == watcher.fails and handle._args == (fut,)
    assert repr(handle).startswith("<Handle _Watcher.fails(<Future finis")


def test_cycle_through_a_bound_method_callback_is_collected(loop, make_future):
    """instance -> future -> its done callback (the instance's method) -> instance: collected
    while the future is pending and once the callback has been queued by a closed loop."""

    class Owner:
        def on_done(self, fut):
            pass

    owner = Owner()
    owner.fut = make_future()
    owner.fut.add_done_callback(owner.on_done)
    probe = weakref.ref(owner)
    del owner
    gc.collect()
    assert probe() is None


def test_pending_bound_method_callbacks_hold_no_method_object(loop):
    """ferroloop keeps no method object for a method made for the call (asyncio's C Future
    keeps each one, tracked by the collector): N pending callbacks add no bound method to
    the collector's lists on ferroloop."""
    import types

    def methods() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is types.MethodType)

    watcher = _Watcher([])
    futures = [loop.create_future() for _ in range(200)]
    before = methods()
    for fut in futures:
        fut.add_done_callback(watcher.on_done)
    added = methods() - before
    if isinstance(loop, asyncio.BaseEventLoop):
        assert added == 200
    else:
        assert added == 0
    for fut in futures:
        fut.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
