"""Example 03: running coroutines concurrently with ``asyncio.create_task``.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: a task is scheduled as soon as it is created but only starts running when the
current coroutine yields to the event loop; several tasks interleave while they wait;
tasks have names, ``done()`` and ``result()``; awaiting a task gives its result.
Delays are spaced >= 20 ms apart so the printed order is stable even on a busy machine.
"""

import asyncio

events: list[str] = []


def log(message: str) -> None:
    events.append(message)
    print(message)


async def download(name: str, delay: float) -> str:
    log(f"{name}: started")
    await asyncio.sleep(delay)
    log(f"{name}: finished")
    return f"{name}.dat"


async def main() -> None:
    # Sequential awaiting, for comparison: the second download starts after the first ends.
    log("-- sequential --")
    await download("seq-a", 0.02)
    await download("seq-b", 0.01)

    # Concurrent: create all the tasks first, then await them.
    log("-- concurrent --")
    slow = asyncio.create_task(download("slow", 0.10), name="slow")
    medium = asyncio.create_task(download("medium", 0.06), name="medium")
    fast = asyncio.create_task(download("fast", 0.02), name="fast")
    tasks = [slow, medium, fast]

    # Nothing has started yet: main() has not yielded to the event loop since create_task.
    log(f"created tasks {[t.get_name() for t in tasks]}, none started yet")
    log(f"done flags: {[t.done() for t in tasks]}")

    # Yield once: every task now runs up to its first await (in creation order).
    await asyncio.sleep(0)
    log("main: after yielding once, all three are running")

    # Awaiting the slow task first does not block the others: they finish in the meantime.
    result = await slow
    log(f"main: await slow -> {result!r}")
    log(f"done flags: {[t.done() for t in tasks]}")
    log(f"results: {[t.result() for t in tasks]}")

    # The concurrent downloads all started before any of them finished.
    starts = [events.index(f"{t.get_name()}: started") for t in tasks]
    ends = [events.index(f"{t.get_name()}: finished") for t in tasks]
    log(f"all started before the first finished: {max(starts) < min(ends)}")


if __name__ == "__main__":
    asyncio.run(main())
