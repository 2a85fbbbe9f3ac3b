"""Tasks in asyncio's task set (`asyncio.tasks._all_tasks`, what `asyncio.all_tasks()` reads).

Owns tests/test_task_registry.py: on both loops, a task is in the set from its creation until it
is freed, leaves it when freed (also while the set is being iterated, through the set's pending
removals), stays while a finalizer resurrects it, and subclasses behave the same. ferroloop
registers its Tasks without asyncio's Python frames (crates/py/src/task_registry.rs); these
tests hold it to asyncio's observable behaviour.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

REGISTRY = asyncio.tasks._all_tasks


async def _leaf():
    await asyncio.sleep(0)


async def _spawn(n, task_class=None):
    """Runs n tasks to completion and returns weak references to them."""
    loop = asyncio.get_running_loop()
    if task_class is None:
        tasks = [asyncio.create_task(_leaf()) for _ in range(n)]
    else:
        tasks = [task_class(_leaf(), loop=loop) for _ in range(n)]
    for t in tasks:
        await t
    return [weakref.ref(t) for t in tasks]


async def _flush():
    """A few loop turns, so whatever the loop still held from earlier turns is let go."""
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()


def _alive(refs):
    return sum(r() is not None for r in refs)


def test_task_in_all_tasks_until_freed(loop):
    async def main():
        await _flush()
        base = len(REGISTRY)
        tasks = [asyncio.create_task(_leaf()) for _ in range(7)]
        assert len(REGISTRY) == base + 7
        assert set(tasks) <= asyncio.all_tasks()
        for t in tasks:
            await t
        assert not set(tasks) & asyncio.all_tasks()  # done tasks are filtered out...
        assert len(REGISTRY) == base + 7  # ...but stay in the set while alive
        refs = [weakref.ref(t) for t in tasks]
        del tasks, t
        await _flush()
        assert _alive(refs) == 0
        return len(REGISTRY) - base, len(REGISTRY.data) - base

    assert loop.run_until_complete(main()) == (0, 0)


def test_freed_while_iterating_goes_to_pending_removals(loop):
    async def main():
        await _flush()
        base_len, base_data = len(REGISTRY), len(REGISTRY.data)
        base_pending = len(REGISTRY._pending_removals)
        it = iter(REGISTRY)
        next(it)  # the set is being iterated from here on
        refs = await _spawn(5)
        await _flush()
        assert _alive(refs) == 0
        during = (
            len(REGISTRY) - base_len,
            len(REGISTRY._pending_removals) - base_pending,
            len(REGISTRY.data) - base_data,
        )
        del it  # the iteration ends: its guard commits the removals
        gc.collect()
        after = (len(REGISTRY) - base_len, len(REGISTRY.data) - base_data)
        # A task created now commits what is pending first, as WeakSet.add does.
        it = iter(REGISTRY)
        next(it)
        refs = await _spawn(2)
        await _flush()
        pending = len(REGISTRY._pending_removals)
        it = None
        t = asyncio.create_task(_leaf())
        await t
        return during, after, pending, len(REGISTRY._pending_removals)

    during, after, pending, pending_after_add = loop.run_until_complete(main())
    assert during == (0, 5, 5)
    assert after == (0, 0)
    assert pending >= 2
    assert pending_after_add == 0


def test_task_subclass_registered_and_removed(loop):
    base_class = type(loop.create_task(asyncio.sleep(0)))
    loop.run_until_complete(asyncio.sleep(0))

    class MyTask(base_class):
        pass

    async def main():
        await _flush()
        base = len(REGISTRY)
        refs = await _spawn(4, MyTask)
        assert len(REGISTRY) >= base + 1  # the last one may still be held by the loop
        await _flush()
        return _alive(refs), len(REGISTRY) - base

    assert loop.run_until_complete(main()) == (0, 0)


def test_pending_task_destroyed_leaves_the_set(loop):
    messages = []
    loop.set_exception_handler(lambda lp, ctx: messages.append(ctx["message"]))

    async def main():
        await _flush()
        base = len(REGISTRY)
        never_set = loop.create_future()

        async def waits(fut):
            await fut

        task = asyncio.create_task(waits(never_set))
        await asyncio.sleep(0)  # the task now waits on the future
        assert len(REGISTRY) == base + 1
        ref = weakref.ref(task)
        del task, never_set  # the task and its future form a cycle only the collector frees
        await _flush()
        return ref() is None, len(REGISTRY) - base

    assert loop.run_until_complete(main()) == (True, 0)
    assert messages == ["Task was destroyed but it is pending!"]


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_task_resurrected_by_its_finalizer_stays_registered(loop):
    kept = []
    loop.set_exception_handler(lambda lp, ctx: kept.append(ctx["task"]))
    gc.collect()
    base = len(REGISTRY)

    async def forever():
        await asyncio.sleep(3600)

    task = loop.create_task(forever())  # scheduled, never run
    assert len(REGISTRY) == base + 1
    loop.close()  # drops the ready queue: the task is only referenced here
    ref = weakref.ref(task)
    del task  # freed by reference count; the handler keeps it alive
    resurrected = ref()
    assert resurrected is not None and kept == [resurrected]
    assert resurrected in set(REGISTRY)
    assert len(REGISTRY) == base + 1
    kept.clear()
    del resurrected  # freed for good this time (the finalizer ran once)
    assert ref() is None
    assert len(REGISTRY) == base


def test_registry_entry_is_not_tracked_by_the_collector():
    """ferroloop's registry entry for a Task is a weak reference without a callback: it holds
    no strong reference, so it is kept off the collector's lists (collections then walk three
    objects per pending task, not four). asyncio's entry carries WeakSet's `_remove` callback
    and is tracked, so this is ferroloop's alone; the behaviour tests above hold both loops to
    the same registry contents."""
    import ferroloop

    loop = ferroloop.new_event_loop()
    try:

        async def main():
            task = asyncio.create_task(_leaf())
            entries = [r for r in REGISTRY.data if r() is task]
            shared = weakref.ref(task)  # the same callback-less reference, shared
            await task
            return entries, shared, task

        entries, shared, task = loop.run_until_complete(main())
        assert len(entries) == 1
        assert not gc.is_tracked(entries[0])
        assert shared is entries[0] and shared() is task
    finally:
        loop.close()


def test_registry_set_is_off_the_collector_lists_and_asyncio_tasks_still_collected():
    """The registry's set holds only weak references (ferroloop's without a callback,
    asyncio's with WeakSet's `_remove`), so it cannot be part of a cycle: once ferroloop
    registers natively, the set is untracked and full collections do not walk it entry by
    entry. asyncio's own tasks, registered in the same set, are still listed by all_tasks()
    and their cycles still collected."""
    import ferroloop

    fl = ferroloop.new_event_loop()
    try:
        fl.run_until_complete(_leaf())
    finally:
        fl.close()
    assert not gc.is_tracked(REGISTRY.data)

    aio = asyncio.new_event_loop()
    try:

        async def cyclic():
            me = asyncio.current_task()
            me.cycle = me  # task -> itself, through its dict
            await asyncio.sleep(0)

        async def main():
            task = asyncio.create_task(cyclic())
            assert task in asyncio.all_tasks()
            await task
            return weakref.ref(task)

        ref = aio.run_until_complete(main())
    finally:
        aio.close()
    gc.collect()
    assert ref() is None
    assert not any(r() is not None and r().get_loop() is aio for r in REGISTRY.data)
