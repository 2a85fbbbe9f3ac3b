"""The transport classes ferroloop hands to protocols: instances of asyncio's Transport,
ReadTransport and WriteTransport (with a ``__dict__``, as asyncio's own), each holding a Rust
``TransportCore`` core (``_core``) that does the reading, writing, buffering and flow control.

This module only builds the extra info, the repr and the unclosed-transport warning, and
forwards each method to the core.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import warnings
from asyncio import constants, transports, trsock

from ._ferroloop import TransportCore

# BaseTransport's `_extra` slot, under the `_extra` property of SocketTransport.
_EXTRA_SLOT = transports.BaseTransport._extra


def _set_nodelay(sock):
    """base_events._set_nodelay: disable Nagle on TCP sockets."""
    if (
        hasattr(socket, "TCP_NODELAY")
        and sock.family in {socket.AF_INET, socket.AF_INET6}
        and sock.type == socket.SOCK_STREAM
        and sock.proto == socket.IPPROTO_TCP
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _add_socket_extra(extra, sock):
    """The extra info of a socket transport (selector_events._SelectorTransport.__init__):
    the socket, its name and its peer's (None when unavailable)."""
    extra["socket"] = trsock.TransportSocket(sock)
    try:
        extra["sockname"] = sock.getsockname()
    except OSError:
        extra["sockname"] = None
    if "peername" not in extra:
        try:
            extra["peername"] = sock.getpeername()
        except OSError:
            extra["peername"] = None


class _CoreTransport:
    """Methods shared by the three transport classes: forwarding to ``self._core``."""

    _core = None

    # is_closing(): installed below by TransportCore._install_methods (a method written in
    # Rust: StreamWriter.drain asks it on every call).

    def close(self):
        self._core.close()

    def abort(self):
        self._core.abort()

    def set_protocol(self, protocol):
        self._core.set_protocol(protocol)

    def get_protocol(self):
        return self._core.get_protocol()

    @property
    def _loop(self):
        return self._core._loop

    @property
    def _protocol(self):
        return self._core.get_protocol()

    @property
    def _closing(self):
        return self._core.is_closing()

    @property
    def _conn_lost(self):
        return self._core._conn_lost

    def _force_close(self, exc):
        self._core._force_close(exc)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        self._core._fatal_error(exc, message)

    def _call_connection_lost(self, exc):
        self._core._call_connection_lost(exc)


class _WritingMixin:
    # write(data): installed below by TransportCore._install_methods, a method written in
    # Rust that calls self._core's write without a Python frame.

    def writelines(self, list_of_data):
        self._core.writelines(list_of_data)

    def write_eof(self):
        self._core.write_eof()

    def can_write_eof(self):
        return True

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        self._core.set_write_buffer_limits(high, low)

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused


TransportCore._install_methods(_CoreTransport, _WritingMixin)


class _ReadingMixin:
    def pause_reading(self):
        self._core.pause_reading()

    def resume_reading(self):
        self._core.resume_reading()

    def is_reading(self):
        return self._core.is_reading()


class SocketTransport(
    _CoreTransport, _ReadingMixin, _WritingMixin, transports._FlowControlMixin, transports.Transport
):
    """A TCP or Unix stream socket's transport (selector_events._SelectorSocketTransport).

    Memory per connection is kept small: the instance ``__dict__`` holds only ``_sock_fd`` and
    ``_core`` (``write`` is the class's method), and for a connection accepted by a server,
    whose socket only this transport holds, the ``socket`` and ``sockname`` extra info are
    filled in when first asked for (``get_extra_info``, ``_extra``, ``_sock``) or before the
    core closes the socket: the values are the ones asyncio stores at construction. A
    connection accepted natively (``peer``: its address, kept by the core) has no dict until
    then either; ``peername`` comes first in it, as in asyncio's.
    """

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None, peer=None):
        # BaseTransport.__init__'s only: the flow-control state lives in the core, not in
        # _FlowControlMixin's slots (which the properties here shadow). A natively accepted
        # connection (``peer``: its address, kept by the core) gets its dict when asked.
        if extra is None and peer is None:
            extra = {}
        elif extra is None and server is None:  # nothing to fill it in later
            extra = {"peername": peer.address()}
        _EXTRA_SLOT.__set__(self, extra)
        if server is None:
            _add_socket_extra(extra, sock)
        self._sock_fd = sock.fileno()
        self._core = core = TransportCore(
            loop, self, sock, self._sock_fd, "socket", server, peer=peer
        )
        core.set_protocol(protocol)
        if server is not None:
            server._attach()
        core._register()
        _set_nodelay(sock)
        core._start(waiter)

    @property
    def _extra(self):
        extra = _EXTRA_SLOT.__get__(self)
        if extra is None or "socket" not in extra:
            extra = self._fill_extra(extra)
        return extra

    @_extra.setter
    def _extra(self, value):
        _EXTRA_SLOT.__set__(self, value)

    def _fill_extra(self, extra):
        """The socket's extra info, deferred from __init__ (see the class docstring); the
        dict itself too for a natively accepted connection, starting with its peer's address
        as asyncio's does."""
        core = self._core
        if extra is None:
            peer = None if core is None else core._peername()
            extra = {} if peer is None else {"peername": peer}
            _EXTRA_SLOT.__set__(self, extra)
        sock = None if core is None else core._sock
        if sock is not None:
            _add_socket_extra(extra, sock)
        return extra

    def get_extra_info(self, name, default=None):
        extra = _EXTRA_SLOT.__get__(self)
        if extra is None or (name not in extra and "socket" not in extra):
            extra = self._fill_extra(extra)
        return extra.get(name, default)

    @property
    def _sock(self):
        core = self._core
        if core is None:
            return None
        extra = _EXTRA_SLOT.__get__(self)
        if extra is None or "socket" not in extra:
            self._fill_extra(extra)  # the deferred extra info, while the socket is there
        return core._sock

    @property
    def _server(self):
        return self._core._server

    def _make_empty_waiter(self):
        return self._core._make_empty_waiter()

    def _reset_empty_waiter(self):
        self._core._reset_empty_waiter()

    def __repr__(self):
        core = self._core
        if core is None:
            return f"<{self.__class__.__name__} uninitialized>"
        closed, closing, fd, reading, writing, bufsize = core._state()
        info = [self.__class__.__name__]
        if closed:
            info.append("closed")
        elif closing:
            info.append("closing")
        info.append(f"fd={fd}")
        loop = core._loop
        if loop is not None and not loop.is_closed():
            info.append("read=polling" if reading else "read=idle")
            state = "polling" if writing else "idle"
            info.append(f"write=<{state}, bufsize={bufsize}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        core = self._core
        sock = None if core is None else core._sock
        if sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()


class DatagramTransport(
    _CoreTransport,
    _ReadingMixin,
    transports._FlowControlMixin,
    transports.Transport,
    transports.DatagramTransport,
):
    """A datagram socket's transport (selector_events._SelectorDatagramTransport)."""

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        transports.BaseTransport.__init__(self, extra)
        _add_socket_extra(self._extra, sock)
        self._sock_fd = sock.fileno()
        self._address = address
        self._core = core = TransportCore(
            loop,
            self,
            sock,
            self._sock_fd,
            "datagram",
            None,
            False,
            address,
            bool(self._extra["peername"]),
            sock.family,
        )
        core.set_protocol(protocol)
        core._register()
        core._start(waiter)

    def sendto(self, data, addr=None):
        self._core.sendto(data, addr)

    def get_write_buffer_size(self):
        return self._core.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        self._core.set_write_buffer_limits(high, low)

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    @property
    def _sock(self):
        core = self._core
        return None if core is None else core._sock

    __repr__ = SocketTransport.__repr__
    __del__ = SocketTransport.__del__


def _check_pipe_mode(fileno, *, write):
    mode = os.fstat(fileno).st_mode
    is_char = stat.S_ISCHR(mode)
    is_fifo = stat.S_ISFIFO(mode)
    is_socket = stat.S_ISSOCK(mode)
    if not (is_char or is_fifo or is_socket):
        kind = "Pipe transport is only for pipes, sockets and character devices"
        if not write:
            kind = "Pipe transport is for pipes/sockets only."
        raise ValueError(kind)
    return is_fifo, is_socket


def _pipe_repr(self, *, with_bufsize):
    core = self._core
    info = [self.__class__.__name__]
    if core is None:
        return f"<{self.__class__.__name__} uninitialized>"
    closed, closing, fd, reading, writing, bufsize = core._state()
    if closed:
        info.append("closed")
    elif closing:
        info.append("closing")
    info.append(f"fd={fd}")
    loop = core._loop
    if not closed and loop is not None and not loop.is_closed():
        polling = writing if with_bufsize else reading
        info.append("polling" if polling else "idle")
        if with_bufsize:
            info.append(f"bufsize={bufsize}")
    elif not closed:
        info.append("open")
    else:
        info.append("closed")
    return "<{}>".format(" ".join(info))


class _PipeMixin:
    """What both pipe transports share: the pipe object and the unclosed-transport warning."""

    @property
    def _pipe(self):
        return self._core._sock

    @_pipe.setter
    def _pipe(self, value):
        self._core._sock = value

    def __del__(self, _warn=warnings.warn):
        core = self._core
        pipe = None if core is None else core._sock
        if pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            pipe.close()


class ReadPipeTransport(_PipeMixin, _CoreTransport, _ReadingMixin, transports.ReadTransport):
    """The read end of a pipe (unix_events._UnixReadPipeTransport)."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._extra["pipe"] = pipe
        self._fileno = pipe.fileno()
        _check_pipe_mode(self._fileno, write=False)
        os.set_blocking(self._fileno, False)
        self._core = core = TransportCore(loop, self, pipe, self._fileno, "read_pipe")
        core.set_protocol(protocol)
        core._start(waiter)

    def __repr__(self):
        return _pipe_repr(self, with_bufsize=False)


class WritePipeTransport(
    _PipeMixin,
    _CoreTransport,
    _WritingMixin,
    transports._FlowControlMixin,
    transports.WriteTransport,
):
    """The write end of a pipe (unix_events._UnixWritePipeTransport)."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        transports.BaseTransport.__init__(self, extra)
        self._extra["pipe"] = pipe
        self._fileno = pipe.fileno()
        is_fifo, is_socket = _check_pipe_mode(self._fileno, write=True)
        os.set_blocking(self._fileno, False)
        watch_eof = is_socket or (is_fifo and not sys.platform.startswith("aix"))
        self._core = core = TransportCore(
            loop, self, pipe, self._fileno, "write_pipe", None, watch_eof
        )
        core.set_protocol(protocol)
        core._start(waiter)

    def __repr__(self):
        return _pipe_repr(self, with_bufsize=True)


# Each concrete class gets its own descriptors of the native methods as well: CPython
# specialises a method call only when the instance is exactly of the descriptor's class.
for _cls, _writing in (
    (SocketTransport, SocketTransport),
    (DatagramTransport, None),
    (ReadPipeTransport, None),
    (WritePipeTransport, WritePipeTransport),
):
    TransportCore._install_methods(_cls, _writing)
del _cls, _writing
