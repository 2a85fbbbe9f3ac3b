"""SubprocessMixin: subprocess_exec/subprocess_shell and the subprocess transport.

Mixed into ``ferroloop.Loop``; the data paths run in Rust (``ferroloop._ferroloop``).
"""

from __future__ import annotations


class SubprocessMixin:
    __slots__ = ()
