"""NetworkMixin: transports, servers, create_connection/create_server, datagram endpoints,
pipes and loop.sendfile.

Mixed into ``ferroloop.Loop``; the data paths run in Rust (``ferroloop._ferroloop``).
"""

from __future__ import annotations


class NetworkMixin:
    __slots__ = ()

    def _ensure_fd_no_transport(self, fd):
        """Raise RuntimeError if a live transport owns ``fd``.

        Mirrors selector_events.BaseSelectorEventLoop._ensure_fd_no_transport.
        """
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                # Let the caller's own checks report a bad file object.
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")
