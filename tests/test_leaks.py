"""Resource leaks: file descriptors, loops and handles are released on both loops."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import warnings
import weakref

import ferroloop
import pytest

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def noop(*args):
    pass


def test_create_close_loops_no_fd_leak(loop_factory):
    # Warm up (imports, lazily created objects) before measuring.
    loop_factory().close()
    gc.collect()
    before = fd_count()
    for _ in range(200):
        loop = loop_factory()
        loop.call_soon(noop)
        loop.call_later(10, noop)
        loop.close()
    loop_factory.loops.clear()
    gc.collect()
    assert fd_count() == before


def test_run_and_close_loops_no_fd_leak(loop_factory):
    loop_factory().close()
    gc.collect()
    before = fd_count()
    for _ in range(50):
        loop = loop_factory()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    loop_factory.loops.clear()
    gc.collect()
    assert fd_count() == before


def test_add_reader_then_close_no_fd_leak(loop_factory):
    a, b = socket.socketpair()
    try:
        loop_factory().close()
        gc.collect()
        before = fd_count()
        for _ in range(50):
            loop = loop_factory()
            loop.add_reader(a, noop)
            loop.add_writer(b, noop)
            loop.close()
        loop_factory.loops.clear()
        gc.collect()
        assert fd_count() == before
    finally:
        a.close()
        b.close()


def test_closed_loop_is_collected(loop_factory):
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    loop_factory.loops.clear()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None


def test_closed_loop_with_pending_callbacks_is_collected(loop_factory):
    loop = loop_factory()
    # Handles refer to the loop; the loop refers to the handles: a cycle until close().
    loop.call_soon(loop.stop)
    loop.call_later(100, loop.call_soon, noop)
    loop.call_at(loop.time() + 100, noop, loop)
    loop.close()
    loop_factory.loops.clear()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None


class Holder:
    def __init__(self, loop):
        self.loop = loop

    def method(self):
        pass


CYCLE_MAKERS = {
    "attribute": lambda loop, holder, sock: None,
    "call_soon": lambda loop, holder, sock: loop.call_soon(holder.method),
    "call_later": lambda loop, holder, sock: loop.call_later(100, holder.method),
    "call_soon-args": lambda loop, holder, sock: loop.call_soon(noop, holder, 1),
    "call_later-args": lambda loop, holder, sock: loop.call_later(100, noop, holder),
    "call_soon-loop.stop": lambda loop, holder, sock: loop.call_soon(loop.stop),
    "add_reader": lambda loop, holder, sock: loop.add_reader(sock, holder.method),
    "task_factory": lambda loop, holder, sock: loop.set_task_factory(
        lambda lp, coro, h=holder: asyncio.Task(coro, loop=lp)
    ),
}


@pytest.mark.parametrize(
    "maker",
    [
        "attribute",
        "call_soon",
        "call_later",
        "call_soon-args",
        "call_later-args",
        "call_soon-loop.stop",
        "add_reader",
        "task_factory",
    ],
)
@pytest.mark.parametrize("ran", [False, True], ids=["never-run", "after-a-run"])
def test_unclosed_loop_in_reference_cycle_is_collected(loop_factory, maker, ran):
    a, b = socket.socketpair()
    try:
        loop = loop_factory()
        holder = Holder(loop)
        loop.holder = holder  # loop -> holder -> loop
        if ran:
            # ferroloop leaves a running loop out of the collector's lists (it is alive then);
            # it is a candidate for collection again once it stops.
            loop.run_until_complete(asyncio.sleep(0))
        CYCLE_MAKERS[maker](loop, holder, a)
        loop_factory.loops.clear()
        ref = weakref.ref(loop)
        href = weakref.ref(holder)
        del loop, holder
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
            gc.collect()
        alive = ref()
        if alive is not None:
            alive.close()  # don't leak its fds into later tests
            del alive
        assert ref() is None
        assert href() is None
        assert any(
            issubclass(w.category, ResourceWarning) and "unclosed event loop" in str(w.message)
            for w in caught
        ), [str(w.message) for w in caught]
    finally:
        a.close()
        b.close()


def test_handles_released_after_running(loop):
    refs = []
    n = 10_000
    for i in range(n):
        h = loop.call_soon(noop, i)
        if i % 100 == 0:
            refs.append(weakref.ref(h))
    for i in range(n):
        h = loop.call_later(0.001 * (i % 5), noop, i)
        if i % 100 == 0:
            refs.append(weakref.ref(h))
    del h
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    gc.collect()
    alive = [r for r in refs if r() is not None]
    assert alive == []


def test_handles_released_by_refcount(loop):
    """No cycle keeps a run handle alive: it is freed without the cycle collector."""
    refs = []
    for i in range(1000):
        h = loop.call_soon(noop, i)
        if i % 50 == 0:
            refs.append(weakref.ref(h))
    del h
    loop.call_soon(loop.stop)
    gc.disable()
    try:
        loop.run_forever()
        alive = [r for r in refs if r() is not None]
    finally:
        gc.enable()
    assert alive == []


def test_cancelled_timers_released(loop):
    refs = []
    handles = [loop.call_later(100 + i, noop) for i in range(1000)]
    refs = [weakref.ref(h) for h in handles[::50]]
    for h in handles:
        h.cancel()
    del handles, h
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert [r for r in refs if r() is not None] == []


def test_callback_args_released_after_run(loop):
    class Payload:
        pass

    payload = Payload()
    ref = weakref.ref(payload)
    loop.call_soon(noop, payload)
    loop.call_later(0, noop, payload)
    del payload
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    gc.collect()
    assert ref() is None


def test_cancelled_handle_releases_callback(loop):
    class Payload:
        def method(self):
            pass

    payload = Payload()
    ref = weakref.ref(payload)
    h = loop.call_soon(payload.method)
    th = loop.call_later(100, noop, payload)
    del payload
    h.cancel()
    th.cancel()
    gc.collect()
    # Cancelling drops the callback and its arguments even while the handles are alive.
    assert ref() is None
    assert h.cancelled() and th.cancelled()


def test_tasks_released_after_completion(loop):
    async def work(i):
        await asyncio.sleep(0)
        return i

    async def main():
        tasks = [asyncio.ensure_future(work(i)) for i in range(500)]
        refs = [weakref.ref(t) for t in tasks[::25]]
        await asyncio.gather(*tasks)
        del tasks
        return refs

    refs = loop.run_until_complete(main())
    gc.collect()
    assert [r for r in refs if r() is not None] == []


def test_task_sleeping_when_the_loop_closes_is_collected(loop_factory):
    """A task left in asyncio.sleep when its loop closes: its coroutine holds the sleep's
    TimerHandle, which holds the future the task waits on. Once the loop is gone the cycle is
    garbage (asyncio reports 'Task was destroyed but it is pending!' and frees it)."""
    loop = loop_factory()

    async def sleeper():
        await asyncio.sleep(3600)

    async def start():
        task = asyncio.get_running_loop().create_task(sleeper())
        await asyncio.sleep(0)
        return weakref.ref(task)

    ref = loop.run_until_complete(start())
    messages = []
    loop.set_exception_handler(lambda lp, ctx: messages.append(ctx["message"]))
    loop.close()
    del loop
    gc.collect()
    assert ref() is None
    assert messages == ["Task was destroyed but it is pending!"]


def test_task_awaiting_a_future_only_it_holds_is_collected(loop_factory):
    """A task awaiting a future that only its own frame holds: task -> coroutine -> the
    future's iterator -> future -> its done callback -> task. Nothing else holds the task, so
    the cycle is garbage at once (reported as a pending task destroyed, and freed)."""
    loop = loop_factory()

    async def waiter():
        await loop.create_future()

    async def start():
        task = loop.create_task(waiter())
        await asyncio.sleep(0)
        return weakref.ref(task)

    messages = []
    loop.set_exception_handler(lambda lp, ctx: messages.append(ctx["message"]))
    ref = loop.run_until_complete(start())
    gc.collect()
    assert ref() is None
    assert messages == ["Task was destroyed but it is pending!"]
    loop.close()


class _Keeper:
    """Holds the handle of its own scheduled method: keeper -> handle -> bound method -> keeper."""

    def method(self):
        pass


def _churn_handles_and_awaits(loop):
    """Creates and frees many handles, timer handles and awaits, so that objects reused from
    free lists (which come back untracked by the collector) are what the next test gets."""

    async def awaits():
        for _ in range(300):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, None)
            await fut
            loop.call_later(10, noop).cancel()

    loop.run_until_complete(awaits())


@pytest.mark.parametrize("kind", ["call_soon", "call_later"])
def test_handle_kept_after_running_keeps_callback_and_is_collectable(loop, kind):
    """A handle someone holds still shows its callback once it has run (as asyncio's does),
    and a cycle through it is collected."""
    _churn_handles_and_awaits(loop)
    keeper = _Keeper()
    if kind == "call_soon":
        keeper.handle = loop.call_soon(keeper.method)
    else:
        keeper.handle = loop.call_later(0, keeper.method)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert "_Keeper.method()" in repr(keeper.handle)
    ref = weakref.ref(keeper)
    del keeper
    gc.collect()
    assert ref() is None


class _ArgKeeper:
    """Kept by a handle as its argument, and keeping the handle: a cycle through the
    handle's argument tuple."""

    handle = None


@pytest.mark.parametrize("kind", ["set_result", "sleep_callback", "python_callback"])
def test_cycle_through_kept_handles_arguments_is_collected(loop, kind):
    """A handle someone holds keeps its arguments once it has run, as asyncio's does; a cycle
    through them (argument -> handle -> arguments) is collected, whether the callback is one
    the loop runs natively (a future's set_result, asyncio.sleep's timer callback) or Python."""
    _churn_handles_and_awaits(loop)
    keeper = _ArgKeeper()
    fut = loop.create_future()
    if kind == "set_result":
        keeper.handle = loop.call_soon(fut.set_result, keeper)
    elif kind == "sleep_callback":
        callback = asyncio.futures._set_result_unless_cancelled
        keeper.handle = loop.call_later(0, callback, fut, keeper)
    else:
        loop.call_soon(fut.set_result, None)
        keeper.handle = loop.call_later(0, noop, keeper, fut)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert fut.done()
    ref = weakref.ref(keeper)
    del keeper, fut
    gc.collect()
    assert ref() is None


class _KeepsItsArgs(Exception):
    """A callback that keeps the argument tuple it is called with (an exception's ``args``)."""

    made: list = []

    def __new__(cls, *args):
        # BaseException's own __init__ (not overridden) then stores the tuple it is given.
        self = super().__new__(cls, *args)
        cls.made.append(self)
        return self


def test_callback_keeping_its_argument_tuple_leaves_a_collectable_cycle(loop):
    """A callback may keep the very tuple of arguments it was called with (a class given as
    callback: BaseException stores it as ``args``); a cycle through that tuple is collected."""
    _KeepsItsArgs.made.clear()
    keeper = _ArgKeeper()
    loop.call_later(0, _KeepsItsArgs, keeper)
    loop.run_until_complete(asyncio.sleep(0.001))
    (exc,) = _KeepsItsArgs.made
    _KeepsItsArgs.made.clear()
    assert exc.args == (keeper,)
    assert gc.is_tracked(exc.args)
    keeper.handle = exc  # keeper -> exc -> exc.args -> keeper
    ref = weakref.ref(keeper)
    del keeper, exc
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("shown_by", ["_args", "repr"])
@pytest.mark.parametrize("kind", ["call_soon", "call_later", "call_at"])
def test_handle_arguments_shown_to_python_are_tracked(loop, kind, shown_by):
    """A handle's argument tuple, once Python code can reach it (``_args``, repr), is an
    ordinary tracked tuple on both loops."""
    keeper = _ArgKeeper()
    if kind == "call_soon":
        handle = loop.call_soon(noop, keeper)
    elif kind == "call_later":
        handle = loop.call_later(100, noop, keeper)
    else:
        handle = loop.call_at(loop.time() + 100, noop, keeper)
    if shown_by == "repr":
        assert "noop" in repr(handle)
        assert [r for r in gc.get_referrers(keeper) if type(r) is tuple]
    args = handle._args
    assert args == (keeper,)
    assert gc.is_tracked(args)
    keeper.args = args  # keeper -> args -> keeper
    handle.cancel()
    ref = weakref.ref(keeper)
    del keeper, args, handle
    gc.collect()
    assert ref() is None


def _collect_ignoring_unclosed() -> None:
    """Two full collections, with the "unclosed" ResourceWarnings they cause silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
        gc.collect()


def test_reader_cycle_collected_after_handle_churn(loop_factory):
    """A reader's handle is visible to the collector even when its memory was reused."""
    a, b = socket.socketpair()
    try:
        loop = loop_factory()
        _churn_handles_and_awaits(loop)
        keeper = _Keeper()
        keeper.loop = loop  # keeper -> loop -> reader handle -> keeper.method -> keeper
        loop.add_reader(a, keeper.method)
        loop_factory.loops.clear()
        ref = weakref.ref(keeper)
        del keeper, loop
        _collect_ignoring_unclosed()
        assert ref() is None
    finally:
        a.close()
        b.close()


def test_cycle_through_future_iterator_collected_after_churn(loop):
    """`await fut`'s iterator is visible to the collector even when its memory was reused:
    iterator -> future -> done callback -> iterator is collected."""
    _churn_handles_and_awaits(loop)

    def make_cycle():
        fut = loop.create_future()
        it = fut.__await__()
        fut.add_done_callback(lambda f: it)
        return weakref.ref(fut)

    fut_ref = make_cycle()
    assert fut_ref() is not None  # only the cycle keeps it
    gc.collect()
    assert fut_ref() is None


def test_unclosed_loop_cycle_through_reused_handle_is_collected(loop_factory):
    """A handle whose other holder lets go of it during its callback (asyncio code does
    `self._handle = None` in the callback) is tracked by the collector when it runs; ferroloop
    may reuse it for a later call_soon, and a queued one must not be tracked (the loop reports
    its references): the loop -> handle -> holder -> loop cycle is still collected."""
    loop = loop_factory()
    holder = Holder(loop)
    loop.holder = holder

    def drop_own_handle(owner):
        owner.handle = None

    for _ in range(3):
        holder.handle = loop.call_soon(drop_own_handle, holder)
        loop.run_until_complete(asyncio.sleep(0))
    loop.call_soon(holder.method)
    loop_factory.loops.clear()
    ref = weakref.ref(loop)
    href = weakref.ref(holder)
    del loop, holder
    _collect_ignoring_unclosed()
    alive = ref()
    if alive is not None:
        alive.close()
        del alive
    assert ref() is None
    assert href() is None


# Tasks waiting in a running loop's ready queue. ferroloop takes a queued Task and its
# coroutine off the collector's lists while the loop runs (the running loop holds them, so they
# cannot be garbage), and puts them back when the step is taken off the queue or the loop stops.


def test_task_is_tracked_while_its_steps_run(loop):
    """Inside its own steps, a task and its coroutine are on the collector's lists (a cycle
    made during a step must be collectable), on the first step and after a reschedule."""
    seen = []

    async def child():
        task = asyncio.current_task()
        seen.append((gc.is_tracked(task), gc.is_tracked(task.get_coro())))
        await asyncio.sleep(0)
        seen.append((gc.is_tracked(task), gc.is_tracked(task.get_coro())))

    async def main():
        await asyncio.gather(*(loop.create_task(child()) for _ in range(3)))

    loop.run_until_complete(main())
    assert seen == [(True, True)] * 6


def _children_keep_what_they_hold(loop, child, while_waiting):
    """Runs 20 tasks `child(box, i)`, each given a self-referencing list that only its
    coroutine holds, awaiting `while_waiting()` once they are created; returns their results
    (each checks its list is intact)."""

    async def main():
        tasks = []
        for i in range(20):
            box = []
            box.extend([box, i])
            tasks.append(loop.create_task(child(box, i)))
        del box
        await while_waiting()
        return await asyncio.gather(*tasks)

    return loop.run_until_complete(main())


def test_objects_held_only_by_a_queued_task_survive_collections(loop):
    """A collection while tasks wait to run (before their first step, and rescheduled after
    `sleep(0)`) frees nothing they hold: each task's argument, a self-referencing list only its
    coroutine holds, is intact when the task runs."""

    async def child(box, i):
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
        return box[0] is box and box[1] == i

    async def collect_now():
        gc.collect()  # every task is queued for its first step

    assert _children_keep_what_they_hold(loop, child, collect_now) == [True] * 20


def test_task_left_queued_when_the_loop_stops_is_tracked_and_collected(loop_factory):
    """A task created in the loop's last turn has not run when run_forever returns; its
    coroutine's argument holds it (task -> coroutine -> list -> task). Once the loop stops, the
    collector sees both again: when the closed loop lets go of the task, the cycle is garbage
    and is collected (asyncio reports the pending task destroyed)."""
    loop = loop_factory()

    async def never_runs(box):
        pass

    refs = []

    def create_and_stop():
        loop.stop()
        box = []
        task = loop.create_task(never_runs(box))
        box.append(task)
        refs.append(weakref.ref(task))

    loop.call_soon(create_and_stop)
    loop.run_forever()
    task = refs[0]()
    assert gc.is_tracked(task) and gc.is_tracked(task.get_coro())
    del task
    messages = []
    loop.set_exception_handler(lambda lp, ctx: messages.append(ctx["message"]))
    loop.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine ... was never awaited"
        gc.collect()
    assert refs[0]() is None
    assert messages == ["Task was destroyed but it is pending!"]


def test_awaited_coroutines_of_a_task_left_queued_are_tracked_and_collected(loop_factory):
    """A task stopped mid-way (its sleep(0) step still queued when run_forever returns) is
    in a cycle through a coroutine it awaits (task -> coroutine -> awaited coroutine -> list
    -> task). Once the loop stops, that coroutine is on the collector's lists again, and the
    cycle is collected when the closed loop lets go of the task."""
    loop = loop_factory()
    refs = {}

    async def inner(box):
        loop.stop()
        await asyncio.sleep(0)

    async def outer():
        box = []
        awaited = inner(box)
        box.append(asyncio.current_task())
        refs["inner"] = weakref.ref(awaited)
        await awaited

    task = loop.create_task(outer())
    refs["task"] = weakref.ref(task)
    del task
    loop.run_forever()
    assert gc.is_tracked(refs["inner"]())
    messages = []
    loop.set_exception_handler(lambda lp, ctx: messages.append(ctx["message"]))
    loop.close()
    gc.collect()
    assert refs["task"]() is None
    assert refs["inner"]() is None
    assert messages == ["Task was destroyed but it is pending!"]


def test_task_initialised_again_while_queued_lets_go_of_its_first_coroutine(loop):
    """`Task.__init__` called again on a task waiting for its first step replaces its
    coroutine: the first one is freed (with the collector's lists intact), the second runs."""

    async def first():
        return 1

    async def second():
        return 2

    async def main():
        task = loop.create_task(first())
        ref = weakref.ref(task.get_coro())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine ... was never awaited"
            task.__init__(second(), loop=loop)
            gc.collect()
        return ref() is None, await task

    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx["exception"]))
    assert loop.run_until_complete(main()) == (True, 2)
    # Each __init__ scheduled a step: the second one to run finds the task done, on both loops.
    loop.run_until_complete(asyncio.sleep(0))
    assert [type(e) for e in errors] == [asyncio.InvalidStateError]


def test_awaited_coroutines_are_tracked_while_the_step_runs(loop):
    """Coroutines a task awaits through are on the collector's lists inside the task's steps,
    before and after a `sleep(0)` rescheduled it (ferroloop parks them with the task)."""
    seen = []

    async def inner(box):
        seen.append(gc.is_tracked(box[0]))
        await asyncio.sleep(0)
        seen.append(gc.is_tracked(box[0]))

    async def child():
        box = []
        awaited = inner(box)
        box.append(awaited)
        await awaited
        seen.append(gc.is_tracked(awaited))

    async def main():
        await asyncio.gather(*(loop.create_task(child()) for _ in range(3)))

    loop.run_until_complete(main())
    assert seen == [True] * 9


def test_awaited_coroutine_closed_from_outside_while_the_task_waits(loop):
    """A coroutine that a task awaits through is closed by other code while the task waits in
    the ready queue after `sleep(0)`: the coroutines below it are let go of (ferroloop holds
    them until the task's step, on the collector's lists again). The task then fails as on
    asyncio, and everything is freed."""
    refs = {}

    async def leaf():
        await asyncio.sleep(0)
        return "leaf"

    async def middle():
        awaited = leaf()
        refs["leaf"] = weakref.ref(awaited)
        return await awaited

    async def child(box):
        awaited = middle()
        box.append(awaited)
        return await awaited

    async def main():
        box = []
        task = loop.create_task(child(box))
        await asyncio.sleep(0)  # the task ran to its sleep(0) and waits for its next step
        assert not task.done()
        box.pop().close()
        gc.collect()
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await task
        refs["task"] = weakref.ref(task)

    loop.run_until_complete(main())
    gc.collect()
    assert refs["leaf"]() is None
    assert refs["task"]() is None


@pytest.mark.parametrize("loop_kind", ["ferroloop"], indirect=True)
def test_queued_tasks_are_off_the_collector_lists_while_the_loop_runs(loop):
    """ferroloop only: a task waiting for its first step in a running loop's queue, and its
    coroutine, are not tracked by the collector (asyncio's are); both are tracked again once
    the step runs."""
    states = {}

    async def child():
        states["running"] = gc.is_tracked(asyncio.current_task())

    async def main():
        task = loop.create_task(child())
        states["queued"] = (gc.is_tracked(task), gc.is_tracked(task.get_coro()))
        await task
        states["done"] = (gc.is_tracked(task), gc.is_tracked(task.get_coro()))

    loop.run_until_complete(main())
    assert states == {"queued": (False, False), "running": True, "done": (True, True)}


@pytest.mark.parametrize("loop_kind", ["ferroloop"], indirect=True)
def test_coroutines_awaited_by_a_queued_task_are_off_the_collector_lists(loop):
    """ferroloop only: while a task waits in the running loop's queue after `sleep(0)`, the
    coroutines its coroutine awaits through (here `inner()`, asyncio.sleep's coroutine and its
    bare-yield generator) are not tracked either; they are once the step runs."""
    states = {}

    async def inner():
        await asyncio.sleep(0)
        states["running"] = gc.is_tracked(awaited[0])

    awaited = []

    async def child():
        awaited.append(inner())
        await awaited[0]

    async def main():
        task = loop.create_task(child())
        await asyncio.sleep(0)  # the task ran to its sleep(0) and waits for its next step
        states["queued"] = (gc.is_tracked(task.get_coro()), gc.is_tracked(awaited[0]))
        await task
        states["done"] = gc.is_tracked(awaited[0])

    loop.run_until_complete(main())
    assert states == {"queued": (False, False), "running": True, "done": True}


class _SpawnsOnFinalize:
    """In a reference cycle: its finalizer, run by the collector, creates a task."""

    def __init__(self, spawn):
        self.spawn = spawn
        self.me = self

    def __del__(self):
        self.spawn()


def test_tasks_queued_and_run_through_constant_collections(loop):
    """Collections at nearly every allocation (threshold 1) while tasks are created, queued,
    rescheduled by sleep(0), cancelled before their first step and finished, and while the
    collector's finalizers create tasks themselves: every result arrives and every queued
    argument is intact."""
    spawned = []

    async def leaf(i, box):
        await asyncio.sleep(0)
        assert box == [i]
        return i

    async def from_finalizer(i):
        await asyncio.sleep(0)
        return -i

    def spawn():
        spawned.append(loop.create_task(from_finalizer(len(spawned) + 1)))

    async def never_started():
        raise AssertionError("cancelled before its first step")

    async def node(level, base):
        if level == 0:
            _SpawnsOnFinalize(spawn)  # garbage at once: a later collection finalizes it
            return await leaf(base, [base])
        doomed = loop.create_task(never_started())
        doomed.cancel()
        results = await asyncio.gather(*(node(level - 1, base * 4 + k) for k in range(4)))
        assert doomed.cancelled()
        return sum(results)

    async def main():
        total = await node(3, 1)
        gc.collect()  # the finalizers not run yet run now
        while not all(t.done() for t in spawned):
            await asyncio.sleep(0)
        return total, sorted(t.result() for t in spawned)

    old = gc.get_threshold()
    gc.set_threshold(1)
    try:
        total, from_finalizers = loop.run_until_complete(main())
    finally:
        gc.set_threshold(*old)
    assert total == sum(range(64, 128))
    assert from_finalizers == list(range(-64, 0))


@pytest.mark.parametrize("when", ["before-first-step", "after-sleep0"])
def test_coroutine_closed_while_its_task_is_queued(loop, when):
    """User code closes the coroutine of a task waiting in the queue (before its first step, or
    rescheduled by sleep(0)): a started one runs its `finally` at the close; the task then
    fails with asyncio's RuntimeError, and the task, its coroutine and a cycle its frame held
    are collected."""
    log = []

    class Box:
        pass

    async def child(box):
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            return box
        finally:
            log.append("finally")

    async def main():
        box = Box()
        box.me = box
        box_ref = weakref.ref(box)
        task = loop.create_task(child(box))
        del box
        if when == "after-sleep0":
            await asyncio.sleep(0)  # the task ran its first step and is queued again
        task.get_coro().close()
        gc.collect()
        try:
            await task
        except RuntimeError as exc:
            outcome = str(exc)
        return outcome, [weakref.ref(task), weakref.ref(task.get_coro()), box_ref]

    outcome, refs = loop.run_until_complete(main())
    gc.collect()
    assert outcome == "cannot reuse already awaited coroutine"
    assert [r() for r in refs] == [None, None, None]
    assert log == (["finally"] if when == "after-sleep0" else [])


# Tasks waiting on a future that a timer will complete (asyncio.sleep's). ferroloop takes such
# a task, its coroutine and what that awaits through off the collector's lists while the timer
# is in the running loop's heap (the loop holds the timer, the timer the future, the future
# the task's wake-up), and puts them back when the timer is cancelled, a wake-up is removed,
# the wake-up runs, or the loop stops.


def _timer_future(loop):
    """A future and the timer that will complete it: what asyncio.sleep(10) schedules."""
    fut = loop.create_future()
    timer = loop.call_later(10, asyncio.futures._set_result_unless_cancelled, fut, None)
    return fut, timer


def test_objects_held_only_by_sleeping_tasks_survive_collections(loop):
    """Collections while tasks sleep on timers free nothing the tasks hold: a self-referencing
    list only each coroutine holds is intact when the task wakes up."""

    async def child(box, i):
        await asyncio.sleep(0.001)
        return box[0] is box and box[1] == i

    async def collector():
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)

    assert _children_keep_what_they_hold(loop, child, collector) == [True] * 20


def test_sleeping_task_is_tracked_while_its_steps_run(loop):
    """A task and the coroutines it awaits through are on the collector's lists inside the
    step after a sleep on a timer, as on asyncio."""
    seen = []

    async def inner(box):
        await asyncio.sleep(0.001)
        task = asyncio.current_task()
        seen.append((gc.is_tracked(task), gc.is_tracked(task.get_coro()), gc.is_tracked(box[0])))

    async def child():
        box = []
        awaited = inner(box)
        box.append(awaited)
        await awaited

    async def main():
        await asyncio.gather(*(loop.create_task(child()) for _ in range(3)))

    loop.run_until_complete(main())
    assert seen == [(True, True, True)] * 3


def _abandon_waiter(loop, release):
    """A task waiting on a timer's future, in a cycle (task -> coroutine -> list -> task);
    `release(fut, timer, task)` makes the loop let go of it. Returns a weak reference to the
    task and the exception handler's messages."""
    messages = []
    loop.set_exception_handler(lambda lp, ctx: messages.append(ctx["message"]))
    refs = []

    async def waiter(box, fut):
        await fut

    async def main():
        fut, timer = _timer_future(loop)
        box = []
        task = loop.create_task(waiter(box, fut))
        box.append(task)
        await asyncio.sleep(0)  # the task runs and waits on fut
        assert not task.done()
        release(fut, timer, task)
        refs.append(weakref.ref(task))

    loop.run_until_complete(main())
    return refs[0], messages


@pytest.mark.parametrize(
    "how",
    ["TimerHandle.cancel", "Handle.cancel", "remove_done_callback"],
)
def test_task_abandoned_by_its_timer_is_collected(loop, how):
    """When the timer that would complete a task's future is cancelled (through the timer's
    cancel or its base class's), or the task's wake-up is removed from the future, nothing
    holds the task but its own cycle: it is collected, and reported destroyed while pending,
    as on asyncio."""

    def release(fut, timer, task):
        if how == "TimerHandle.cancel":
            timer.cancel()
        elif how == "Handle.cancel":
            type(timer).__mro__[1].cancel(timer)
        else:
            assert fut.remove_done_callback(fut._callbacks[0][0]) == 1
        assert gc.is_tracked(task)

    ref, messages = _abandon_waiter(loop, release)
    gc.collect()
    assert ref() is None
    assert messages == ["Task was destroyed but it is pending!"]


def test_task_sleeping_when_the_loop_stops_is_tracked_and_collected(loop_factory):
    """run_until_complete returns while a task still waits on a timer's future: the task is
    on the collector's lists again; when the closed loop lets go of the timer, its cycle is
    collected."""
    loop = loop_factory()
    ref, messages = _abandon_waiter(loop, lambda fut, timer, task: None)
    task = ref()
    assert task is not None and gc.is_tracked(task) and gc.is_tracked(task.get_coro())
    del task
    loop.close()
    gc.collect()
    assert ref() is None
    assert messages == ["Task was destroyed but it is pending!"]


@pytest.mark.parametrize("loop_kind", ["ferroloop"], indirect=True)
def test_tasks_sleeping_on_timers_are_off_the_collector_lists(loop):
    """ferroloop only: a task waiting in asyncio.sleep on a running loop's timer, its
    coroutine, what that awaits through and the timer's future are untracked; a task waiting
    on a future no timer holds is not (nothing else would keep it from being garbage); all
    are tracked once they run again."""
    states = {}
    awaited = []

    async def inner():
        await asyncio.sleep(0.05)
        states["running"] = gc.is_tracked(awaited[0])

    async def sleeper():
        awaited.append(inner())
        await awaited[0]

    async def main():
        plain = loop.create_future()

        async def waits_on_plain():
            await plain

        fut, timer = _timer_future(loop)

        async def waits_on_timer():
            await fut

        task = loop.create_task(sleeper())
        other = loop.create_task(waits_on_plain())
        on_timer = loop.create_task(waits_on_timer())
        await asyncio.sleep(0)  # all three ran to their await
        states["sleeping"] = (
            gc.is_tracked(task),
            gc.is_tracked(task.get_coro()),
            gc.is_tracked(awaited[0]),
        )
        states["timer future"] = (gc.is_tracked(on_timer), gc.is_tracked(fut))
        states["plain"] = (gc.is_tracked(other), gc.is_tracked(plain))
        plain.set_result(None)
        fut.cancel()  # completes it: the wake-up is queued, the task still held by the loop
        await asyncio.gather(task, other)
        with pytest.raises(asyncio.CancelledError):
            await on_timer
        timer.cancel()
        states["done"] = (
            gc.is_tracked(task),
            gc.is_tracked(awaited[0]),
            gc.is_tracked(on_timer),
            gc.is_tracked(fut),
        )

    loop.run_until_complete(main())
    assert states == {
        "sleeping": (False, False, False),
        "timer future": (False, False),
        "plain": (True, True),
        "running": True,
        "done": (True, True, True, True),
    }


@pytest.mark.parametrize("loop_kind", ["ferroloop"], indirect=True)
def test_task_on_a_future_another_loops_timer_holds_is_not_parked(loop):
    """ferroloop only: a timer of another loop (not running) that would complete a future of
    this loop does not keep a task waiting on that future off the collector's lists: that
    loop, not this one, holds the timer, and it may be dropped."""
    other = ferroloop.new_event_loop()
    try:

        async def main():
            fut = loop.create_future()
            timer = other.call_later(3600, asyncio.futures._set_result_unless_cancelled, fut, None)

            async def waiter():
                await fut

            task = loop.create_task(waiter())
            await asyncio.sleep(0)
            tracked = gc.is_tracked(task)
            timer.cancel()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return tracked

        assert loop.run_until_complete(main()) is True
    finally:
        other.close()
