"""Example 06: exceptions in ``asyncio.gather``.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: with return_exceptions=True, exceptions are returned in the result list in place
of values; with return_exceptions=False (the default) the first exception propagates to
the awaiting code while the other awaitables keep running (they are NOT cancelled);
cancelling the gather future cancels its children.
Delays are spaced >= 20 ms apart so the order of failures is stable.
"""

import asyncio


async def fetch(key: str, delay: float) -> str:
    await asyncio.sleep(delay)
    if key.startswith("bad"):
        raise ValueError(f"no such record: {key!r}")
    if key == "boom":
        raise ZeroDivisionError("division by zero while processing 'boom'")
    print(f"  fetched {key}")
    return f"record<{key}>"


def describe(item: object) -> str:
    if isinstance(item, BaseException):
        message = str(item)
        return f"{type(item).__name__}: {message}" if message else type(item).__name__
    return repr(item)


async def main() -> None:
    # 1. return_exceptions=True: every outcome lands in the result list, in input order.
    print("return_exceptions=True:")
    results = await asyncio.gather(
        fetch("alpha", 0.02),
        fetch("bad-beta", 0.04),
        fetch("gamma", 0.06),
        fetch("boom", 0.08),
        return_exceptions=True,
    )
    for i, item in enumerate(results):
        print(f"  result[{i}] = {describe(item)}")

    # 2. return_exceptions=False: the first failure (bad-one, 40 ms) is raised at once.
    print("return_exceptions=False:")
    slow = asyncio.create_task(fetch("slow-but-fine", 0.10))
    later_failure = asyncio.create_task(fetch("bad-two", 0.07))
    try:
        await asyncio.gather(fetch("quick", 0.02), fetch("bad-one", 0.04), later_failure, slow)
    except ValueError as exc:
        print(f"  caught {describe(exc)}")
    # The other awaitables were not cancelled by the failure; they run to completion.
    print(f"  slow task done yet? {slow.done()}")
    print(f"  slow task result: {await slow!r}")
    try:
        await later_failure
    except ValueError as exc:
        print(f"  the later failure is still there: {describe(exc)}")

    # 3. An exception type other than ValueError, caught via its base class.
    print("catching via a base class:")
    try:
        await asyncio.gather(fetch("boom", 0.01), fetch("delta", 0.03))
    except ArithmeticError as exc:
        print(f"  caught {describe(exc)} (an ArithmeticError: {isinstance(exc, ArithmeticError)})")
    await asyncio.sleep(0.05)  # let "delta" finish before moving on

    # 4. Cancelling the gather future cancels all of its children.
    print("cancelling a gather:")
    children = [asyncio.create_task(fetch(f"child{i}", 0.5)) for i in range(3)]
    group = asyncio.gather(*children)
    await asyncio.sleep(0.01)
    group.cancel()
    try:
        await group
    except asyncio.CancelledError:
        print("  awaiting the cancelled gather raised CancelledError")
    print(f"  children cancelled: {[c.cancelled() for c in children]}")

    # 5. With return_exceptions=True, a cancelled child shows up as a CancelledError value.
    print("a cancelled child with return_exceptions=True:")
    victim = asyncio.create_task(fetch("victim", 0.5))
    survivor = asyncio.create_task(fetch("survivor", 0.02))
    asyncio.get_running_loop().call_later(0.04, victim.cancel)
    results = await asyncio.gather(victim, survivor, return_exceptions=True)
    print(f"  results: {[describe(r) for r in results]}")


if __name__ == "__main__":
    asyncio.run(main())
