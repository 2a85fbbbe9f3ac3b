"""TlsMixin: TLS over ferroloop's transports (start_tls and the SSL protocol that ``ssl=`` uses).

Mixed into ``ferroloop.Loop``. TLS runs through Python's own ``ssl`` module (an ``SSLObject``
over two ``MemoryBIO``), so any ``SSLContext`` works unchanged; the state machine, the buffers
and the loops that pump records through the SSLObject are the Rust class
``ferroloop._ferroloop.SSLProtocolCore`` (crates/py/src/tls.rs). This module is glue:

- ``SSLProtocol``: the protocol a raw transport talks to (an ``asyncio.BufferedProtocol``), with
  the constructor of ``asyncio.sslproto.SSLProtocol``;
- ``_SSLProtocolTransport``: the ``asyncio.Transport`` the application protocol gets;
- ``TlsMixin.start_tls``.
"""

from __future__ import annotations

import ssl
import sys
import warnings
from asyncio import constants, protocols, transports

from ._ferroloop import SSLProtocolCore

__all__ = ["SSLProtocol", "TlsMixin"]


class SSLProtocol(SSLProtocolCore, protocols.BufferedProtocol):
    """TLS between a raw transport and an application protocol.

    Mirrors ``asyncio.sslproto.SSLProtocol``: give it to a raw transport (it is a
    BufferedProtocol), and hand ``_app_transport`` to the application.
    """

    def __init__(
        self,
        loop,
        app_protocol,
        sslcontext,
        waiter,
        server_side=False,
        server_hostname=None,
        call_connection_made=True,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        self._init(
            loop,
            app_protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            call_connection_made,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )


class _SSLProtocolTransport(transports._FlowControlMixin, transports.Transport):
    """The transport the application protocol of a TLS connection uses.

    Mirrors ``asyncio.sslproto._SSLProtocolTransport``; every method hands over to the Rust
    SSL protocol.
    """

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, loop, ssl_protocol):
        self._loop = loop
        self._ssl_protocol = ssl_protocol
        self._closed = False
        # The hot method without a Python frame: the Rust protocol's bound method.
        self.write = ssl_protocol._write

    def get_extra_info(self, name, default=None):
        return self._ssl_protocol._get_extra_info(name, default)

    def set_protocol(self, protocol):
        self._ssl_protocol._set_app_protocol(protocol)

    def get_protocol(self):
        return self._ssl_protocol._app_protocol

    def is_closing(self):
        return self._closed

    def close(self):
        """Close after flushing buffered data; the protocol's connection_lost() gets None."""
        if not self._closed:
            self._closed = True
            self._ssl_protocol._start_shutdown()
        else:
            self._ssl_protocol = None

    def __del__(self, _warnings=warnings):
        if not self._closed:
            self._closed = True
            _warnings.warn(
                "unclosed transport <asyncio._SSLProtocolTransport object>", ResourceWarning
            )

    def is_reading(self):
        return not self._ssl_protocol._app_reading_paused

    def pause_reading(self):
        self._ssl_protocol._pause_reading()

    def resume_reading(self):
        self._ssl_protocol._resume_reading()

    def set_write_buffer_limits(self, high=None, low=None):
        self._ssl_protocol._set_write_buffer_limits(high, low)
        self._ssl_protocol._control_app_writing()

    def get_write_buffer_limits(self):
        return (self._ssl_protocol._outgoing_low_water, self._ssl_protocol._outgoing_high_water)

    def get_write_buffer_size(self):
        return self._ssl_protocol._get_write_buffer_size()

    def set_read_buffer_limits(self, high=None, low=None):
        self._ssl_protocol._set_read_buffer_limits(high, low)
        self._ssl_protocol._control_ssl_reading()

    def get_read_buffer_limits(self):
        return (self._ssl_protocol._incoming_low_water, self._ssl_protocol._incoming_high_water)

    def get_read_buffer_size(self):
        return self._ssl_protocol._get_read_buffer_size()

    @property
    def _protocol_paused(self):
        # Read by asyncio's sendfile fallback.
        return self._ssl_protocol._app_writing_paused

    def write(self, data):
        self._ssl_protocol._write(data)

    def writelines(self, list_of_data):
        self._ssl_protocol._write_appdata(list_of_data)

    def write_eof(self):
        """Not supported over TLS (as asyncio): raises NotImplementedError."""
        raise NotImplementedError

    def can_write_eof(self):
        return False

    def abort(self):
        """Close now: buffered data is lost; the protocol's connection_lost() gets None."""
        if sys.version_info >= (3, 12):
            self._force_close(None)
            return
        self._closed = True
        if self._ssl_protocol is not None:
            self._ssl_protocol._abort()

    def _force_close(self, exc):
        self._closed = True
        if self._ssl_protocol is not None:
            self._ssl_protocol._abort(exc)

    def _test__append_write_backlog(self, data):
        # For asyncio's tests, which fill the backlog through it.
        self._ssl_protocol._test__append_write_backlog(data)


class TlsMixin:
    __slots__ = ()

    async def start_tls(
        self,
        transport,
        protocol,
        sslcontext,
        *,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Upgrade ``transport`` to TLS; return the new transport ``protocol`` should use.

        Mirrors ``base_events.BaseEventLoop.start_tls``.
        """
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")

        waiter = self.create_future()
        ssl_protocol = SSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False,
        )
        # Paused first, so the SSL protocol gets no data before its connection_made.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            raise
        return ssl_protocol._app_transport
