"""bench/own_async_tree.py — owns our stand-in for pyperformance's async_tree benchmark classes.

Used by bench/wl_core.py only when pyperformance is not installed. Same shape as
pyperformance's bm_async_tree (our own code): a tree with 6 branches per node whose inner
nodes run their children with asyncio.gather or a TaskGroup, and whose leaves do the variant's
work: "none" returns; "io" sleeps 50 ms; "memoization" draws a number in 1..100 and, if it is
<= 90 and already seen, returns at once, else remembers it and sleeps 50 ms; "cpu_io_mixed"
computes factorial(500) half of the time and does the memoization leaf otherwise. The random
generator is seeded with 0 per tree, so every run does the same work.
"""

from __future__ import annotations

import asyncio
import math
import random

BRANCHES = 6
SLEEP = 0.05
MEMO_PERCENT = 90
CPU_SHARE = 0.5
FACTORIAL = 500


class Tree:
    def __init__(self, use_task_groups: bool = False) -> None:
        self.use_task_groups = use_task_groups
        self.seen: set[int] = set()
        random.seed(0)

    async def workload_func(self):
        return None

    async def recurse_with_gather(self, level: int) -> None:
        if level == 0:
            await self.workload_func()
        else:
            await asyncio.gather(*(self.recurse_with_gather(level - 1) for _ in range(BRANCHES)))

    async def recurse_with_task_group(self, level: int) -> None:
        if level == 0:
            await self.workload_func()
            return
        async with asyncio.TaskGroup() as tg:
            for _ in range(BRANCHES):
                tg.create_task(self.recurse_with_task_group(level - 1))


class IoTree(Tree):
    async def workload_func(self):
        await asyncio.sleep(SLEEP)


class MemoTree(Tree):
    async def workload_func(self):
        value = random.randint(1, 100)
        if value <= MEMO_PERCENT:
            if value in self.seen:
                return value
            self.seen.add(value)
        await asyncio.sleep(SLEEP)
        return value


class MixedTree(MemoTree):
    async def workload_func(self):
        if random.random() < CPU_SHARE:
            return math.factorial(FACTORIAL)
        return await MemoTree.workload_func(self)


BENCHMARKS = {"none": Tree, "io": IoTree, "memoization": MemoTree, "cpu_io_mixed": MixedTree}
