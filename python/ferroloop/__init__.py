"""ferroloop: asyncio's event loop, written in Rust.

Entry points:
    ferroloop.run(main())                                  # like asyncio.run
    asyncio.Runner(loop_factory=ferroloop.new_event_loop)
    ferroloop.install()                                    # asyncio's policy makes ferroloop loops
    python -m ferroloop script.py [args...]                # any asyncio program, unchanged

Importing ferroloop changes nothing in asyncio; only install() (or the -m entry point) does.
"""

from __future__ import annotations

import asyncio
from asyncio import events as _events

from ._ferroloop import (
    Future,
    Handle,
    Task,
    Timeout,
    TimerHandle,
    gather,
    sleep,
    timeout,
    timeout_at,
    wait,
    wait_for,
)
from ._loop import Loop
from ._patch import patch_asyncio, unpatch_asyncio
from ._taskgroup import TaskGroup

__all__ = [
    "EventLoopPolicy",
    "Future",
    "Handle",
    "Loop",
    "Task",
    "TaskGroup",
    "Timeout",
    "TimerHandle",
    "gather",
    "install",
    "new_event_loop",
    "patch_asyncio",
    "run",
    "sleep",
    "timeout",
    "timeout_at",
    "unpatch_asyncio",
    "wait",
    "wait_for",
]
__version__ = "0.1.0"


def new_event_loop(*, native_tasks: bool = True) -> Loop:
    """A new ferroloop event loop (not set as the current loop).

    ``loop.create_future()`` and ``loop.create_task()`` return ferroloop's native Future and
    Task (subclasses of asyncio.Future and asyncio.Task). ``native_tasks=False`` makes them
    return asyncio's own classes instead: a way out for a compatibility problem, and a way to
    compare."""
    return Loop(native_tasks=native_tasks)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making ferroloop loops (child watchers as on asyncio)."""

    _loop_factory = Loop

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}>"


def install() -> None:
    """Make ferroloop asyncio's event loop: asyncio.run(), asyncio.new_event_loop() and
    asyncio.get_event_loop() then give ferroloop loops."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Run coroutine ``main`` on a new ferroloop loop and return its result: asyncio.run()'s
    behaviour (a Runner closes async generators and the default executor, Ctrl-C cancels the
    main task and raises KeyboardInterrupt)."""
    if _events._get_running_loop() is not None:
        # Same message as asyncio.run().
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)
