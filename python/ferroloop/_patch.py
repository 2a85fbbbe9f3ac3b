"""The explicit opt-in that makes asyncio use ferroloop's native helpers: patch_asyncio() /
unpatch_asyncio(). ``gather``, ``sleep``, ``wait_for``, ``wait`` and
``timeout``/``timeout_at``/``Timeout`` are Rust (crates/py/src/gather.rs, sleep.rs,
wait_for.rs, wait.rs, timeout.rs);
``TaskGroup`` is python/ferroloop/_taskgroup.py over crates/py/src/taskgroup.rs.
Nothing here runs on import: asyncio changes only when patch_asyncio() is called.
"""

from __future__ import annotations

import asyncio
import asyncio.taskgroups
import asyncio.tasks
import asyncio.timeouts
import sys

from ._ferroloop import Timeout, gather, sleep, timeout, timeout_at, wait, wait_for
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
_NATIVE = {
    "gather": gather,
    "TaskGroup": TaskGroup,
    "sleep": sleep,
    "timeout": timeout,
    "timeout_at": timeout_at,
    "Timeout": Timeout,
    "wait_for": wait_for,
    "wait": wait,
}
if sys.version_info[:2] == (3, 11):
    # ferroloop's timeouts follow 3.11's asyncio.timeouts; later versions changed __aexit__.
    for _name in ("timeout", "timeout_at", "Timeout"):
        _ORIGINALS[(asyncio, _name)] = getattr(asyncio.timeouts, _name)
        _ORIGINALS[(asyncio.timeouts, _name)] = getattr(asyncio.timeouts, _name)
    # ferroloop's wait_for and wait are 3.11's (3.12 rewrote wait_for over asyncio.timeout).
    for _name in ("wait_for", "wait"):
        _ORIGINALS[(asyncio, _name)] = getattr(asyncio.tasks, _name)
        _ORIGINALS[(asyncio.tasks, _name)] = getattr(asyncio.tasks, _name)


def patch_asyncio() -> None:
    """Make ``asyncio.gather``, ``asyncio.sleep``, ``asyncio.TaskGroup`` and, on Python 3.11,
    ``asyncio.wait_for``, ``asyncio.wait`` and ``asyncio.timeout``/``timeout_at``/``Timeout``
    (also as ``asyncio.tasks.*``, ``asyncio.taskgroups.TaskGroup`` and ``asyncio.timeouts.*``)
    ferroloop's native ones, for programs that want them without code changes. Code that
    imported the names before (``from asyncio import gather``) keeps asyncio's. Undone by
    unpatch_asyncio()."""
    for module, name in _ORIGINALS:
        setattr(module, name, _NATIVE[name])


def unpatch_asyncio() -> None:
    """Give asyncio its own gather, sleep, TaskGroup, wait_for, wait and timeouts back (undoes
    patch_asyncio())."""
    for (module, name), original in _ORIGINALS.items():
        setattr(module, name, original)
