"""Example 04: ``asyncio.gather`` keeps results in input order.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: gather runs awaitables concurrently; the result list follows the order the
awaitables were passed in, even though here they finish in the reverse order; gather
accepts coroutines and tasks mixed; gather of nothing returns an empty list; gather
itself returns a future that can be awaited later.
Delays are spaced >= 20 ms apart so the finishing order is stable.
"""

import asyncio

finish_order: list[str] = []


async def countdown(label: str, delay: float) -> str:
    await asyncio.sleep(delay)
    finish_order.append(label)
    print(f"  {label} finished")
    return label.upper()


async def main() -> None:
    # Passed in as first, second, third, fourth; they complete fourth, third, second, first.
    print("gather of four coroutines:")
    results = await asyncio.gather(
        countdown("first", 0.08),
        countdown("second", 0.06),
        countdown("third", 0.04),
        countdown("fourth", 0.02),
    )
    print(f"finish order:  {finish_order}")
    print(f"result order:  {results}")

    # Tasks and coroutines may be mixed; the task keeps running inside gather.
    finish_order.clear()
    print("gather of a task and coroutines:")
    task = asyncio.create_task(countdown("task", 0.05))
    results = await asyncio.gather(countdown("coro-slow", 0.09), task, countdown("coro-fast", 0.01))
    print(f"finish order:  {finish_order}")
    print(f"result order:  {results}")

    # Unpacking a list of awaitables keeps their order too.
    finish_order.clear()
    print("gather of a generated list:")
    labels = [f"job{i}" for i in range(4)]
    results = await asyncio.gather(
        *(countdown(lbl, 0.02 * (4 - i)) for i, lbl in enumerate(labels))
    )
    print(f"finish order:  {finish_order}")
    print(f"result order:  {results}")

    # gather() with no awaitables completes immediately with an empty list.
    print(f"empty gather: {await asyncio.gather()}")

    # gather returns a future right away; it can be awaited later.
    pending = asyncio.gather(countdown("later-a", 0.03), countdown("later-b", 0.01))
    print(f"gather returned a future: {asyncio.isfuture(pending)}, done={pending.done()}")
    print(f"awaited later: {await pending}, done={pending.done()}")


if __name__ == "__main__":
    asyncio.run(main())
