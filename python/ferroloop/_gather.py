"""ferroloop.gather (native asyncio.gather) and the explicit opt-in that makes asyncio use it.

Owns patch_asyncio/unpatch_asyncio. ``gather`` itself is Rust (crates/py/src/gather.rs).
Nothing here runs on import: asyncio changes only when patch_asyncio() is called.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks

from ._ferroloop import gather

# asyncio's own gather, kept to restore it.
_ASYNCIO_GATHER = asyncio.tasks.gather


def patch_asyncio() -> None:
    """Make ``asyncio.gather`` (and ``asyncio.tasks.gather``) ferroloop's native gather, for
    programs that want it without code changes. Code that imported the name before
    (``from asyncio import gather``) keeps asyncio's. Undone by unpatch_asyncio()."""
    asyncio.gather = gather
    asyncio.tasks.gather = gather


def unpatch_asyncio() -> None:
    """Give asyncio its own gather back (undoes patch_asyncio())."""
    asyncio.gather = _ASYNCIO_GATHER
    asyncio.tasks.gather = _ASYNCIO_GATHER
