# Typing stubs for the ferroloop package.
import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._ferroloop import Future as Future
from ._ferroloop import Handle as Handle
from ._ferroloop import LoopCore, _TaskGroupCore
from ._ferroloop import Task as Task
from ._ferroloop import Timeout as Timeout
from ._ferroloop import TimerHandle as TimerHandle
from ._ferroloop import gather as gather
from ._ferroloop import sleep as sleep
from ._ferroloop import timeout as timeout
from ._ferroloop import timeout_at as timeout_at
from ._ferroloop import wait as wait
from ._ferroloop import wait_for as wait_for

_T = TypeVar("_T")

class Loop(LoopCore, asyncio.AbstractEventLoop):
    def __init__(self, *, native_tasks: bool = True) -> None: ...

class EventLoopPolicy(asyncio.DefaultEventLoopPolicy): ...

class TaskGroup(_TaskGroupCore):
    """asyncio.TaskGroup with its per-task work native."""

    async def __aenter__(self) -> TaskGroup: ...
    async def __aexit__(self, et: Any, exc: Any, tb: Any) -> None: ...

def new_event_loop(*, native_tasks: bool = True) -> Loop: ...
def install() -> None: ...
def patch_asyncio() -> None: ...
def unpatch_asyncio() -> None: ...
def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T: ...

__version__: str
