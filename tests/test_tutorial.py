"""Behaviours from the asyncio core-concepts tutorial, the same on both loops.

Delays are scaled down (the tutorial's seconds become milliseconds); orderings come from
clearly separated deadlines, never from racing equal ones.
"""

from __future__ import annotations

import asyncio

import pytest

MS = 0.01  # the tutorial's "1 second"
LONG = 10.0  # never reached: whatever sleeps this long is cancelled or timed out first


async def sleep_until(when):
    """Sleep until an absolute loop time: deadlines then order completions exactly, however
    late each task starts on a loaded machine."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_at(when, fut.set_result, None)
    await fut


def run(loop, coro):
    return loop.run_until_complete(coro)


def test_two_tasks_in_parallel(loop):
    log = []

    start = []

    async def task(name, delay):
        log.append(f"{name} starting...")
        await sleep_until(start[0] + delay * MS)
        log.append(f"{name} finished!")

    async def main():
        start.append(asyncio.get_running_loop().time())
        task1 = asyncio.create_task(task("Task 1", 2))
        task2 = asyncio.create_task(task("Task 2", 1))
        await task1
        await task2

    run(loop, main())
    assert log == [
        "Task 1 starting...",
        "Task 2 starting...",
        "Task 2 finished!",
        "Task 1 finished!",
    ]


def test_gather_keeps_argument_order(loop):
    finished = []

    start = []

    async def task(name, delay):
        await sleep_until(start[0] + delay * MS)
        finished.append(name)
        return f"{name} completed"

    async def main():
        start.append(asyncio.get_running_loop().time())
        return await asyncio.gather(task("Task 1", 2), task("Task 2", 1), task("Task 3", 3))

    assert run(loop, main()) == ["Task 1 completed", "Task 2 completed", "Task 3 completed"]
    assert finished == ["Task 2", "Task 1", "Task 3"]


def test_gather_return_exceptions(loop):
    async def risky_task():
        await asyncio.sleep(MS)
        raise ValueError("Something went wrong!")

    async def safe_task():
        await asyncio.sleep(MS)
        return "All good!"

    async def main():
        return await asyncio.gather(risky_task(), safe_task(), return_exceptions=True)

    results = run(loop, main())
    assert [repr(r) for r in results] == ["ValueError('Something went wrong!')", "'All good!'"]


def test_gather_raises_first_exception(loop):
    async def risky_task():
        await asyncio.sleep(0)
        raise ValueError("Something went wrong!")

    async def slow_task():
        await asyncio.sleep(MS)
        return "done later"

    async def main():
        slow = asyncio.ensure_future(slow_task())
        try:
            await asyncio.gather(risky_task(), slow)
        except ValueError as exc:
            caught = str(exc)
        # gather() does not cancel the others: the slow task still finishes.
        return caught, await slow

    assert run(loop, main()) == ("Something went wrong!", "done later")


def test_wait_all(loop):
    async def task(name, delay):
        await asyncio.sleep(delay * MS)
        return name

    async def main():
        tasks = {asyncio.create_task(task("Task 1", 2)), asyncio.create_task(task("Task 2", 1))}
        done, pending = await asyncio.wait(tasks)
        return sorted(t.result() for t in done), pending

    assert run(loop, main()) == (["Task 1", "Task 2"], set())


def test_wait_first_completed(loop):
    async def task(name, delay):
        await asyncio.sleep(delay * MS)
        return name

    async def main():
        fast = asyncio.create_task(task("fast", 1))
        slow = asyncio.create_task(task("slow", LONG / MS))
        done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        result = ([t.result() for t in done], [t is slow for t in pending])
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        return result, slow.cancelled()

    assert run(loop, main()) == ((["fast"], [True]), True)


def test_wait_first_exception(loop):
    async def ok():
        await asyncio.sleep(LONG)

    async def bad():
        await asyncio.sleep(MS)
        raise RuntimeError("bad")

    async def main():
        t_ok, t_bad = asyncio.create_task(ok()), asyncio.create_task(bad())
        done, pending = await asyncio.wait({t_ok, t_bad}, return_when=asyncio.FIRST_EXCEPTION)
        result = (done == {t_bad}, pending == {t_ok}, str(t_bad.exception()))
        t_ok.cancel()
        await asyncio.gather(t_ok, return_exceptions=True)
        return result

    assert run(loop, main()) == (True, True, "bad")


def test_wait_timeout(loop):
    async def main():
        slow = asyncio.create_task(asyncio.sleep(LONG, "slow"))
        fast = asyncio.create_task(asyncio.sleep(0, "fast"))
        done, pending = await asyncio.wait({slow, fast}, timeout=0.2)
        result = ([t.result() for t in done], pending == {slow}, slow.done())
        slow.cancel()
        await asyncio.gather(slow, return_exceptions=True)
        return result

    assert run(loop, main()) == (["fast"], True, False)


def test_wait_for_timeout(loop):
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        try:
            await asyncio.wait_for(slow(), timeout=MS)
        except TimeoutError as exc:
            return type(exc).__name__
        return "no timeout"

    assert run(loop, main()) == "TimeoutError"
    assert cancelled == [True]


def test_wait_for_in_time(loop):
    async def main():
        return await asyncio.wait_for(asyncio.sleep(0, "value"), timeout=LONG)

    assert run(loop, main()) == "value"


def test_asyncio_timeout(loop):
    async def main():
        log = []
        try:
            async with asyncio.timeout(MS) as cm:
                await asyncio.sleep(LONG)
        except TimeoutError:
            log.append(("timed out", cm.expired()))
        async with asyncio.timeout(LONG) as cm2:
            await asyncio.sleep(0)
        log.append(("in time", cm2.expired()))
        return log

    assert run(loop, main()) == [("timed out", True), ("in time", False)]


def test_asyncio_timeout_reschedule(loop):
    log = []

    async def main():
        async with asyncio.timeout(None) as cm:
            log.append(cm.when())
            cm.reschedule(asyncio.get_running_loop().time() + MS)
            try:
                await asyncio.sleep(LONG)
            except asyncio.CancelledError:
                log.append("cancelled inside")
                raise
        log.append("not reached")

    with pytest.raises(TimeoutError):
        run(loop, main())
    assert log == [None, "cancelled inside"]


def test_task_group_results(loop):
    async def task(name, delay):
        await asyncio.sleep(delay * MS)
        return name

    async def main():
        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(task("a", 2))
            t2 = tg.create_task(task("b", 1))
        return t1.result(), t2.result()

    assert run(loop, main()) == ("a", "b")


def test_task_group_error_cancels_siblings(loop):
    cancelled = []

    async def sibling():
        try:
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            cancelled.append("sibling")
            raise

    async def failing():
        await asyncio.sleep(MS)
        raise ValueError("in group")

    async def main():
        result = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sibling())
                tg.create_task(failing())
        except* ValueError as eg:
            result = [str(e) for e in eg.exceptions], type(eg).__name__
        return result

    assert run(loop, main()) == (["in group"], "ExceptionGroup")
    assert cancelled == ["sibling"]


def test_cancel_task(loop):
    async def worker(log):
        try:
            await asyncio.sleep(LONG)
        except asyncio.CancelledError:
            log.append("cleanup")
            raise

    async def main():
        log = []
        t = asyncio.create_task(worker(log))
        await asyncio.sleep(0)
        t.cancel("stop please")
        try:
            await t
        except asyncio.CancelledError as exc:
            log.append(("cancelled", exc.args))
        return log, t.cancelled()

    assert run(loop, main()) == (["cleanup", ("cancelled", ("stop please",))], True)


def test_future_low_level(loop):
    async def main():
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(MS, fut.set_result, "from future")
        return repr(fut).startswith("<Future pending"), await fut

    assert run(loop, main()) == (True, "from future")


def test_sleep_is_a_coroutine_not_future(loop):
    coro = asyncio.sleep(0)
    try:
        assert asyncio.iscoroutine(coro)
        assert not asyncio.isfuture(coro)
    finally:
        coro.close()


def test_as_completed_order(loop):
    start = []

    async def task(name, delay):
        await sleep_until(start[0] + delay * MS)
        return name

    async def main():
        start.append(asyncio.get_running_loop().time())
        coros = [task("c", 3), task("a", 1), task("b", 2)]
        return [await f for f in asyncio.as_completed(coros)]

    assert run(loop, main()) == ["a", "b", "c"]


def test_queue_producer_consumer(loop):
    async def main():
        q = asyncio.Queue(maxsize=2)
        got = []

        async def producer():
            for i in range(6):
                await q.put(i)
            await q.put(None)

        async def consumer():
            while (item := await q.get()) is not None:
                got.append(item)
                await asyncio.sleep(0)

        await asyncio.gather(producer(), consumer())
        return got

    assert run(loop, main()) == [0, 1, 2, 3, 4, 5]
