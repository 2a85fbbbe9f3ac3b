"""SockOpsMixin: the loop's sock_* coroutines, getaddrinfo/getnameinfo and sock_sendfile.

Mixed into ``ferroloop.Loop``; the data paths run in Rust (``ferroloop._ferroloop``).
"""

from __future__ import annotations


class SockOpsMixin:
    __slots__ = ()
