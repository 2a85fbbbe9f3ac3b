"""ferroloop.TaskGroup (native asyncio.TaskGroup) against the oracle.

Owns tests/test_native_taskgroup.py.
1. CPython's own test_taskgroups (TestTaskGroup) with ferroloop.TaskGroup patched in through
   ferroloop.patch_asyncio(), on ferroloop's loop and on asyncio's.
2. Our own tests, each run with asyncio.TaskGroup and ferroloop.TaskGroup on both loops:
   what `_callbacks` shows, a subclass's own `_on_task_done`, cycles collected, patch/unpatch.
"""

from __future__ import annotations

import asyncio
import asyncio.taskgroups
import gc
import subprocess
import sys
import textwrap
import weakref

import ferroloop
import pytest
from test.test_asyncio import test_taskgroups


class _Patched:
    """asyncio.TaskGroup is ferroloop's during each test."""

    def setUp(self):
        ferroloop.patch_asyncio()
        self.addCleanup(ferroloop.unpatch_asyncio)
        super().setUp()


class _FerroPolicy:
    """IsolatedAsyncioTestCase makes its loop through the policy, before setUp."""

    @classmethod
    def setUpClass(cls):
        asyncio.set_event_loop_policy(ferroloop.EventLoopPolicy())
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        asyncio.set_event_loop_policy(None)


class TestFerroTaskGroup_FerroLoop(_Patched, _FerroPolicy, test_taskgroups.TestTaskGroup):
    pass


class TestFerroTaskGroup_AsyncioLoop(_Patched, test_taskgroups.TestTaskGroup):
    pass


GROUPS = {"asyncio": asyncio.taskgroups.TaskGroup, "ferroloop": ferroloop.TaskGroup}


@pytest.fixture(params=list(GROUPS))
def group_cls(request):
    return GROUPS[request.param]


def test_callbacks_show_the_bound_done_callback(loop, group_cls):
    async def main():
        async with group_cls() as tg:
            task = tg.create_task(asyncio.sleep(0))
            (callback, context), *_ = task._callbacks
            assert callback == tg._on_task_done
            assert callback.__self__ is tg
            assert context is not None
        return task.done(), task in tg._tasks, repr(tg)

    assert loop.run_until_complete(main()) == (True, False, "<TaskGroup entered>")


def test_subclass_on_task_done_is_called(loop, group_cls):
    seen = []

    class Group(group_cls):
        def _on_task_done(self, task):
            seen.append(task.result())
            super()._on_task_done(task)

    async def main():
        async with Group() as tg:
            tg.create_task(asyncio.sleep(0, "a"))
            tg.create_task(asyncio.sleep(0, "b"))

    loop.run_until_complete(main())
    assert sorted(seen) == ["a", "b"]


def test_errors_and_repr_while_failing(loop, group_cls):
    reprs = []

    async def boom():
        raise ZeroDivisionError

    async def main():
        async with group_cls() as tg:
            tg.create_task(boom())
            tg.create_task(asyncio.sleep(10))
            try:
                await asyncio.sleep(1)
            finally:
                reprs.append(repr(tg))

    with pytest.raises(ExceptionGroup) as info:
        loop.run_until_complete(main())
    assert [type(e) for e in info.value.exceptions] == [ZeroDivisionError]
    assert reprs == ["<TaskGroup tasks=1 errors=1 cancelling>"]


def test_group_cycle_is_collected(loop, group_cls):
    async def main():
        tg = group_cls()
        async with tg:
            tg.create_task(asyncio.sleep(0))
        return weakref.ref(tg)

    ref = loop.run_until_complete(main())
    gc.collect()
    assert ref() is None


def test_create_task_refusals_match(loop, group_cls):
    async def main():
        tg = group_cls()
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="has not been entered"):
            tg.create_task(coro)
        coro.close()
        async with tg:
            pass
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="is finished"):
            tg.create_task(coro)
        coro.close()
        with pytest.raises(RuntimeError, match="has already been entered"):
            async with tg:
                pass

    loop.run_until_complete(main())


def test_patch_and_unpatch():
    original = asyncio.TaskGroup
    ferroloop.patch_asyncio()
    try:
        assert asyncio.TaskGroup is ferroloop.TaskGroup
        assert asyncio.taskgroups.TaskGroup is ferroloop.TaskGroup
        assert asyncio.gather is ferroloop.gather
    finally:
        ferroloop.unpatch_asyncio()
    assert asyncio.TaskGroup is original
    assert asyncio.taskgroups.TaskGroup is original


def test_nested_groups_under_frequent_collections():
    """A collection can start while a TaskGroup is being made (its instance dict is set up
    after the object is tracked): the half-made object must be safe to visit. Run in a child
    process, since the failure was a crash."""
    script = textwrap.dedent(
        """
        import asyncio, gc, ferroloop
        gc.set_threshold(10)
        ferroloop.patch_asyncio()

        async def node(level):
            if level == 0:
                await asyncio.sleep(0)
                return
            async with asyncio.TaskGroup() as tg:
                for _ in range(6):
                    tg.create_task(node(level - 1))

        loop = ferroloop.new_event_loop()
        for _ in range(3):
            loop.run_until_complete(node(4))
        loop.close()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-2000:]
