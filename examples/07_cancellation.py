"""Example 07: cancelling tasks.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: task.cancel() raises CancelledError inside the task at its current await; the
task can run clean-up code (try/finally, except CancelledError) and should re-raise;
a cancel message travels with the CancelledError; cancelled() / done() / cancelling();
cancel() on a finished task returns False; a task cancelled before it ever ran never
executes its body; a task that swallows the cancellation is not cancelled();
asyncio.shield protects an inner task from an outer cancellation.
"""

import asyncio


async def worker(name: str, log: list[str]) -> str:
    log.append(f"{name} started")
    try:
        await asyncio.sleep(10)  # far longer than the example runs
        return "finished normally"
    except asyncio.CancelledError as exc:
        log.append(f"{name} got CancelledError{exc.args}")
        raise  # re-raise: the task is then marked as cancelled
    finally:
        log.append(f"{name} cleaned up")


async def stubborn(log: list[str]) -> str:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        log.append("stubborn swallowed the cancellation")
    return "I refuse to be cancelled"


async def main() -> None:
    log: list[str] = []

    # 1. Cancel a running task, with a message.
    task = asyncio.create_task(worker("w1", log), name="w1")
    await asyncio.sleep(0.01)  # let it start and block in its sleep
    print(f"cancel() on a pending task returns {task.cancel('shutting down')}")
    print(f"right after cancel(): done={task.done()} cancelling={task.cancelling()}")
    try:
        await task
    except asyncio.CancelledError as exc:
        print(f"awaiting it raised CancelledError with args {exc.args}")
    print(f"after it finished: done={task.done()} cancelled={task.cancelled()}")
    print(f"log: {log}")
    print(f"cancel() on a finished task returns {task.cancel()}")

    # 2. Cancelled before it ever ran: its body never executes.
    log.clear()
    task = asyncio.create_task(worker("w2", log))
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print(f"w2 cancelled before starting: cancelled={task.cancelled()} log={log}")

    # 3. A task that catches CancelledError and returns normally is *not* cancelled.
    log.clear()
    task = asyncio.create_task(stubborn(log))
    await asyncio.sleep(0.01)
    task.cancel()
    result = await task
    print(f"stubborn: result={result!r} cancelled={task.cancelled()} log={log}")

    # 4. Inspecting a cancelled task from the outside without awaiting it.
    log.clear()
    task = asyncio.create_task(worker("w3", log))
    await asyncio.sleep(0.01)
    task.cancel("no longer needed")
    await asyncio.sleep(0.01)  # give it a chance to process the cancellation
    print(f"w3: done={task.done()} cancelled={task.cancelled()} log={log}")
    try:
        task.result()
    except asyncio.CancelledError as exc:
        print(f"w3.result() raised CancelledError with args {exc.args}")

    # 5. asyncio.shield: cancelling the outer await leaves the inner task running.
    log.clear()

    async def important() -> str:
        await asyncio.sleep(0.05)
        log.append("important work completed")
        return "saved"

    inner = asyncio.create_task(important())

    async def caller() -> str:
        return await asyncio.shield(inner)

    outer = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    outer.cancel()
    try:
        await outer
    except asyncio.CancelledError:
        print(f"shield: outer cancelled={outer.cancelled()}, inner cancelled={inner.cancelled()}")
    print(f"shield: inner result={await inner!r} log={log}")

    # 6. CancelledError is a BaseException, so "except Exception" does not swallow it.
    print(
        f"CancelledError is an Exception subclass: {issubclass(asyncio.CancelledError, Exception)}"
    )
    print(
        f"CancelledError is a BaseException subclass: "
        f"{issubclass(asyncio.CancelledError, BaseException)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
