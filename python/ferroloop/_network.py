"""NetworkMixin: create_connection/create_server (TCP and Unix), connect_accepted_socket, the
Server object, connect_read_pipe/connect_write_pipe and loop.sendfile.

Mixed into ``ferroloop.Loop``. This is the cold path (resolving, creating, binding and
accepting sockets, argument checks with asyncio's messages); the transports it makes are
Rust-driven (``_transports.py`` over ``ferroloop._ferroloop.StreamTransport``).
"""

from __future__ import annotations

import collections.abc
import errno
import functools
import itertools
import os
import socket
import stat
import sys
from asyncio import (
    base_events,
    constants,
    events,
    exceptions,
    staggered,
    tasks,
    trsock,
    unix_events,
)

from . import _transports
from ._ferroloop import _accept_inet

_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)

_HAS_IPV6 = hasattr(socket, "AF_INET6")


def _logger():
    from asyncio.log import logger

    return logger


def _check_ssl_socket(sock):
    """base_events._check_ssl_socket: an ssl.SSLSocket cannot be used with the loop."""
    try:
        import ssl
    except ImportError:  # pragma: no cover - ssl is always built here
        return
    if isinstance(sock, ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _set_reuseport(sock):
    """base_events._set_reuseport."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        )


def _interleave_addrinfos(addrinfos, first_address_family_count=1):
    """Order addresses by alternating families (RFC 8305), as base_events does: the first
    ``first_address_family_count`` of the first family, then one of each family in turn."""
    by_family = {}
    for info in addrinfos:
        by_family.setdefault(info[0], []).append(info)
    groups = list(by_family.values())
    ordered = []
    if first_address_family_count > 1 and groups:
        ordered.extend(groups[0][: first_address_family_count - 1])
        del groups[0][: first_address_family_count - 1]
    for round_ in itertools.zip_longest(*groups):
        ordered.extend(info for info in round_ if info is not None)
    return ordered


class Server(events.AbstractServer):
    """What create_server returns (asyncio.base_events.Server's behaviour): owns the listening
    sockets, counts the connections it accepted, and wakes wait_closed() when closed and idle."""

    def __init__(
        self,
        loop,
        sockets,
        protocol_factory,
        ssl_context,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout=None,
    ):
        self._loop = loop
        self._sockets = sockets
        self._active_count = 0
        self._waiters = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut = None

    def __repr__(self):
        return f"<{self.__class__.__name__} sockets={self.sockets!r}>"

    def _attach(self):
        assert self._sockets is not None
        self._active_count += 1

    def _detach(self):
        assert self._active_count > 0
        self._active_count -= 1
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self):
        waiters, self._waiters = self._waiters, None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(waiter)

    def _start_serving(self):
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._loop._start_serving(
                self._protocol_factory,
                sock,
                self._ssl_context,
                self,
                self._backlog,
                self._ssl_handshake_timeout,
                self._ssl_shutdown_timeout,
            )

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return self._serving

    @property
    def sockets(self):
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(s) for s in self._sockets)

    def close(self):
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            self._loop._stop_serving(sock)
        self._serving = False
        fut = self._serving_forever_fut
        if fut is not None and not fut.done():
            fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    async def start_serving(self):
        self._start_serving()
        await tasks.sleep(0)

    async def serve_forever(self):
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except exceptions.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        if self._sockets is None or self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter


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
        transport = self._transport_of(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(f"File descriptor {fd!r} is used by transport {transport!r}")

    # -- transports ----------------------------------------------------------------------------

    def _make_socket_transport(
        self, sock, protocol, waiter=None, *, extra=None, server=None, peer=None
    ):
        return _transports.SocketTransport(self, sock, protocol, waiter, extra, server, peer)

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
    ):
        """selector_events._make_ssl_transport: a TLS protocol over a socket transport."""
        from . import _tls

        ssl_protocol = _tls.SSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        _transports.SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return _transports.DatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return _transports.ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return _transports.WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def _create_connection_transport(
        self,
        sock,
        protocol_factory,
        ssl,
        server_hostname,
        server_side=False,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        sock.setblocking(False)
        protocol = protocol_factory()
        waiter = self.create_future()
        if ssl:
            sslcontext = None if isinstance(ssl, bool) else ssl
            transport = self._make_ssl_transport(
                sock,
                protocol,
                sslcontext,
                waiter,
                server_side=server_side,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        else:
            transport = self._make_socket_transport(sock, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    # -- connecting ----------------------------------------------------------------------------

    async def _connect_sock(self, exceptions, addr_info, local_addr_infos=None):
        """Create, bind and connect one socket (base_events._connect_sock)."""
        my_exceptions = []
        exceptions.append(my_exceptions)
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_addr_infos is not None:
                for lfamily, _, _, _, laddr in local_addr_infos:
                    if lfamily != family:
                        continue
                    try:
                        sock.bind(laddr)
                        break
                    except OSError as exc:
                        msg = (
                            f"error while attempting to bind on address {laddr!r}: "
                            f"{exc.strerror.lower()}"
                        )
                        my_exceptions.append(OSError(exc.errno, msg))
                else:
                    if my_exceptions:
                        raise my_exceptions.pop()
                    raise OSError(f"no matching local address with {family=} found")
            await self.sock_connect(sock, address)
            return sock
        except BaseException as exc:
            if isinstance(exc, OSError):
                my_exceptions.append(exc)
            if sock is not None:
                sock.close()
            raise
        finally:
            exceptions = my_exceptions = None

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None,
        interleave=None,
    ):
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sock is not None:
            _check_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            infos = await self._ensure_resolved(
                (host, port),
                family=family,
                type=socket.SOCK_STREAM,
                proto=proto,
                flags=flags,
                loop=self,
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            laddr_infos = None
            if local_addr is not None:
                laddr_infos = await self._ensure_resolved(
                    local_addr,
                    family=family,
                    type=socket.SOCK_STREAM,
                    proto=proto,
                    flags=flags,
                    loop=self,
                )
                if not laddr_infos:
                    raise OSError("getaddrinfo() returned empty list")
            if interleave:
                infos = _interleave_addrinfos(infos, interleave)
            errors = []
            if happy_eyeballs_delay is None:
                for addrinfo in infos:
                    try:
                        sock = await self._connect_sock(errors, addrinfo, laddr_infos)
                        break
                    except OSError:
                        continue
            else:
                sock, _, _ = await staggered.staggered_race(
                    (
                        functools.partial(self._connect_sock, errors, addrinfo, laddr_infos)
                        for addrinfo in infos
                    ),
                    happy_eyeballs_delay,
                    loop=self,
                )
            if sock is None:
                errors = [exc for sub in errors for exc in sub]
                try:
                    if len(errors) == 1:
                        raise errors[0]
                    model = str(errors[0])
                    if all(str(exc) == model for exc in errors):
                        raise errors[0]
                    raise OSError(
                        "Multiple exceptions: {}".format(", ".join(str(exc) for exc in errors))
                    )
                finally:
                    errors = None
        else:
            if sock is None:
                raise ValueError("host and port was not specified and no sock specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")

        transport, protocol = await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            sock = transport.get_extra_info("socket")
            _logger().debug(
                "%r connected to %s:%r: (%r, %r)", sock, host, port, transport, protocol
            )
        return transport, protocol

    async def create_unix_connection(
        self,
        protocol_factory,
        path=None,
        *,
        ssl=None,
        sock=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        assert server_hostname is None or isinstance(server_hostname, str)
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        else:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            if ssl_handshake_timeout is not None:
                raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
            if ssl_shutdown_timeout is not None:
                raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
            sock.setblocking(False)
        return await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )

    async def connect_accepted_socket(
        self,
        protocol_factory,
        sock,
        *,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"A Stream Socket was expected, got {sock!r}")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        _check_ssl_socket(sock)
        transport, protocol = await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            "",
            server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            sock = transport.get_extra_info("socket")
            _logger().debug("%r handled: (%r, %r)", sock, transport, protocol)
        return transport, protocol

    # -- serving -------------------------------------------------------------------------------

    async def _create_server_getaddrinfo(self, host, port, family, flags):
        infos = await self._ensure_resolved(
            (host, port), family=family, type=socket.SOCK_STREAM, flags=flags, loop=self
        )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    async def create_server(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        family=socket.AF_UNSPEC,
        flags=socket.AI_PASSIVE,
        sock=None,
        backlog=100,
        ssl=None,
        reuse_address=None,
        reuse_port=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
    ):
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sock is not None:
            _check_ssl_socket(sock)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os.name == "posix" and sys.platform != "cygwin"
            if host == "":
                hosts = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = host
            lookups = [
                self._create_server_getaddrinfo(h, port, family=family, flags=flags) for h in hosts
            ]
            infos = await tasks.gather(*lookups)
            infos = set(itertools.chain.from_iterable(infos))
            sockets = []
            completed = False
            try:
                # The socket module as asyncio.base_events sees it: code that patches
                # asyncio's (CPython's test_events does) patches ours too.
                socket_module = base_events.socket
                for af, socktype, proto, _canonname, sa in infos:
                    try:
                        sock = socket_module.socket(af, socktype, proto)
                    except OSError:
                        if self.get_debug():
                            _logger().warning(
                                "create_server() failed to create socket.socket(%r, %r, %r)",
                                af,
                                socktype,
                                proto,
                                exc_info=True,
                            )
                        continue
                    sockets.append(sock)
                    if reuse_address:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                    if reuse_port:
                        _set_reuseport(sock)
                    if _HAS_IPV6 and af == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                    try:
                        sock.bind(sa)
                    except OSError as err:
                        raise OSError(
                            err.errno,
                            f"error while attempting to bind on address {sa!r}: "
                            f"{err.strerror.lower()}",
                        ) from None
                completed = True
            finally:
                if not completed:
                    for s in sockets:
                        s.close()
        else:
            if sock is None:
                raise ValueError("Neither host/port nor sock were specified")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]

        for s in sockets:
            s.setblocking(False)
        server = Server(
            self,
            sockets,
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        if start_serving:
            server._start_serving()
            # Let the listening sockets be registered before returning (as asyncio does).
            await tasks.sleep(0)
        if self.get_debug():
            _logger().info("%r is serving", server)
        return server

    async def create_unix_server(
        self,
        protocol_factory,
        path=None,
        *,
        sock=None,
        backlog=100,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
    ):
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            # Through asyncio.unix_events' view of the socket module (patched by CPython's
            # tests, normally the real one).
            sock = unix_events.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # A stale socket file from an earlier run is removed (abstract names have none).
            if path[0] not in (0, "\x00"):
                try:
                    if stat.S_ISSOCK(os.stat(path).st_mode):
                        os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    _logger().error("Unable to check or remove stale UNIX socket %r: %r", path, err)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
                raise
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("path was not specified, and no sock specified")
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")
        sock.setblocking(False)
        server = Server(
            self,
            [sock],
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        if start_serving:
            server._start_serving()
            await tasks.sleep(0)
        return server

    def _start_serving(
        self,
        protocol_factory,
        sock,
        sslcontext=None,
        server=None,
        backlog=100,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
    ):
        self._add_reader(
            sock.fileno(),
            self._accept_connection,
            protocol_factory,
            sock,
            sslcontext,
            server,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )

    def _stop_serving(self, sock):
        self._remove_reader(sock.fileno())
        sock.close()

    def _accept_connection(
        self,
        protocol_factory,
        sock,
        sslcontext=None,
        server=None,
        backlog=100,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
    ):
        """Accepts up to ``backlog`` waiting connections (selector_events._accept_connection).
        Out of fds or memory: report, stop accepting for a second, then resume."""
        debug = self.get_debug()
        # A plain IPv4/IPv6 socket is accepted natively: the peer address stays in Rust until
        # asked for (get_extra_info("peername")), with the same value.
        native = (
            type(sock) is socket.socket
            and sock.family in _INET_FAMILIES
            and getattr(self._make_socket_transport, "__func__", None)
            is NetworkMixin._make_socket_transport
        )
        for _ in range(backlog):
            try:
                if native:
                    accepted = _accept_inet(sock.fileno())
                    if accepted is None:
                        return None
                    fd, peer = accepted
                    try:
                        conn = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
                    except BaseException:
                        os.close(fd)
                        raise
                    addr = None
                else:
                    conn, addr = sock.accept()
                    peer = None
                if debug:
                    shown = addr if peer is None else peer.address()
                    _logger().debug("%r got a new connection from %r: %r", server, shown, conn)
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return None
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.call_exception_handler(
                        {
                            "message": "socket.accept() out of system resource",
                            "exception": exc,
                            "socket": trsock.TransportSocket(sock),
                        }
                    )
                    self._remove_reader(sock.fileno())
                    self.call_later(
                        constants.ACCEPT_RETRY_DELAY,
                        self._start_serving,
                        protocol_factory,
                        sock,
                        sslcontext,
                        server,
                        backlog,
                        ssl_handshake_timeout,
                        ssl_shutdown_timeout,
                    )
                    return None
                raise  # The loop reports it and keeps serving.
            else:
                if sslcontext:
                    extra = {"peername": addr if peer is None else peer.address()}
                    self.create_task(
                        self._accept_connection2(
                            protocol_factory,
                            conn,
                            extra,
                            sslcontext,
                            server,
                            ssl_handshake_timeout,
                            ssl_shutdown_timeout,
                        )
                    )
                else:
                    self._accept_plain(protocol_factory, conn, addr, server, peer)
        return None

    def _accept_plain(self, protocol_factory, conn, addr, server, peer):
        """A plain accepted connection gets its transport at once: no task and no waiter
        (asyncio makes both, and only reports a failure here in debug mode). With ``peer``
        (a natively accepted connection) the transport builds its extra info when asked."""
        protocol = None
        try:
            protocol = protocol_factory()
            if peer is None:
                extra = {"peername": addr}
                self._make_socket_transport(conn, protocol, extra=extra, server=server)
            else:
                self._make_socket_transport(conn, protocol, server=server, peer=peer)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn.close()
            self._report_accept_error(exc, protocol, None)

    async def _accept_connection2(
        self,
        protocol_factory,
        conn,
        extra,
        sslcontext,
        server=None,
        ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
        ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT,
    ):
        """A TLS connection: its transport, then the handshake awaited in a task
        (selector_events._accept_connection2)."""
        protocol = None
        transport = None
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            transport = self._make_ssl_transport(
                conn,
                protocol,
                sslcontext,
                waiter=waiter,
                server_side=True,
                extra=extra,
                server=server,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
            try:
                await waiter
            except BaseException:
                transport.close()
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report_accept_error(exc, protocol, transport)

    def _report_accept_error(self, exc, protocol, transport):
        """A failed incoming connection is reported in debug mode only, as asyncio does."""
        if not self.get_debug():
            return
        context = {
            "message": "Error on transport creation for incoming connection",
            "exception": exc,
        }
        if protocol is not None:
            context["protocol"] = protocol
        if transport is not None:
            context["transport"] = transport
        self.call_exception_handler(context)

    # -- datagrams -----------------------------------------------------------------------------

    async def create_datagram_endpoint(
        self,
        protocol_factory,
        local_addr=None,
        remote_addr=None,
        *,
        family=0,
        proto=0,
        flags=0,
        reuse_port=None,
        allow_broadcast=None,
        sock=None,
    ):
        """A datagram endpoint (base_events.create_datagram_endpoint): bound, connected, both
        or neither; one socket per candidate address pair until one works."""
        r_addr = None
        if sock is not None:
            if sock.type != socket.SOCK_DGRAM:
                raise ValueError(f"A UDP Socket was expected, got {sock!r}")
            if (
                local_addr
                or remote_addr
                or family
                or proto
                or flags
                or reuse_port
                or allow_broadcast
            ):
                opts = dict(
                    local_addr=local_addr,
                    remote_addr=remote_addr,
                    family=family,
                    proto=proto,
                    flags=flags,
                    reuse_port=reuse_port,
                    allow_broadcast=allow_broadcast,
                )
                problems = ", ".join(f"{k}={v}" for k, v in opts.items() if v)
                raise ValueError(
                    "socket modifier keyword arguments can not be used "
                    f"when sock is specified. ({problems})"
                )
            sock.setblocking(False)
        else:
            if not (local_addr or remote_addr):
                if family == 0:
                    raise ValueError("unexpected address family")
                addr_pairs_info = (((family, proto), (None, None)),)
            elif hasattr(socket, "AF_UNIX") and family == socket.AF_UNIX:
                for addr in (local_addr, remote_addr):
                    if addr is not None and not isinstance(addr, str):
                        raise TypeError("string is expected")
                if local_addr and local_addr[0] not in (0, "\x00"):
                    try:
                        if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                            os.remove(local_addr)
                    except FileNotFoundError:
                        pass
                    except OSError as err:
                        _logger().error(
                            "Unable to check or remove stale UNIX socket %r: %r", local_addr, err
                        )
                addr_pairs_info = (((family, proto), (local_addr, remote_addr)),)
            else:
                addr_infos = {}  # (family, proto) -> [local address, remote address]
                for idx, addr in ((0, local_addr), (1, remote_addr)):
                    if addr is None:
                        continue
                    if not (isinstance(addr, tuple) and len(addr) == 2):
                        raise TypeError("2-tuple is expected")
                    infos = await self._ensure_resolved(
                        addr,
                        family=family,
                        type=socket.SOCK_DGRAM,
                        proto=proto,
                        flags=flags,
                        loop=self,
                    )
                    if not infos:
                        raise OSError("getaddrinfo() returned empty list")
                    for fam, _, pro, _, address in infos:
                        addr_infos.setdefault((fam, pro), [None, None])[idx] = address
                addr_pairs_info = [
                    (key, pair)
                    for key, pair in addr_infos.items()
                    if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
                ]
                if not addr_pairs_info:
                    raise ValueError("can not get address information")
            errors = []
            for (fam, pro), (local_address, remote_address) in addr_pairs_info:
                sock = None
                r_addr = None
                try:
                    sock = socket.socket(family=fam, type=socket.SOCK_DGRAM, proto=pro)
                    if reuse_port:
                        _set_reuseport(sock)
                    if allow_broadcast:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.setblocking(False)
                    if local_addr:
                        sock.bind(local_address)
                    if remote_addr:
                        if not allow_broadcast:
                            await self.sock_connect(sock, remote_address)
                        r_addr = remote_address
                except OSError as exc:
                    if sock is not None:
                        sock.close()
                    errors.append(exc)
                except BaseException:
                    if sock is not None:
                        sock.close()
                    raise
                else:
                    break
            else:
                raise errors[0]

        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_datagram_transport(sock, protocol, r_addr, waiter)
        if self.get_debug():
            if local_addr:
                _logger().info(
                    "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                    local_addr,
                    remote_addr,
                    transport,
                    protocol,
                )
            else:
                _logger().debug(
                    "Datagram endpoint remote_addr=%r created: (%r, %r)",
                    remote_addr,
                    transport,
                    protocol,
                )
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    # -- pipes ---------------------------------------------------------------------------------

    async def connect_read_pipe(self, protocol_factory, pipe):
        return await self._connect_pipe(
            self._make_read_pipe_transport, protocol_factory, pipe, "Read"
        )

    async def connect_write_pipe(self, protocol_factory, pipe):
        return await self._connect_pipe(
            self._make_write_pipe_transport, protocol_factory, pipe, "Write"
        )

    async def _connect_pipe(self, make_transport, protocol_factory, pipe, which):
        """base_events.connect_read_pipe/connect_write_pipe: the transport, once the protocol
        has seen connection_made."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = make_transport(pipe, protocol, waiter)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            _logger().debug(
                "%s pipe %r connected: (%r, %r)", which, pipe.fileno(), transport, protocol
            )
        return transport, protocol

    # -- sendfile over a transport -------------------------------------------------------------

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Send a file over a transport (base_events.sendfile): os.sendfile on the socket when
        the transport allows it, else read and write through the transport."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        mode = getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)
        if mode is constants._SendfileMode.UNSUPPORTED:
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if mode is constants._SendfileMode.TRY_NATIVE:
            try:
                return await self._sendfile_native(transport, file, offset, count)
            except exceptions.SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(
                f"fallback is disabled and native sendfile is not "
                f"supported for transport {transport!r}"
            )
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(self, transp, file, offset, count):
        """selector_events._sendfile_native: the transport stops reading and drains, then the
        socket is handed to sock_sendfile."""
        self._forget_transport(transp._sock_fd)
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        try:
            return await self.sock_sendfile(transp._sock, file, offset, count, fallback=False)
        finally:
            transp._reset_empty_waiter()
            if resume_reading:
                transp.resume_reading()
            transp._core._register()

    async def _sendfile_fallback(self, transp, file, offset, count):
        from asyncio.base_events import _SendfileFallbackProtocol

        if offset:
            file.seek(offset)
        blocksize = min(count, 16384) if count else 16384
        buf = bytearray(blocksize)
        total_sent = 0
        proto = _SendfileFallbackProtocol(transp)
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        return total_sent
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total_sent
                await proto.drain()
                transp.write(view[:read])
                total_sent += read
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)
            await proto.restore()
