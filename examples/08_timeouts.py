"""Example 08: timeouts with ``asyncio.wait_for`` and ``asyncio.timeout``.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: wait_for returns the result when in time and raises TimeoutError (cancelling the
awaited work) when not; the asyncio.timeout() context manager (Python 3.11+) and its
expired() flag; asyncio.timeout(None) plus reschedule() to set a deadline later;
reschedule() to extend a running deadline; asyncio.timeout_at() with an absolute time.
Deadlines and work durations differ by >= 30 ms so the outcomes are stable.
"""

import asyncio


async def work(name: str, duration: float, log: list[str]) -> str:
    try:
        await asyncio.sleep(duration)
    except asyncio.CancelledError:
        log.append(f"{name} was cancelled")
        raise
    log.append(f"{name} completed")
    return f"{name} result"


async def main() -> None:
    loop = asyncio.get_running_loop()
    log: list[str] = []

    # 1. wait_for: in time -> the result comes back unchanged.
    result = await asyncio.wait_for(work("quick", 0.01, log), timeout=0.1)
    print(f"wait_for in time: {result!r} log={log}")

    # 2. wait_for: too slow -> TimeoutError, and the inner coroutine is cancelled.
    log.clear()
    try:
        await asyncio.wait_for(work("sluggish", 0.5, log), timeout=0.03)
    except TimeoutError as exc:
        # In 3.11 asyncio.TimeoutError is the builtin TimeoutError.
        print(
            f"wait_for too slow: {type(exc).__name__} "
            f"(is asyncio.TimeoutError: {asyncio.TimeoutError is TimeoutError}) log={log}"
        )

    # 3. wait_for on a task: the task itself is cancelled on timeout.
    log.clear()
    task = asyncio.create_task(work("task", 0.5, log))
    try:
        await asyncio.wait_for(task, timeout=0.03)
    except TimeoutError:
        print(f"wait_for on a task: task.cancelled()={task.cancelled()} log={log}")

    # 4. asyncio.timeout() context manager.
    log.clear()
    try:
        async with asyncio.timeout(0.03) as cm:
            await work("inside-timeout", 0.5, log)
    except TimeoutError:
        print(f"asyncio.timeout(0.03): TimeoutError, expired()={cm.expired()} log={log}")

    log.clear()
    async with asyncio.timeout(0.2) as cm:
        await work("fits", 0.01, log)
    print(f"asyncio.timeout(0.2): finished, expired()={cm.expired()} log={log}")

    # 5. asyncio.timeout(None): no deadline at first; reschedule() sets one later.
    log.clear()
    try:
        async with asyncio.timeout(None) as cm:
            print(f"timeout(None): when()={cm.when()}")
            cm.reschedule(loop.time() + 0.03)
            print(f"after reschedule: has a deadline: {cm.when() is not None}")
            await work("rescheduled", 0.5, log)
    except TimeoutError:
        print(f"timeout(None)+reschedule: TimeoutError, log={log}")

    # 6. reschedule() can push a deadline further out while the block is running.
    log.clear()
    async with asyncio.timeout(0.02) as cm:
        cm.reschedule(loop.time() + 0.2)  # extend: 20 ms -> 200 ms
        result = await work("extended", 0.06, log)
    print(f"extended deadline: {result!r} expired()={cm.expired()} log={log}")

    # 7. timeout_at() takes an absolute loop time instead of a delay.
    log.clear()
    try:
        async with asyncio.timeout_at(loop.time() + 0.03):
            await work("absolute", 0.5, log)
    except TimeoutError:
        print(f"timeout_at: TimeoutError, log={log}")

    # 8. Catching TimeoutError around each step lets a loop carry on with the next one.
    log.clear()
    outcomes = []
    for duration in (0.01, 0.2, 0.02):
        try:
            async with asyncio.timeout(0.08):
                outcomes.append(await work(f"step-{duration * 1000:.0f}ms", duration, log))
        except TimeoutError:
            outcomes.append("timed out")
    print(f"loop with per-step timeout: {outcomes}")
    print(f"  log={log}")


if __name__ == "__main__":
    asyncio.run(main())
