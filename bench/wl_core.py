"""bench/wl_core.py — owns the benchmark suite's scheduling and task workloads.

call_soon, timers, futures, sleeps, task trees (our own shapes), and pyperformance's async_tree
variants run on the loop under test. Each workload takes (loop, size) and returns
(elapsed_seconds, units_done); only the timed part is inside perf_counter. Each checks its own
result, so a loop that drops work fails instead of looking fast.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

from wl_net import WrongResult

TREE_FANOUT = 6


def wl_call_soon_chain(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """One callback that re-schedules itself with call_soon until it has run n times."""
    remaining = n
    call_soon = loop.call_soon

    def cb() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining:
            call_soon(cb)
        else:
            loop.stop()

    t0 = time.perf_counter()
    call_soon(cb)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    if remaining != 0:
        raise WrongResult(f"chain: {remaining} of {n} callbacks did not run")
    return elapsed, n


def wl_call_soon_batch(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """n call_soon in a row, then one run of the loop that executes them all."""
    done = 0
    call_soon = loop.call_soon

    def cb() -> None:
        nonlocal done
        done += 1

    t0 = time.perf_counter()
    for _ in range(n):
        call_soon(cb)
    call_soon(loop.stop)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    if done != n:
        raise WrongResult(f"batch: {done} of {n} callbacks ran")
    return elapsed, n


def _tree(
    loop: asyncio.AbstractEventLoop,
    depth: int,
    suspend: bool,
    spawn: str = "gather",
    leaf_delay: float = 0.0,
) -> tuple[float, int]:
    """A tree of coroutines, `depth` levels deep, TREE_FANOUT branches per node.

    Same shape as pyperformance's async_tree: every inner node runs TREE_FANOUT children as
    Tasks. `spawn` says how: "gather" (`asyncio.gather` of the child coroutines), "taskgroup"
    (`asyncio.TaskGroup` + `tg.create_task`) or "create_task" (`asyncio.create_task` for each
    child, then await the tasks one by one). A leaf either returns at once (suspend=False, like
    the "none" variant) or does `await asyncio.sleep(leaf_delay)` (suspend=True: with delay 0
    that is one extra loop round-trip per leaf; with delay > 0 every leaf waits on a timer).
    """
    leaves = 0
    n_leaves = TREE_FANOUT**depth

    async def leaf() -> None:
        nonlocal leaves
        if suspend:
            await asyncio.sleep(leaf_delay)
        leaves += 1

    async def node_gather(level: int) -> None:
        if level == 0:
            await leaf()
            return
        await asyncio.gather(*[node_gather(level - 1) for _ in range(TREE_FANOUT)])

    async def node_taskgroup(level: int) -> None:
        if level == 0:
            await leaf()
            return
        async with asyncio.TaskGroup() as tg:
            for _ in range(TREE_FANOUT):
                tg.create_task(node_taskgroup(level - 1))

    async def node_create_task(level: int) -> None:
        if level == 0:
            await leaf()
            return
        create_task = asyncio.create_task
        tasks = [create_task(node_create_task(level - 1)) for _ in range(TREE_FANOUT)]
        for t in tasks:
            await t

    node = {"gather": node_gather, "taskgroup": node_taskgroup, "create_task": node_create_task}
    t0 = time.perf_counter()
    loop.run_until_complete(node[spawn](depth))
    elapsed = time.perf_counter() - t0
    if leaves != n_leaves:
        raise WrongResult(f"tree: {leaves} of {n_leaves} leaves ran")
    if leaf_delay and elapsed < leaf_delay * 0.5:
        raise WrongResult(
            f"tree: took {elapsed * 1e3:.3f} ms, but each leaf sleeps {leaf_delay * 1e3:g} ms"
        )
    return elapsed, 1


def wl_tree_none(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=False)


def wl_tree_sleep0(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=True)


def wl_tree_taskgroup(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=False, spawn="taskgroup")


def wl_tree_create_task(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=False, spawn="create_task")


def wl_tree_sleep1ms(loop: asyncio.AbstractEventLoop, depth: int) -> tuple[float, int]:
    return _tree(loop, depth, suspend=True, leaf_delay=0.001)


def wl_future_roundtrip(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """One coroutine, n times: create a future, call_soon(fut.set_result, i), await it."""

    async def main() -> int:
        total = 0
        create_future = loop.create_future
        call_soon = loop.call_soon
        for i in range(n):
            fut = create_future()
            call_soon(fut.set_result, i)
            total += await fut
        return total

    t0 = time.perf_counter()
    total = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    if total != n * (n - 1) // 2:
        raise WrongResult(f"future_roundtrip: sum of results {total}, expected {n * (n - 1) // 2}")
    return elapsed, n


def wl_wait_for(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """One coroutine, n times: `await asyncio.wait_for(fut, 10)` on a future that a call_soon
    resolves (the timeout never fires: the timer is made and cancelled each time)."""

    async def main() -> int:
        total = 0
        wait_for = asyncio.wait_for
        for i in range(n):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, i)
            total += await wait_for(fut, 10)
        return total

    t0 = time.perf_counter()
    total = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    if total != n * (n - 1) // 2:
        raise WrongResult(f"wait_for: sum of results {total}, expected {n * (n - 1) // 2}")
    return elapsed, n


def wl_timeout_cm(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """One coroutine, n times: `async with asyncio.timeout(10): await fut`, fut resolved by a
    call_soon (the deadline never passes)."""

    async def main() -> int:
        total = 0
        timeout = asyncio.timeout
        for i in range(n):
            fut = loop.create_future()
            loop.call_soon(fut.set_result, i)
            async with timeout(10):
                total += await fut
        return total

    t0 = time.perf_counter()
    total = loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    if total != n * (n - 1) // 2:
        raise WrongResult(f"timeout_cm: sum of results {total}, expected {n * (n - 1) // 2}")
    return elapsed, n


SLEEP_MANY_ROUNDS = 10
SLEEP_MANY_DELAY = 0.001


def wl_sleep_many(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """n tasks, each doing `await asyncio.sleep(0.001)` SLEEP_MANY_ROUNDS times in a row."""
    slept = 0

    async def sleeper() -> None:
        nonlocal slept
        for _ in range(SLEEP_MANY_ROUNDS):
            await asyncio.sleep(SLEEP_MANY_DELAY)
            slept += 1

    async def main() -> None:
        await asyncio.gather(*[sleeper() for _ in range(n)])

    t0 = time.perf_counter()
    loop.run_until_complete(main())
    elapsed = time.perf_counter() - t0
    if slept != n * SLEEP_MANY_ROUNDS:
        raise WrongResult(f"sleep_many: {slept} of {n * SLEEP_MANY_ROUNDS} sleeps finished")
    minimum = SLEEP_MANY_ROUNDS * SLEEP_MANY_DELAY * 0.5
    if elapsed < minimum:
        raise WrongResult(
            f"sleep_many: took {elapsed * 1e3:.3f} ms for {SLEEP_MANY_ROUNDS} sequential "
            f"{SLEEP_MANY_DELAY * 1e3:g} ms sleeps"
        )
    return elapsed, 1


def wl_timers(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """n call_later timers (1 h away), all cancelled, then one loop pass to purge them."""
    fired = 0

    def cb() -> None:
        nonlocal fired
        fired += 1

    call_later = loop.call_later
    t0 = time.perf_counter()
    handles = [call_later(3600.0, cb) for _ in range(n)]
    for h in handles:
        h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    elapsed = time.perf_counter() - t0
    if fired:
        raise WrongResult(f"timers: {fired} cancelled timers fired")
    if not all(h.cancelled() for h in handles):
        raise WrongResult("timers: a handle does not report cancelled()")
    return elapsed, n


# --------------------------------------------------------------------------------------------
# pyperformance's async_tree variants (bm_async_tree), run on the loop under test.
# --------------------------------------------------------------------------------------------

ASYNC_TREE_VARIANTS = ("none", "io", "memoization", "cpu_io_mixed")
_async_tree_source = None  # "pyperformance X.Y" or "own equivalent"


def _async_tree_classes() -> tuple[dict, str]:
    """pyperformance's bm_async_tree BENCHMARKS table, or our own equivalent if it is absent."""
    try:
        import pyperformance

        path = (
            Path(pyperformance.__file__).parent
            / "data-files/benchmarks/bm_async_tree/run_benchmark.py"
        )
        spec = importlib.util.spec_from_file_location("bm_async_tree", path)
        if spec is None or spec.loader is None:
            raise ImportError(path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # imports pyperf; defines the classes only
        return mod.BENCHMARKS, f"pyperformance {pyperformance.__version__}"
    except (ImportError, OSError, AttributeError):
        import own_async_tree

        return own_async_tree.BENCHMARKS, "own equivalent"


def async_tree_source() -> str:
    return _async_tree_classes()[1]


def _async_tree(loop, depth: int, variant: str, task_groups: bool) -> tuple[float, int]:
    """pyperformance's async_tree: a gather (or TaskGroup) tree, 6 branches per node, `depth`
    levels (pyperformance uses 6), leaves doing the variant's work (see bm_async_tree). The
    tree object is the benchmark's own class, subclassed only to count finished leaves."""
    classes, _ = _async_tree_classes()
    base = classes[variant]
    leaves = 0

    class Counted(base):
        async def workload_func(self):
            nonlocal leaves
            res = await super().workload_func()
            leaves += 1
            return res

    tree = Counted(use_task_groups=task_groups)  # seeds `random` as the benchmark does
    coro = tree.recurse_with_task_group(depth) if task_groups else tree.recurse_with_gather(depth)
    t0 = time.perf_counter()
    loop.run_until_complete(coro)
    elapsed = time.perf_counter() - t0
    if leaves != TREE_FANOUT**depth:
        raise WrongResult(f"async_tree_{variant}: {leaves} of {TREE_FANOUT**depth} leaves ran")
    if variant == "io" and elapsed < 0.05:
        raise WrongResult(f"async_tree_io: took {elapsed * 1e3:.1f} ms, leaves sleep 50 ms")
    return elapsed, 1


def _async_tree_rows() -> dict:
    rows = {}
    for variant in ASYNC_TREE_VARIANTS:
        for tg in (False, True):
            name = f"async_tree_{variant}" + ("_tg" if tg else "")

            def wl(loop, depth, variant=variant, tg=tg):
                return _async_tree(loop, depth, variant, tg)

            wl.__name__ = f"wl_{name}"
            rows[name] = wl
    return rows


ASYNC_TREE_ROWS = _async_tree_rows()
