"""Example 01: the basics of ``async def`` and ``await``.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: defining coroutine functions, awaiting them one after another, getting return
values back, and awaiting nested coroutines. Output is fully deterministic.
"""

import asyncio


async def brew(drink: str, minutes: int) -> str:
    """Pretend to brew a drink; each "minute" is 5 ms of (non-blocking) sleeping."""
    print(f"  start brewing {drink}")
    await asyncio.sleep(minutes * 0.005)
    print(f"  {drink} is ready")
    return f"a cup of {drink}"


async def breakfast() -> list[str]:
    """A coroutine that awaits other coroutines, one after another (sequentially)."""
    cups = []
    for drink, minutes in [("coffee", 3), ("tea", 2), ("cocoa", 1)]:
        # ``await`` suspends breakfast() until brew() has finished and hands back its value.
        cups.append(await brew(drink, minutes))
    return cups


async def main() -> None:
    print("main: started")
    # Awaiting a coroutine runs it to completion and evaluates to its return value.
    cup = await brew("espresso", 1)
    print(f"main: got {cup!r}")

    # Sequential awaits: each brew starts only after the previous one has finished.
    print("main: making breakfast")
    cups = await breakfast()
    print(f"main: breakfast has {len(cups)} cups: {', '.join(cups)}")

    # asyncio.sleep(0) just yields control to the event loop once and returns None.
    result = await asyncio.sleep(0)
    print(f"main: asyncio.sleep(0) returned {result!r}")

    # asyncio.sleep can also hand back a value of your choice once the delay has passed.
    value = await asyncio.sleep(0.001, result="slept")
    print(f"main: asyncio.sleep(0.001, result='slept') returned {value!r}")
    print("main: done")


if __name__ == "__main__":
    # asyncio.run creates an event loop, runs main() to completion, then closes the loop.
    asyncio.run(main())
