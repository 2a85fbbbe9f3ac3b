"""Example 10: structured concurrency with ``asyncio.TaskGroup`` (Python 3.11+).

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: the ``async with`` block waits for every child task; results are read from the
tasks afterwards; when a child fails, its siblings (and the block body) are cancelled and
the failure surfaces as an ExceptionGroup, handled here with ``except*``; several failures
are collected in one group; tasks can be added while the group is running.
Delays are spaced >= 20 ms apart so which child fails first is stable.
"""

import asyncio


async def step(name: str, delay: float, log: list[str], fail_with: Exception | None = None) -> str:
    try:
        await asyncio.sleep(delay)
    except asyncio.CancelledError:
        log.append(f"{name}: cancelled")
        raise
    if fail_with is not None:
        log.append(f"{name}: raising {type(fail_with).__name__}")
        raise fail_with
    log.append(f"{name}: done")
    return name.upper()


async def main() -> None:
    log: list[str] = []

    # 1. All children succeed: the block exits once all of them have finished.
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(step(n, d, log)) for n, d in [("a", 0.06), ("b", 0.02), ("c", 0.04)]
        ]
        log.append("body: all tasks created")
    print("all succeed:")
    print(f"  results: {[t.result() for t in tasks]}")
    print(f"  log: {log}")

    # 2. One child fails: siblings still running are cancelled; an ExceptionGroup is raised.
    log.clear()
    try:
        async with asyncio.TaskGroup() as tg:
            ok = tg.create_task(step("quick", 0.02, log))
            tg.create_task(step("faulty", 0.05, log, fail_with=ValueError("bad input 42")))
            slow = tg.create_task(step("slow", 0.5, log))
            await asyncio.sleep(1)  # the body is cancelled too when a child fails
            log.append("body: never reached")
    except* ValueError as eg:
        print("one child fails:")
        print(f"  caught {type(eg).__name__}: {eg}")
        for exc in eg.exceptions:
            print(f"    - {type(exc).__name__}: {exc}")
    print(f"  quick result: {ok.result()!r}, slow cancelled: {slow.cancelled()}")
    print(f"  log: {log}")

    # 3. Two children fail in the same loop iteration: both errors land in the group,
    #    and except* lets each kind of error be handled by its own clause.
    log.clear()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(step("first", 0, log, fail_with=KeyError("missing-key")))
            tg.create_task(step("second", 0, log, fail_with=ValueError("bad value")))
            tg.create_task(step("bystander", 0.5, log))
    except* KeyError as eg:
        print("two children fail:")
        print(f"  except* KeyError got {eg!r}")
    except* ValueError as eg:
        print(f"  except* ValueError got {eg!r}")
    print(f"  log: {log}")

    # 4. Catching the whole group with a plain except, and inspecting it.
    log.clear()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(step("x", 0.02, log, fail_with=RuntimeError("x broke")))
            tg.create_task(step("y", 0.5, log))
    except ExceptionGroup as eg:
        print("plain except ExceptionGroup:")
        print(f"  message: {eg.message!r}, sub-exceptions: {len(eg.exceptions)}")
        print(f"  first: {eg.exceptions[0]!r}")
    print(f"  log: {log}")

    # 5. Children may spawn more work in the same group while it is running.
    log.clear()

    async def spawner(tg: asyncio.TaskGroup) -> str:
        await asyncio.sleep(0.01)
        for i in range(3):
            tg.create_task(step(f"spawned{i}", 0.02 * (i + 1), log))
        return "spawner done"

    async with asyncio.TaskGroup() as tg:
        tg.create_task(spawner(tg))
    print("dynamic children:")
    print(f"  log: {log}")


if __name__ == "__main__":
    asyncio.run(main())
