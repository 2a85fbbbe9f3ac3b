"""Example 02: coroutine objects.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: calling an ``async def`` function does not run it but returns a coroutine object;
``inspect`` can tell coroutine functions and objects apart; awaiting the object runs it;
a coroutine can only be awaited once; a coroutine you decide not to run should be closed
explicitly so that Python does not warn "coroutine ... was never awaited".
"""

import asyncio
import inspect

calls: list[str] = []


async def add(a: int, b: int) -> int:
    calls.append(f"add({a}, {b})")
    await asyncio.sleep(0.001)
    return a + b


async def main() -> None:
    # The function itself is a "coroutine function"...
    print(f"inspect.iscoroutinefunction(add) = {inspect.iscoroutinefunction(add)}")

    # ...and calling it only creates a coroutine object: no code in its body has run yet.
    coro = add(2, 3)
    print(f"type(add(2, 3)).__name__ = {type(coro).__name__}")
    print(f"inspect.iscoroutine(coro) = {inspect.iscoroutine(coro)}")
    print(f"asyncio.iscoroutine(coro) = {asyncio.iscoroutine(coro)}")
    print(f"inspect.isawaitable(coro) = {inspect.isawaitable(coro)}")
    print(f"state before await: {inspect.getcoroutinestate(coro)}")
    print(f"body calls so far: {calls}")

    # Awaiting the coroutine object actually runs the body and yields its return value.
    result = await coro
    print(f"await coro -> {result}")
    print(f"state after await: {inspect.getcoroutinestate(coro)}")
    print(f"body calls so far: {calls}")

    # A coroutine object is single-use: awaiting it a second time is an error.
    try:
        await coro
    except RuntimeError as exc:
        print(f"awaiting again -> RuntimeError: {exc}")

    # A coroutine we create but decide not to run: close() it, so no
    # "RuntimeWarning: coroutine 'add' was never awaited" is emitted when it is collected.
    unused = add(10, 20)
    print(f"unused state: {inspect.getcoroutinestate(unused)}")
    unused.close()
    print(f"unused state after close(): {inspect.getcoroutinestate(unused)}")
    print(f"body calls so far: {calls}")

    # Plain functions and their results are not coroutines.
    print(f"inspect.iscoroutinefunction(print) = {inspect.iscoroutinefunction(print)}")
    print(f"inspect.iscoroutine(42) = {inspect.iscoroutine(42)}")


if __name__ == "__main__":
    asyncio.run(main())
