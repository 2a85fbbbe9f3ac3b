"""NetworkMixin: transports, servers, create_connection/create_server, datagram endpoints,
pipes and loop.sendfile.

Mixed into ``ferroloop.Loop``; the data paths run in Rust (``ferroloop._ferroloop``).
"""

from __future__ import annotations


class NetworkMixin:
    __slots__ = ()
