"""Example 05: ``asyncio.wait`` with FIRST_COMPLETED, FIRST_EXCEPTION, timeouts.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: asyncio.wait returns two *sets* (done, pending) - printed here as sorted task
names so the output does not depend on set ordering; return_when=FIRST_COMPLETED;
a timeout returns whatever is done so far without cancelling the rest;
FIRST_EXCEPTION; ALL_COMPLETED (the default). In Python 3.11 asyncio.wait takes tasks
or futures (passing bare coroutines is deprecated/removed), so tasks are created first.
Delays are spaced >= 40 ms apart so which task is done at each point is stable.
"""

import asyncio


def names(tasks: set[asyncio.Task]) -> list[str]:
    """Sorted task names: a deterministic view of a set of tasks."""
    return sorted(t.get_name() for t in tasks)


def by_name(tasks: set[asyncio.Task]) -> list[asyncio.Task]:
    """The tasks themselves, sorted by name."""
    return sorted(tasks, key=lambda t: t.get_name())


async def job(delay: float, fail: bool = False) -> str:
    await asyncio.sleep(delay)
    if fail:
        raise LookupError(f"job failed after {delay * 1000:.0f} ms")
    return f"slept {delay * 1000:.0f} ms"


async def main() -> None:
    tasks = {
        asyncio.create_task(job(0.20), name="slow"),
        asyncio.create_task(job(0.02), name="fast"),
        asyncio.create_task(job(0.08), name="medium"),
    }

    # 1. Return as soon as any task has finished.
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    print(f"FIRST_COMPLETED: done={names(done)} pending={names(pending)}")
    for t in by_name(done):
        print(f"  {t.get_name()} -> {t.result()!r}")

    # 2. Wait at most 100 ms: medium (80 ms) finishes in time, slow (200 ms) does not.
    done, pending = await asyncio.wait(pending, timeout=0.10)
    print(f"timeout=0.1:     done={names(done)} pending={names(pending)}")
    # The timeout does not cancel what is still pending; it keeps running.
    print(f"  still pending tasks cancelled? {[t.cancelled() for t in pending]}")

    # 3. ALL_COMPLETED is the default: wait for everything that is left.
    done, pending = await asyncio.wait(pending)
    print(f"ALL_COMPLETED:   done={names(done)} pending={names(pending)}")
    print(f"  results: {[(t.get_name(), t.result()) for t in by_name(tasks)]}")

    # 4. FIRST_EXCEPTION: return when a task raises (or when all are done).
    tasks = {
        asyncio.create_task(job(0.02), name="ok-early"),
        asyncio.create_task(job(0.06, fail=True), name="broken"),
        asyncio.create_task(job(0.15), name="ok-late"),
    }
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    print(f"FIRST_EXCEPTION: done={names(done)} pending={names(pending)}")
    for t in by_name(done):
        exc = t.exception()
        outcome = f"raised {type(exc).__name__}: {exc}" if exc else f"returned {t.result()!r}"
        print(f"  {t.get_name()} {outcome}")

    # Tidy up: cancel what is left and wait until the cancellation has been processed.
    for t in pending:
        t.cancel()
    done, pending = await asyncio.wait(pending)
    print(f"after cancel:    done={names(done)} pending={names(pending)}")
    print(f"  cancelled: {[(t.get_name(), t.cancelled()) for t in by_name(done)]}")

    # 5. A timeout with nothing finished in time returns an empty done set.
    sleeper = asyncio.create_task(job(0.10), name="sleeper")
    done, pending = await asyncio.wait({sleeper}, timeout=0.02)
    print(f"early timeout:   done={names(done)} pending={names(pending)}")
    sleeper.cancel()
    try:
        await sleeper
    except asyncio.CancelledError:
        print(f"  sleeper cancelled: {sleeper.cancelled()}")


if __name__ == "__main__":
    asyncio.run(main())
