"""Example 09: recurring (periodic) work.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows two ways to run something periodically:
  * a task with a ``while True: ...; await asyncio.sleep(period)`` loop that ticks N times,
    signals an asyncio.Event, and is then cancelled from outside (with clean-up);
  * a callback that re-arms itself with loop.call_later, stopped by cancelling its
    TimerHandle.
The main coroutine waits on events rather than on guessed durations, so the number of
ticks printed is exact.
"""

import asyncio


async def ticker(period: float, stop_after: int, reached: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    count = 0
    next_tick = loop.time()
    try:
        while True:
            count += 1
            print(f"  tick {count}")
            if count == stop_after:
                reached.set()  # tell main() we are done; it will cancel us
            # Sleep until the next scheduled tick (drift-free: based on the start time).
            next_tick += period
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
    except asyncio.CancelledError:
        print(f"  ticker cancelled after {count} ticks, cleaning up")
        raise


def beep(loop: asyncio.AbstractEventLoop, state: dict, done: asyncio.Future) -> None:
    """A plain callback that schedules itself again until it has run `limit` times."""
    state["count"] += 1
    print(f"  beep {state['count']}")
    if state["count"] == state["limit"]:
        done.set_result(state["count"])
    # Re-arm. main() cancels the handle once it has seen enough beeps.
    state["handle"] = loop.call_later(state["period"], beep, loop, state, done)


async def main() -> None:
    loop = asyncio.get_running_loop()

    # 1. A periodic task, cancelled after exactly 5 ticks.
    print("periodic task (every 20 ms):")
    reached = asyncio.Event()
    task = asyncio.create_task(ticker(0.02, 5, reached))
    await reached.wait()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print(f"  task.cancelled() = {task.cancelled()}")

    # 2. A self re-arming call_later callback, stopped after exactly 4 beeps.
    print("call_later chain (every 20 ms):")
    done = loop.create_future()
    state = {"count": 0, "limit": 4, "period": 0.02, "handle": None}
    state["handle"] = loop.call_later(state["period"], beep, loop, state, done)
    beeps = await done
    state["handle"].cancel()  # the next beep was already scheduled; cancel it
    print(f"  stopped after {beeps} beeps, handle cancelled: {state['handle'].cancelled()}")
    await asyncio.sleep(0.05)  # long enough for another beep: none comes
    print(f"  beeps after waiting a little longer: {state['count']}")


if __name__ == "__main__":
    asyncio.run(main())
