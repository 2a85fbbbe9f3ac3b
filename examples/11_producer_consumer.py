"""Example 11: producers and consumers connected by an ``asyncio.Queue``.

Owned by the examples suite (``examples/*.py``, run by ``scripts/run_examples.py``).
Shows: a bounded queue applies back-pressure (put() waits while the queue is full);
get() waits while it is empty; task_done() + join() tell when every item has been
processed; consumers are stopped either with a sentinel value or by cancellation;
put_nowait()/get_nowait() raise QueueFull/QueueEmpty; PriorityQueue and LifoQueue.
Section 1 has one producer and one consumer, so the interleaving is fixed by the
event loop's FIFO scheduling; section 2 uses several consumers and prints only
order-independent summaries.
"""

import asyncio

SENTINEL = None


async def producer(queue: asyncio.Queue, count: int, log: list[str]) -> None:
    for i in range(1, count + 1):
        item = f"item{i}"
        if queue.full():
            log.append(f"producer: queue full, waiting to put {item}")
        await queue.put(item)
        log.append(f"producer: put {item} (size now {queue.qsize()})")
    await queue.put(SENTINEL)
    log.append("producer: sent the stop sentinel")


async def consumer(queue: asyncio.Queue, log: list[str]) -> list[str]:
    handled = []
    while True:
        item = await queue.get()
        try:
            if item is SENTINEL:
                log.append("consumer: got the sentinel, stopping")
                return handled
            await asyncio.sleep(0.005)  # "process" the item
            handled.append(item)
            log.append(f"consumer: processed {item}")
        finally:
            queue.task_done()


async def worker(name: str, queue: asyncio.Queue, totals: dict[str, int]) -> None:
    while True:
        number = await queue.get()
        await asyncio.sleep(0.001 * (number % 3))
        totals[name] = totals.get(name, 0) + number * number
        queue.task_done()


async def main() -> None:
    # 1. One producer, one consumer, a queue with room for only two items.
    log: list[str] = []
    queue: asyncio.Queue = asyncio.Queue(maxsize=2)
    handled, _ = await asyncio.gather(consumer(queue, log), producer(queue, 5, log))
    print("bounded queue, one producer and one consumer:")
    for line in log:
        print(f"  {line}")
    print(f"  consumer handled {handled}")

    # 2. Several workers sharing one queue; join() waits until every item is task_done().
    queue = asyncio.Queue()
    for number in range(1, 21):
        queue.put_nowait(number)
    totals: dict[str, int] = {}
    workers = [asyncio.create_task(worker(f"w{i}", queue, totals)) for i in range(3)]
    await queue.join()
    print("three workers, twenty items:")
    print(f"  queue empty after join(): {queue.empty()}")
    expected = sum(n * n for n in range(1, 21))
    print(f"  sum of squares computed: {sum(totals.values())} (expected {expected})")
    # The workers loop forever; cancel them and wait for the cancellations to finish.
    for w in workers:
        w.cancel()
    outcomes = await asyncio.gather(*workers, return_exceptions=True)
    print(f"  workers stopped by cancellation: {[type(o).__name__ for o in outcomes]}")

    # 3. Non-blocking variants raise instead of waiting.
    queue = asyncio.Queue(maxsize=1)
    queue.put_nowait("only")
    try:
        queue.put_nowait("one too many")
    except asyncio.QueueFull:
        print("put_nowait on a full queue raised QueueFull")
    print(f"get_nowait -> {queue.get_nowait()!r}")
    try:
        queue.get_nowait()
    except asyncio.QueueEmpty:
        print("get_nowait on an empty queue raised QueueEmpty")

    # 4. get() on an empty queue waits; a timeout turns that into an error.
    try:
        await asyncio.wait_for(queue.get(), timeout=0.02)
    except TimeoutError:
        print("get() on an empty queue timed out after 20 ms")

    # 5. Other orderings: lowest priority first, and last-in-first-out.
    pq: asyncio.PriorityQueue = asyncio.PriorityQueue()
    for priority, job in [(3, "low"), (1, "urgent"), (2, "normal")]:
        await pq.put((priority, job))
    print(f"PriorityQueue order: {[(await pq.get())[1] for _ in range(pq.qsize())]}")
    lifo: asyncio.LifoQueue = asyncio.LifoQueue()
    for job in ["first", "second", "third"]:
        await lifo.put(job)
    print(f"LifoQueue order: {[await lifo.get() for _ in range(lifo.qsize())]}")


if __name__ == "__main__":
    asyncio.run(main())
