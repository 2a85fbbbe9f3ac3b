"""SockOpsMixin: the loop's sock_* coroutines, getaddrinfo/getnameinfo and sock_sendfile.

Mixed into ``ferroloop.Loop``; the data paths run in Rust (``ferroloop._ferroloop``, module
``sock_ops``): each coroutine calls one Rust function, which makes the system call at once and,
if it would block, returns a future of the loop whose completion is driven by readiness (the
loop watches the fd natively and retries the call in Rust: no Handle, no Python callback). Here
are only the coroutines themselves (so ``create_task`` takes them) and the cold paths: argument
checks, address resolution, the sendfile orchestration.
"""

from __future__ import annotations

import io
import os
import socket
from asyncio import constants, exceptions, unix_events
from asyncio.log import logger

from ._ferroloop import (
    _getaddrinfo_numeric,
    _getnameinfo_numeric,
    _ipaddr_info,
    _sock_accept,
    _sock_check,
    _sock_connect,
    _sock_recv,
    _sock_recv_into,
    _sock_recvfrom,
    _sock_recvfrom_into,
    _sock_sendall,
    _sock_sendfile_check,
    _sock_sendfile_native_impl,
    _sock_sendto,
)

_HAS_IPv6 = hasattr(socket, "AF_INET6")


class SockOpsMixin:
    __slots__ = ()

    # -- low-level socket operations (selector_events.BaseSelectorEventLoop.sock_*) ------------
    # Each Rust function returns (future, None) when the operation waits for readiness, or
    # (None, result) when it completed at once.

    async def sock_recv(self, sock, n):
        """Receive up to ``n`` bytes from the non-blocking socket ``sock``."""
        fut, result = _sock_recv(self, sock, n)
        if fut is None:
            return result
        return await fut

    async def sock_recv_into(self, sock, buf):
        """Receive data from ``sock`` into the writable buffer ``buf``; return the byte count."""
        fut, result = _sock_recv_into(self, sock, buf)
        if fut is None:
            return result
        return await fut

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram of up to ``bufsize`` bytes: ``(data, address)``."""
        fut, result = _sock_recvfrom(self, sock, bufsize)
        if fut is None:
            return result
        return await fut

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive a datagram into ``buf`` (``nbytes`` of it, all if 0): ``(nbytes, address)``."""
        fut, result = _sock_recvfrom_into(self, sock, buf, nbytes)
        if fut is None:
            return result
        return await fut

    async def sock_sendall(self, sock, data):
        """Send all of ``data`` to the connected socket ``sock``."""
        fut, result = _sock_sendall(self, sock, data)
        if fut is None:
            return result
        return await fut

    async def sock_sendto(self, sock, data, address):
        """Send the datagram ``data`` to ``address``; return the number of bytes sent."""
        fut, result = _sock_sendto(self, sock, data, address)
        if fut is None:
            return result
        return await fut

    async def sock_connect(self, sock, address):
        """Connect ``sock`` to ``address`` (resolved first for IPv4/IPv6 sockets).

        Mirrors selector_events.BaseSelectorEventLoop.sock_connect.
        """
        _sock_check(self, sock)
        if sock.family == socket.AF_INET or (_HAS_IPv6 and sock.family == socket.AF_INET6):
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto, loop=self
            )
            _, _, _, _, address = resolved[0]
        fut, result = _sock_connect(self, sock, address)
        if fut is None:
            return result
        return await fut

    async def sock_accept(self, sock):
        """Accept a connection on the listening socket ``sock``: ``(conn, address)``, with
        ``conn`` non-blocking."""
        fut, result = _sock_accept(self, sock)
        if fut is None:
            return result
        return await fut

    # -- sock_sendfile (base_events.BaseEventLoop.sock_sendfile) -------------------------------

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Send ``file`` (from ``offset``, ``count`` bytes or to its end) over ``sock`` with
        os.sendfile, or by reading and sending if that is not possible and ``fallback``."""
        _sock_sendfile_check(self, sock)
        self._check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        """Mirrors unix_events._UnixSelectorEventLoop._sock_sendfile_native: the cases where
        os.sendfile cannot be used raise SendfileNotAvailableError; the send loop is Rust."""
        # The os module as asyncio's unix_events sees it (CPython's tests patch that name).
        if not hasattr(unix_events.os, "sendfile"):
            raise exceptions.SendfileNotAvailableError("os.sendfile() is not available")
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        try:
            fsize = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file")
        blocksize = count if count else fsize
        if not blocksize:
            return 0  # an empty file
        fut = self.create_future()
        self._sock_sendfile_native_impl(fut, None, sock, fileno, offset, count, blocksize, 0)
        return await fut

    def _sock_sendfile_native_impl(
        self, fut, registered_fd, sock, fileno, offset, count, blocksize, total_sent
    ):
        """One os.sendfile step (asyncio's method of the same name and arguments); the steps
        after the first run as the socket's writer until ``fut`` is done."""
        _sock_sendfile_native_impl(
            self, fut, registered_fd, sock, fileno, offset, count, blocksize, total_sent
        )

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        """Read blocks of the file in the executor and send them with sock_sendall; the file
        position ends after what was sent. Mirrors base_events.BaseEventLoop.
        _sock_sendfile_fallback."""
        if offset:
            file.seek(offset)
        readbuffer = constants.SENDFILE_FALLBACK_READBUFFER_SIZE
        blocksize = min(count, readbuffer) if count else readbuffer
        buf = bytearray(blocksize)
        total_sent = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break  # end of file
                await self.sock_sendall(sock, view[:read])
                total_sent += read
            return total_sent
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)

    def _check_sendfile_params(self, sock, file, offset, count):
        """Mirrors base_events.BaseEventLoop._check_sendfile_params."""
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not sock.type == socket.SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")
        if not isinstance(offset, int):
            raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
        if offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")

    # -- name resolution -----------------------------------------------------------------------

    def _getaddrinfo_debug(self, host, port, family, type, proto, flags):
        """socket.getaddrinfo with debug logging of the query, its result and its duration.
        Mirrors base_events.BaseEventLoop._getaddrinfo_debug."""
        parts = [f"{host}:{port!r}"]
        if family:
            parts.append(f"family={family!r}")
        if type:
            parts.append(f"type={type!r}")
        if proto:
            parts.append(f"proto={proto!r}")
        if flags:
            parts.append(f"flags={flags!r}")
        query = ", ".join(parts)
        logger.debug("Get address info %s", query)
        t0 = self.time()
        addrinfo = socket.getaddrinfo(host, port, family, type, proto, flags)
        dt = self.time() - t0
        msg = f"Getting address info {query} took {dt * 1e3:.3f}ms: {addrinfo!r}"
        if dt >= self.slow_callback_duration:
            logger.info(msg)
        else:
            logger.debug(msg)
        return addrinfo

    def _resolves_inline(self):
        # The executor path raises for a closed loop or a shut-down executor, and logs in debug
        # mode: those cases take it.
        return not (self.get_debug() or self.is_closed() or self._executor_shutdown_called)

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """socket.getaddrinfo in the default executor, as asyncio. A numeric host (which needs
        no lookup) is answered on the loop thread with the same call."""
        if self._resolves_inline():
            infos = _getaddrinfo_numeric(host, port, family, type, proto, flags)
            if infos is not None:
                return infos
        getaddr_func = self._getaddrinfo_debug if self.get_debug() else socket.getaddrinfo
        return await self.run_in_executor(
            None, getaddr_func, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr, flags=0):
        """socket.getnameinfo in the default executor, as asyncio; answered on the loop thread
        when the flags ask for a numeric host and service (no reverse lookup)."""
        if self._resolves_inline():
            result = _getnameinfo_numeric(sockaddr, flags)
            if result is not None:
                return result
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    async def _ensure_resolved(
        self, address, *, family=0, type=socket.SOCK_STREAM, proto=0, flags=0, loop
    ):
        """``[addrinfo]`` for ``address``: built directly when its host is a numeric IP,
        else from ``loop.getaddrinfo``. Mirrors base_events.BaseEventLoop._ensure_resolved."""
        host, port = address[:2]
        info = _ipaddr_info(host, port, family, type, proto, *address[2:])
        if info is not None:
            return [info]
        return await loop.getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )
