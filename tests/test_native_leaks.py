"""Leak checks for the native Future/Task (ferroloop.new_event_loop(native_tasks=True)).

Owns tests/test_native_leaks.py: a million tasks leave memory flat; reference cycles through a
Task or Future are collected; finished tasks and futures are freed at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import weakref

import ferroloop
import pytest


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _nothing(i):
    return i


async def _batch(n):
    loop = asyncio.get_running_loop()
    total = 0
    for start in range(0, n, 1000):
        tasks = [loop.create_task(_nothing(i)) for i in range(start, start + 1000)]
        for t in tasks:
            total += await t
    return total


def test_million_tasks_memory_flat():
    loop = ferroloop.new_event_loop(native_tasks=True)
    try:
        assert type(loop.create_future()) is ferroloop.Future
        loop.run_until_complete(_batch(100_000))  # warm up allocator and caches
        gc.collect()
        before = rss_kib()
        for _ in range(9):
            assert loop.run_until_complete(_batch(100_000)) == sum(range(100_000))
        gc.collect()
        grown = rss_kib() - before
        # A leak of even 16 bytes per task would be ~14 MiB here.
        assert grown < 4096, f"RSS grew by {grown} KiB over 900k tasks"
    finally:
        loop.close()


class Holder:
    pass


def test_cycle_through_task_is_collected():
    loop = ferroloop.new_event_loop(native_tasks=True)
    try:

        async def keep(holder):
            holder.me = asyncio.current_task()  # task -> coro -> holder -> task
            return holder

        holder = Holder()
        task = loop.create_task(keep(holder))
        loop.run_until_complete(task)
        assert type(task) is ferroloop.Task
        task_ref, holder_ref = weakref.ref(task), weakref.ref(holder)
        del task, holder
        gc.collect()
        assert task_ref() is None
        assert holder_ref() is None
    finally:
        loop.close()


def test_cycle_through_future_result_is_collected():
    loop = ferroloop.new_event_loop(native_tasks=True)
    try:
        fut = loop.create_future()
        holder = Holder()
        holder.fut = fut
        fut.set_result(holder)  # future -> holder -> future
        fut.add_done_callback(lambda f: None)
        loop.run_until_complete(asyncio.sleep(0))
        ref = weakref.ref(fut)
        del fut, holder
        gc.collect()
        assert ref() is None
    finally:
        loop.close()


@pytest.mark.parametrize("kind", ["future", "task", "future-subclass"])
def test_cycle_through_instance_dict_is_collected(kind):
    """The collector reaches a native future's instance __dict__ (the one part of asyncio's C
    base a ferroloop Future or Task uses) whether or not the C part's other fields are set."""
    loop = ferroloop.new_event_loop(native_tasks=True)
    try:

        class Sub(ferroloop.Future):
            pass

        if kind == "future":
            fut = loop.create_future()
        elif kind == "future-subclass":
            fut = Sub(loop=loop)
        else:
            fut = loop.create_task(_nothing(0))
            loop.run_until_complete(fut)
        holder = Holder()
        holder.fut = fut
        fut.holder = holder  # future -> __dict__ -> holder -> future
        refs = [weakref.ref(fut), weakref.ref(holder)]
        del fut, holder
        gc.collect()
        assert [r() for r in refs] == [None, None]
    finally:
        loop.close()


def test_cycle_through_c_base_fields_is_collected():
    """asyncio's C Future.__init__ applied to a ferroloop Future fills the C part; the
    collector then traverses it too (a cycle through its loop field is collected)."""
    loop = ferroloop.new_event_loop(native_tasks=True)
    try:

        class FakeLoop:
            def get_debug(self):
                return False

        fake = FakeLoop()
        fut = loop.create_future()
        asyncio.Future.__init__(fut, loop=fake)  # the C base's init: sets its fut_loop
        fake.fut = fut  # future -> (C part) fake loop -> future
        refs = [weakref.ref(fut), weakref.ref(fake)]
        del fut, fake
        gc.collect()
        assert [r() for r in refs] == [None, None]
    finally:
        loop.close()


def test_pending_task_destroyed_is_reported_and_freed():
    loop = ferroloop.new_event_loop(native_tasks=True)
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx["message"]))
    try:

        async def wait_forever():
            await loop.create_future()

        task = loop.create_task(wait_forever())
        loop.run_until_complete(asyncio.sleep(0))
        ref = weakref.ref(task)
        del task
        gc.collect()
        assert ref() is None
        assert seen == ["Task was destroyed but it is pending!"]
    finally:
        loop.close()


uncounted_allocator = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="the uncounted allocator is used on Python 3.11 only"
)


@uncounted_allocator
def test_queued_handles_do_not_count_toward_collections():
    """A call_soon/call_later handle is a GC object that the collector's allocation count
    skips (as objects from CPython's own free lists do): the count grows by the context copy
    each call makes, not by the handle. A kept handle is still collectable (test_leaks)."""
    loop = ferroloop.new_event_loop()
    n = 500
    try:
        gc.disable()
        # What one call_soon adds on its own, the handle aside: a context copy.
        before = gc.get_count()[0]
        contexts = [contextvars.copy_context() for _ in range(n)]
        per_context = (gc.get_count()[0] - before) / n
        del contexts
        before = gc.get_count()[0]
        handles = [loop.call_soon(print) for _ in range(n)]
        timers = [loop.call_later(3600, print) for _ in range(n)]
        grown = gc.get_count()[0] - before
        assert grown <= 2 * n * per_context + 5, (grown, per_context)
        assert not any(gc.is_tracked(h) for h in handles + timers)
        for h in handles + timers:
            h.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        gc.enable()
        loop.close()


def test_waiting_timers_argument_tuples_are_not_walked_by_the_collector():
    """The argument tuple of a waiting call_later/call_at handle is not tracked (the timer owns
    it alone; asyncio's is tracked): collections do not walk it, and no tracked tuple refers
    to the argument. The handle's own traverse reports the argument instead (test_leaks:
    cycles through a handle's arguments are collected). call_soon's tuple stays tracked, and
    the shared empty tuple is never tracked."""
    loop = ferroloop.new_event_loop()
    try:
        arg = object.__new__(type("Arg", (), {}))
        soon = object.__new__(type("Soon", (), {}))
        handles = [
            loop.call_later(3600, id, arg),
            loop.call_at(loop.time() + 3600, print, arg, 2),
            loop.call_soon(id, soon),
            loop.call_soon(dict),
            loop.call_later(0, dict),
        ]
        gc.collect()
        assert not [r for r in gc.get_referrers(arg) if type(r) is tuple]
        assert [r for r in gc.get_referrers(soon) if type(r) is tuple]
        loop.run_until_complete(asyncio.sleep(0.001))  # the last three ran
        assert not gc.is_tracked(())
        for h in handles:
            h.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()


@uncounted_allocator
def test_futures_and_tasks_do_not_count_toward_collections_but_are_tracked():
    """ferroloop's Future and Task are allocated like the handles above (not counted toward
    the collector's threshold) but tracked from the start: a cycle through one is collected
    (test_cycle_through_task_is_collected and the leak tests of tests/test_leaks.py)."""
    loop = ferroloop.new_event_loop()
    n = 500
    try:
        gc.disable()
        before = gc.get_count()[0]
        futures = [loop.create_future() for _ in range(n)]
        grown_futures = gc.get_count()[0] - before
        assert all(gc.is_tracked(f) for f in futures)

        async def nothing():
            pass

        coros = [nothing() for _ in range(n)]
        before = gc.get_count()[0]
        tasks = [loop.create_task(c) for c in coros]
        grown_tasks = gc.get_count()[0] - before
        assert all(gc.is_tracked(t) for t in tasks)
        # Counted per task: its context copy and the weak reference registering it with
        # asyncio; not the Task itself.
        assert grown_futures <= 5, grown_futures
        assert grown_tasks <= 2 * n + 5, grown_tasks
        loop.run_until_complete(asyncio.gather(*tasks))
    finally:
        gc.enable()
        loop.close()


def test_native_sleep_timer_argument_tuple_is_not_walked_by_the_collector():
    """ferroloop.sleep gives its timer a new argument tuple, untracked like call_later's:
    while it waits, no tracked tuple refers to the result it will set (asyncio.sleep's tuple,
    made by call_later, is untracked the same way)."""
    loop = ferroloop.new_event_loop()
    seen = {}

    def tuples_referring_to(obj):
        return [r for r in gc.get_referrers(obj) if type(r) is tuple]

    async def main():
        for name, sleep in (("native", ferroloop.sleep), ("asyncio", asyncio.sleep)):
            result = object.__new__(type("Result", (), {}))
            sleeper = asyncio.ensure_future(sleep(3600, result))
            await asyncio.sleep(0)
            gc.collect()
            seen[name] = tuples_referring_to(result)
            sleeper.cancel()
            await asyncio.gather(sleeper, return_exceptions=True)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert seen == {"native": [], "asyncio": []}
