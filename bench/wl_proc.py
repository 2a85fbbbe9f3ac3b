"""bench/wl_proc.py — owns the benchmark suite's subprocess workloads.

Spawning a child with asyncio.create_subprocess_exec and collecting it: the loop's part is
creating the pipe transports, watching for the child's exit (ferroloop: a pidfd; asyncio and
uvloop: their child watchers) and delivering its output. Each workload takes (loop, n) and
returns (seconds, n).
"""

from __future__ import annotations

import asyncio
import sys
import time

# A child that does next to nothing, so the loop's share of the cost shows.
TRUE = "/bin/true"


def wl_spawn_wait(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """n children spawned one after another, each awaited with wait() (no pipes)."""

    async def main() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            proc = await asyncio.create_subprocess_exec(TRUE)
            if await proc.wait() != 0:
                raise RuntimeError("child failed")
        return time.perf_counter() - t0

    return loop.run_until_complete(main()), n


def wl_spawn_communicate(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """n children, 10 at a time, each echoing 64 KiB through stdin/stdout with communicate()."""
    payload = bytes(range(256)) * 256
    code = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"

    async def one() -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-S",
            "-c",
            code,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(payload)
        if out != payload or proc.returncode != 0:
            raise RuntimeError("child echoed the wrong bytes")

    async def main() -> float:
        t0 = time.perf_counter()
        for start in range(0, n, 10):
            await asyncio.gather(*(one() for _ in range(min(10, n - start))))
        return time.perf_counter() - t0

    return loop.run_until_complete(main()), n
