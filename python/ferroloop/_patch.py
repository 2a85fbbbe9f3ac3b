"""The explicit opt-in that makes asyncio use ferroloop's native helpers: patch_asyncio() /
unpatch_asyncio(). ``gather`` and ``sleep`` are Rust (crates/py/src/gather.rs, sleep.rs);
``TaskGroup`` is python/ferroloop/_taskgroup.py over crates/py/src/taskgroup.rs.
Nothing here runs on import: asyncio changes only when patch_asyncio() is called.
"""

from __future__ import annotations

import asyncio
import asyncio.taskgroups
import asyncio.tasks

from ._ferroloop import gather, sleep
from ._taskgroup import TaskGroup

# asyncio's own helpers, kept to restore them: (module, name) -> object.
_ORIGINALS = {
    (asyncio, "gather"): asyncio.tasks.gather,
    (asyncio.tasks, "gather"): asyncio.tasks.gather,
    (asyncio, "TaskGroup"): asyncio.taskgroups.TaskGroup,
    (asyncio.taskgroups, "TaskGroup"): asyncio.taskgroups.TaskGroup,
    (asyncio, "sleep"): asyncio.tasks.sleep,
    (asyncio.tasks, "sleep"): asyncio.tasks.sleep,
}
_NATIVE = {"gather": gather, "TaskGroup": TaskGroup, "sleep": sleep}


def patch_asyncio() -> None:
    """Make ``asyncio.gather``, ``asyncio.sleep`` and ``asyncio.TaskGroup`` (also as
    ``asyncio.tasks.gather``, ``asyncio.tasks.sleep`` and ``asyncio.taskgroups.TaskGroup``)
    ferroloop's native ones, for programs that want them
    without code changes. Code that imported the names before (``from asyncio import gather``)
    keeps asyncio's. Undone by unpatch_asyncio()."""
    for module, name in _ORIGINALS:
        setattr(module, name, _NATIVE[name])


def unpatch_asyncio() -> None:
    """Give asyncio its own gather, sleep and TaskGroup back (undoes patch_asyncio())."""
    for (module, name), original in _ORIGINALS.items():
        setattr(module, name, original)
