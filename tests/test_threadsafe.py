"""Cross-thread wake-ups: call_soon_threadsafe, run_coroutine_threadsafe, asyncio.to_thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest


def run_loop_with_threads(loop, *threads):
    """Start the threads, run the loop until one of them stops it (a 20 s safety timer stops
    it otherwise), then join them."""
    for t in threads:
        t.start()
    safety = loop.call_later(20, loop.stop)
    loop.run_forever()
    safety.cancel()
    for t in threads:
        t.join()


def test_call_soon_threadsafe_wakes_idle_loop(loop):
    woke = []

    def from_thread():
        time.sleep(0.02)
        loop.call_soon_threadsafe(lambda: (woke.append(loop.time()), loop.stop()))

    # The only thing pending is a 10 s timer: the loop sleeps in the poller until woken.
    long_timer = loop.call_later(10, loop.stop)
    thread = threading.Thread(target=from_thread)
    t0 = time.monotonic()
    thread.start()
    loop.run_forever()
    elapsed = time.monotonic() - t0
    thread.join()
    long_timer.cancel()
    assert len(woke) == 1
    assert elapsed < 5.0


def test_call_soon_threadsafe_wakes_loop_with_nothing_pending(loop):
    got = []

    def from_thread():
        time.sleep(0.02)
        loop.call_soon_threadsafe(got.append, threading.get_ident())
        loop.call_soon_threadsafe(loop.stop)

    safety = threading.Timer(20, lambda: loop.call_soon_threadsafe(loop.stop))
    safety.start()
    thread = threading.Thread(target=from_thread)
    thread.start()
    try:
        loop.run_forever()
    finally:
        safety.cancel()
        thread.join()
    assert got == [thread.ident]


def test_call_soon_threadsafe_many_threads_order_per_thread(loop):
    got = []
    n_threads, per_thread = 4, 200
    done = threading.Barrier(n_threads + 1)

    def worker(k):
        for i in range(per_thread):
            loop.call_soon_threadsafe(got.append, (k, i))
        done.wait()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]

    def finish():
        done.wait()
        loop.call_soon_threadsafe(loop.stop)

    run_loop_with_threads(loop, *threads, threading.Thread(target=finish))
    # One more iteration for anything queued with the stop.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(got) == n_threads * per_thread
    for k in range(n_threads):
        assert [i for kk, i in got if kk == k] == list(range(per_thread))


def test_call_soon_threadsafe_context_and_handle(loop):
    import contextvars

    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.Context()
    ctx.run(var.set, "from-ctx")
    seen = []
    handle = []

    def from_thread():
        handle.append(
            loop.call_soon_threadsafe(lambda: (seen.append(var.get()), loop.stop()), context=ctx)
        )

    run_loop_with_threads(loop, threading.Thread(target=from_thread))
    assert seen == ["from-ctx"]
    assert type(handle[0]).__name__ == "Handle"


def test_cancelled_threadsafe_handle_not_run(loop):
    ran = []
    h = loop.call_soon_threadsafe(ran.append, 1)
    h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == []


def test_run_coroutine_threadsafe(loop):
    async def compute(x):
        await asyncio.sleep(0.001)
        return x * 3

    async def fail():
        await asyncio.sleep(0)
        raise KeyError("bad")

    results = []

    def from_thread():
        try:
            results.append(asyncio.run_coroutine_threadsafe(compute(14), loop).result(10))
            fut = asyncio.run_coroutine_threadsafe(fail(), loop)
            try:
                fut.result(10)
            except KeyError as exc:
                results.append(("KeyError", exc.args))
        finally:
            loop.call_soon_threadsafe(loop.stop)

    run_loop_with_threads(loop, threading.Thread(target=from_thread))
    assert results == [42, ("KeyError", ("bad",))]


def test_run_coroutine_threadsafe_cancel_from_thread(loop):
    started = threading.Event()
    outcome = []

    async def forever():
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    def from_thread():
        fut = asyncio.run_coroutine_threadsafe(forever(), loop)
        started.wait(10)
        fut.cancel()
        try:
            fut.result(10)
        except concurrent.futures.CancelledError:
            outcome.append("future-cancelled")
        loop.call_soon_threadsafe(loop.stop)

    run_loop_with_threads(loop, threading.Thread(target=from_thread))
    loop.run_until_complete(asyncio.sleep(0))
    assert sorted(outcome) == ["cancelled", "future-cancelled"]


def test_to_thread(loop):
    main_ident = threading.get_ident()

    def blocking(a, *, b):
        time.sleep(0.01)
        return a + b, threading.get_ident() != main_ident

    def raising():
        raise ValueError("in thread")

    async def main():
        r = await asyncio.to_thread(blocking, 1, b=2)
        try:
            await asyncio.to_thread(raising)
        except ValueError as exc:
            return r, str(exc)

    assert loop.run_until_complete(main()) == ((3, True), "in thread")
    loop.run_until_complete(loop.shutdown_default_executor())


def test_to_thread_propagates_context(loop):
    import contextvars

    var = contextvars.ContextVar("var", default="default")

    async def main():
        var.set("task-value")
        return await asyncio.to_thread(var.get)

    assert loop.run_until_complete(main()) == "task-value"
    loop.run_until_complete(loop.shutdown_default_executor())


def test_concurrent_to_thread_gather(loop):
    barrier = threading.Barrier(3, timeout=10)

    def meet(i):
        barrier.wait()  # only passes if all three run at once
        return i

    async def main():
        return await asyncio.gather(*(asyncio.to_thread(meet, i) for i in range(3)))

    assert loop.run_until_complete(main()) == [0, 1, 2]
    loop.run_until_complete(loop.shutdown_default_executor())


def test_call_soon_threadsafe_after_close(loop):
    loop.close()
    errors = []

    def from_thread():
        try:
            loop.call_soon_threadsafe(print)
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=from_thread)
    t.start()
    t.join()
    assert errors == ["Event loop is closed"]


@pytest.mark.parametrize("n", [1000])
def test_threadsafe_stress_no_lost_wakeups(loop, n):
    """Each call from the thread waits for the loop to run the previous one: a lost wake-up
    would stall until the 20 s safety timer (and fail the count)."""
    count = [0]
    step = threading.Semaphore(0)

    def bump():
        count[0] += 1
        step.release()

    def from_thread():
        for _ in range(n):
            loop.call_soon_threadsafe(bump)
            if not step.acquire(timeout=10):
                break
        loop.call_soon_threadsafe(loop.stop)

    t0 = time.monotonic()
    run_loop_with_threads(loop, threading.Thread(target=from_thread))
    assert count[0] == n
    assert time.monotonic() - t0 < 15
