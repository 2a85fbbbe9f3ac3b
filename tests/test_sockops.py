"""The loop's low-level socket coroutines (sock_recv, sock_recv_into, sock_recvfrom,
sock_recvfrom_into, sock_sendall, sock_sendto, sock_connect, sock_accept), sock_sendfile and name
resolution (getaddrinfo, getnameinfo, _ensure_resolved): same behaviour on asyncio's loop and on
ferroloop's, over TCP, UDP and unix sockets on this machine."""

from __future__ import annotations

import asyncio
import errno
import gc
import io
import logging
import os
import re
import socket
import ssl
import tempfile
import warnings
from unittest import mock

import pytest

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")

# Only a guard against a hang: no test depends on how long anything takes.
TIMEOUT = 20

DATA = bytes(range(256)) * 800  # 200 KiB, every byte value, so offsets are visible


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_fd_leak():
    """Every test leaves as many open fds as it found (sockets, files, loops)."""
    gc.collect()
    before = fd_count()
    yield
    gc.collect()
    assert fd_count() == before


@pytest.fixture
def lp(loop):
    """The parametrized loop, debug mode off (the suite also runs under PYTHONASYNCIODEBUG)."""
    loop.set_debug(False)
    return loop


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


async def turns(n=3):
    """Let the loop run a few iterations (done callbacks, readers)."""
    for _ in range(n):
        await asyncio.sleep(0)


def drive(coro):
    """Run a coroutine's first step outside any loop: what it returned or raised."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return ("returned", stop.value)
    except BaseException as exc:
        return ("raised", type(exc), str(exc))
    coro.close()
    return ("suspended",)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def make_tcp_pair():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.setblocking(False)
    server.setblocking(False)
    return client, server


@pytest.fixture
def tcp_pair():
    client, server = make_tcp_pair()
    yield client, server
    client.close()
    server.close()


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


def fill_send_buffer(sock):
    """Send until the kernel takes no more: the next send would block."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    size = 65536
    while size >= 1:
        try:
            while True:
                sock.send(b"x" * size)
        except BlockingIOError:
            size //= 2


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


class Relay:
    """Wraps a socket, counting and optionally failing calls to one method with
    BlockingIOError (the way asyncio's own tests simulate a busy socket)."""

    def __init__(self, sock, method, fail_times):
        self._sock = sock
        self._method = method
        self._fail_times = fail_times
        self.calls = []
        self.family = sock.family
        self.type = sock.type
        self.proto = sock.proto

    def __getattr__(self, name):
        attr = getattr(self._sock, name)
        if name != self._method:
            return attr

        def method(*args):
            self.calls.append(args)
            if self._fail_times is None or len(self.calls) <= self._fail_times:
                raise BlockingIOError
            return attr(*args)

        return method


# -- they are coroutines --------------------------------------------------------------------------


def test_sock_methods_are_coroutines(lp, pair, listener):
    a, b = pair
    made = [
        lp.sock_recv(a, 1),
        lp.sock_recv_into(a, bytearray(1)),
        lp.sock_recvfrom(a, 1),
        lp.sock_recvfrom_into(a, bytearray(1)),
        lp.sock_sendall(a, b""),
        lp.sock_sendto(a, b"", None),
        lp.sock_connect(a, "nowhere"),
        lp.sock_accept(listener),
        lp.sock_sendfile(a, io.BytesIO()),
        lp.getaddrinfo("127.0.0.1", 80),
        lp.getnameinfo(("127.0.0.1", 80)),
    ]
    try:
        assert all(asyncio.iscoroutine(c) for c in made)
    finally:
        for c in made:
            c.close()


def test_create_task_takes_sock_accept(lp, listener):
    async def main():
        task = lp.create_task(lp.sock_accept(listener))
        client = socket.socket()
        client.setblocking(False)
        with client:
            await lp.sock_connect(client, listener.getsockname())
            conn, addr = await task
            with conn:
                return addr == client.getsockname()

    assert run(lp, main()) is True


# -- recv / recv_into / sendall on a stream ------------------------------------------------------


def test_recv_at_once_and_after_waiting(lp, pair):
    a, b = pair

    async def main():
        b.send(b"now")
        first = await lp.sock_recv(a, 100)
        task = asyncio.ensure_future(lp.sock_recv(a, 100))
        await turns()
        waited = task.done()
        await lp.sock_sendall(b, b"later")
        return first, waited, await task

    assert run(lp, main()) == (b"now", False, b"later")


def test_recv_into_buffer_slices(lp, pair):
    a, b = pair
    data = bytearray(16)

    async def main():
        with memoryview(data) as buf:
            task = asyncio.ensure_future(lp.sock_recv_into(a, buf[:8]))
            await turns()
            await lp.sock_sendall(b, b"abcdefghijkl")
            n1 = await task
            n2 = await lp.sock_recv_into(a, buf[n1:])
        return n1, n2

    assert run(lp, main()) == (8, 4)
    assert bytes(data) == b"abcdefghijkl\0\0\0\0"


def test_recv_eof_gives_empty_bytes(lp, pair):
    a, b = pair

    async def main():
        task = asyncio.ensure_future(lp.sock_recv(a, 100))
        await turns()
        b.shutdown(socket.SHUT_WR)
        return await task

    assert run(lp, main()) == b""


def test_sendall_accepts_buffers(lp, pair):
    a, b = pair

    async def main():
        await lp.sock_sendall(b, bytearray(b"one"))
        await lp.sock_sendall(b, memoryview(b"two"))
        await lp.sock_sendall(b, b"")
        return await lp.sock_recv(a, 100)

    assert run(lp, main()) == b"onetwo"


def test_sendall_bad_data_type(lp, pair):
    a, b = pair
    with pytest.raises(TypeError):
        run(lp, lp.sock_sendall(a, "text"))


def test_sendall_partial_sends_with_full_buffer(lp, tcp_pair):
    client, server = tcp_pair
    payload = os.urandom(1 << 20)

    async def main():
        fill_send_buffer(client)
        received = bytearray()

        async def reader():
            while True:
                chunk = await lp.sock_recv(server, 65536)
                if not chunk:
                    return
                received.extend(chunk)

        task = asyncio.ensure_future(reader())
        result = await lp.sock_sendall(client, payload)
        client.shutdown(socket.SHUT_WR)
        await task
        return result, bytes(received)

    result, received = run(lp, main())
    assert result is None
    filler = len(received) - len(payload)
    assert filler > 0
    assert received[:filler] == b"x" * filler
    assert received[filler:] == payload


def test_concurrent_recv_and_sendall_both_ways(lp, tcp_pair):
    client, server = tcp_pair
    up = os.urandom(300_000)
    down = os.urandom(300_000)

    async def pump(sock, data):
        await lp.sock_sendall(sock, data)
        sock.shutdown(socket.SHUT_WR)

    async def drain(sock):
        out = bytearray()
        while chunk := await lp.sock_recv(sock, 32768):
            out.extend(chunk)
        return bytes(out)

    async def main():
        return await asyncio.gather(
            pump(client, up), pump(server, down), drain(server), drain(client)
        )

    _, _, got_up, got_down = run(lp, main())
    assert got_up == up
    assert got_down == down


# -- a peer that resets --------------------------------------------------------------------------


def reset(sock):
    """Close with an RST (SO_LINGER on, zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    sock.close()


def test_peer_reset_fails_pending_recv(lp):
    client, server = make_tcp_pair()

    async def main():
        task = asyncio.ensure_future(lp.sock_recv(client, 100))
        await turns()
        reset(server)
        return await asyncio.gather(task, return_exceptions=True)

    try:
        (exc,) = run(lp, main())
        assert lp.remove_reader(client) is False
    finally:
        client.close()
    assert type(exc) is ConnectionResetError
    assert exc.errno == errno.ECONNRESET


def test_peer_reset_fails_pending_sendall(lp):
    client, server = make_tcp_pair()

    async def main():
        fill_send_buffer(client)
        task = asyncio.ensure_future(lp.sock_sendall(client, b"y" * 100_000))
        await turns()
        reset(server)
        return await asyncio.gather(task, return_exceptions=True)

    try:
        (exc,) = run(lp, main())
        assert lp.remove_writer(client) is False
    finally:
        client.close()
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError))


def test_recv_after_reset_raises_at_once(lp):
    client, server = make_tcp_pair()
    server.send(b"")
    reset(server)
    try:
        with pytest.raises(ConnectionResetError):
            run(lp, lp.sock_recv(client, 10))
    finally:
        client.close()


# -- connect / accept ----------------------------------------------------------------------------


def test_tcp_connect_accept_roundtrip(lp, listener):
    async def main():
        accept = asyncio.ensure_future(lp.sock_accept(listener))
        await turns()
        pending = not accept.done()
        client = socket.socket()
        client.setblocking(False)
        with client:
            result = await lp.sock_connect(client, listener.getsockname())
            conn, addr = await accept
            with conn:
                await lp.sock_sendall(client, b"ping")
                got = await lp.sock_recv(conn, 10)
                await lp.sock_sendall(conn, b"pong")
                back = await lp.sock_recv(client, 10)
                return (
                    pending,
                    result,
                    addr == client.getsockname(),
                    conn.gettimeout(),
                    type(conn) is socket.socket,
                    got,
                    back,
                )

    assert run(lp, main()) == (True, None, True, 0.0, True, b"ping", b"pong")


def test_accept_when_a_connection_is_queued(lp, listener):
    client = socket.create_connection(listener.getsockname())
    try:
        conn, addr = run(lp, lp.sock_accept(listener))
        conn.close()
        assert addr == client.getsockname()
        assert lp.remove_reader(listener) is False
    finally:
        client.close()


@needs_ipv6
def test_connect_ipv6(lp):
    with socket.socket(socket.AF_INET6) as lsn:
        lsn.bind(("::1", 0))
        lsn.listen()
        lsn.setblocking(False)
        client = socket.socket(socket.AF_INET6)
        client.setblocking(False)

        async def main():
            accept = asyncio.ensure_future(lp.sock_accept(lsn))
            await lp.sock_connect(client, lsn.getsockname()[:2])
            conn, addr = await accept
            conn.close()
            return addr == client.getsockname()

        with client:
            assert run(lp, main()) is True


def test_connect_resolves_host_name(lp, listener):
    port = listener.getsockname()[1]
    client = socket.socket()
    client.setblocking(False)

    async def main():
        await lp.sock_connect(client, ("localhost", port))
        conn, _ = await lp.sock_accept(listener)
        conn.close()
        return client.getpeername()

    with client:
        assert run(lp, main()) == ("127.0.0.1", port)


def test_connect_refused(lp):
    client = socket.socket()
    client.setblocking(False)
    with client:
        with pytest.raises(ConnectionRefusedError) as info:
            run(lp, lp.sock_connect(client, ("127.0.0.1", unused_port())))
        assert info.value.errno == errno.ECONNREFUSED
        assert lp.remove_writer(client) is False


def test_connect_bad_address(lp):
    client = socket.socket()
    client.setblocking(False)
    with client:
        with pytest.raises(TypeError):
            run(lp, lp.sock_connect(client, "not a tuple"))


@pytest.fixture
def unix_path():
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        yield os.path.join(d, "s")


def test_unix_connect_accept_recv_sendall(lp, unix_path):
    lsn = socket.socket(socket.AF_UNIX)
    lsn.bind(unix_path)
    lsn.listen()
    lsn.setblocking(False)
    client = socket.socket(socket.AF_UNIX)
    client.setblocking(False)

    async def main():
        accept = asyncio.ensure_future(lp.sock_accept(lsn))
        await turns()
        await lp.sock_connect(client, unix_path)
        conn, addr = await accept
        with conn:
            await lp.sock_sendall(conn, b"hello unix")
            buf = bytearray(32)
            n = await lp.sock_recv_into(client, buf)
            return addr, conn.gettimeout(), bytes(buf[:n])

    with lsn, client:
        assert run(lp, main()) == ("", 0.0, b"hello unix")


def test_unix_datagram(lp, unix_path):
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind(unix_path)
    a.setblocking(False)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)

    async def main():
        task = asyncio.ensure_future(lp.sock_recvfrom(a, 100))
        await turns()
        n = await lp.sock_sendto(b, b"dgram", unix_path)
        return n, await task

    with a, b:
        assert run(lp, main()) == (5, (b"dgram", None))


# -- UDP ----------------------------------------------------------------------------------------


def test_udp_sendto_recvfrom(lp, udp_pair):
    a, b = udp_pair

    async def main():
        task = asyncio.ensure_future(lp.sock_recvfrom(b, 100))
        await turns()
        n = await lp.sock_sendto(a, b"datagram", b.getsockname())
        return n, await task

    n, (data, addr) = run(lp, main())
    assert (n, data, addr) == (8, b"datagram", a.getsockname())


def test_udp_recvfrom_into(lp, udp_pair):
    a, b = udp_pair

    async def main():
        buf = bytearray(16)
        task = asyncio.ensure_future(lp.sock_recvfrom_into(b, buf))
        await turns()
        await lp.sock_sendto(a, b"0123456789", b.getsockname())
        first = await task
        # nbytes limits the read (the rest of the datagram is dropped).
        small = bytearray(16)
        await lp.sock_sendto(a, b"abcdefghij", b.getsockname())
        second = await lp.sock_recvfrom_into(b, small, 4)
        return first, bytes(buf[:10]), second, bytes(small)

    (n1, addr1), data1, (n2, addr2), data2 = run(lp, main())
    assert (n1, data1) == (10, b"0123456789")
    assert (n2, data2) == (4, b"abcd" + b"\0" * 12)
    assert addr1 == addr2 == a.getsockname()


def test_udp_recvfrom_into_nbytes_too_big(lp, udp_pair):
    a, b = udp_pair
    with pytest.raises(ValueError, match="nbytes is greater than the length of the buffer"):
        run(lp, lp.sock_recvfrom_into(b, bytearray(4), 10))


def test_sendto_retries_with_flags_when_blocked(lp, udp_pair):
    # The retry passes flags: sock.sendto(data, 0, address) (as asyncio's _sock_sendto).
    a, b = udp_pair
    relay = Relay(a, "sendto", fail_times=1)

    async def main():
        n = await lp.sock_sendto(relay, b"retry", b.getsockname())
        data, _ = await lp.sock_recvfrom(b, 100)
        return n, data

    assert run(lp, main()) == (5, b"retry")
    assert relay.calls == [(b"retry", b.getsockname()), (b"retry", 0, b.getsockname())]
    assert lp.remove_writer(a) is False


def test_sendto_unbound_address_error(lp, udp_pair):
    a, _ = udp_pair
    with pytest.raises(TypeError):
        run(lp, lp.sock_sendto(a, b"x", "bad address"))


# -- cancellation --------------------------------------------------------------------------------


def pending_op(kind, lp, stack):
    """Start operation ``kind`` so that it must wait; return (coroutine, fd, is_writer)."""
    if kind in ("recv", "recv_into"):
        a, b = socket.socketpair()
        stack.extend([a, b])
        a.setblocking(False)
        if kind == "recv":
            return lp.sock_recv(a, 10), a.fileno(), False
        return lp.sock_recv_into(a, bytearray(10)), a.fileno(), False
    if kind in ("recvfrom", "recvfrom_into", "sendto"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stack.append(s)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        if kind == "recvfrom":
            return lp.sock_recvfrom(s, 10), s.fileno(), False
        if kind == "recvfrom_into":
            return lp.sock_recvfrom_into(s, bytearray(10)), s.fileno(), False
        relay = Relay(s, "sendto", fail_times=None)
        return lp.sock_sendto(relay, b"x", s.getsockname()), s.fileno(), True
    if kind == "accept":
        s = socket.socket()
        stack.append(s)
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.setblocking(False)
        return lp.sock_accept(s), s.fileno(), False
    if kind == "sendall":
        client, server = make_tcp_pair()
        stack.extend([client, server])
        fill_send_buffer(client)
        return lp.sock_sendall(client, b"z" * 10000), client.fileno(), True
    if kind == "connect":
        # connect() says "in progress" on a socket that never becomes writable.
        client, server = make_tcp_pair()
        stack.extend([client, server])
        fill_send_buffer(client)
        relay = Relay(client, "connect", fail_times=None)
        relay.family = socket.AF_UNIX  # no address resolution
        return lp.sock_connect(relay, "somewhere"), client.fileno(), True
    if kind == "sendfile":
        client, server = make_tcp_pair()
        stack.extend([client, server])
        fill_send_buffer(client)
        f = tempfile.TemporaryFile()
        stack.append(f)
        f.write(DATA)
        f.seek(0)
        return lp.sock_sendfile(client, f), client.fileno(), True
    raise AssertionError(kind)


CANCELLABLE = [
    "recv",
    "recv_into",
    "recvfrom",
    "recvfrom_into",
    "sendto",
    "accept",
    "sendall",
    "connect",
    "sendfile",
]


@pytest.mark.parametrize("kind", CANCELLABLE)
def test_cancel_pending_op_removes_watch(lp, kind):
    stack = []
    try:
        coro, fd, is_writer = pending_op(kind, lp, stack)

        async def main():
            task = asyncio.ensure_future(coro)
            await turns()
            assert not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await turns()
            return task.cancelled()

        assert run(lp, main()) is True
        # Nothing is left watching the fd.
        assert lp.remove_reader(fd) is False
        assert lp.remove_writer(fd) is False
        # And the fd can be watched again.
        lp.add_reader(fd, lambda: None)
        assert lp.remove_reader(fd) is True
    finally:
        for obj in stack:
            obj.close()


def test_cancelled_recv_leaves_the_next_recv_watching(lp, pair):
    # The second recv replaces the first one's reader before the first one's done callback
    # runs: that callback must not remove the second's reader.
    a, b = pair

    async def main():
        first = asyncio.ensure_future(lp.sock_recv(a, 100))
        await turns()
        first.cancel()
        lp.call_soon(b.send, b"for the second")
        data = await lp.sock_recv(a, 100)
        await asyncio.gather(first, return_exceptions=True)
        return first.cancelled(), data

    assert run(lp, main()) == (True, b"for the second")
    assert lp.remove_reader(a) is False


def test_cancelled_sendall_leaves_the_next_sendall_watching(lp, tcp_pair):
    client, server = tcp_pair

    async def main():
        fill_send_buffer(client)
        first = asyncio.ensure_future(lp.sock_sendall(client, b"hello"))
        await turns()
        first.cancel()

        async def recv_all():
            out = b""
            while chunk := await lp.sock_recv(server, 65536):
                out += chunk.replace(b"x", b"")
            return out

        reader = asyncio.ensure_future(recv_all())
        await lp.sock_sendall(client, b"world")
        client.shutdown(socket.SHUT_WR)
        return first.cancelled(), await reader

    cancelled, data = run(lp, main())
    assert cancelled is True
    assert data.endswith(b"world")


def test_two_readers_on_one_socket_the_last_wins(lp, pair):
    # As with add_reader, a second operation replaces the first's registration.
    a, b = pair

    async def main():
        first = asyncio.ensure_future(lp.sock_recv(a, 100))
        await turns()
        second = asyncio.ensure_future(lp.sock_recv(a, 100))
        await turns()
        b.send(b"data")
        got = await second
        await turns()
        still_pending = not first.done()
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        return got, still_pending

    assert run(lp, main()) == (b"data", True)


# -- the watch an operation leaves behind ---------------------------------------------------------
# ferroloop waits natively (one-shot readiness registrations kept between operations on a
# socket, system calls made directly for plain sockets): none of it may show.


async def recv_after_waiting(lp, a, b, payload=b"data"):
    task = asyncio.ensure_future(lp.sock_recv(a, 100))
    await turns()
    assert not task.done()
    b.send(payload)
    return await task


def test_fd_free_after_a_recv_that_waited(lp, pair):
    a, b = pair
    fired = []

    async def main():
        got = await recv_after_waiting(lp, a, b)
        await turns()
        # Nothing watches the fd any more...
        unwatched = (lp.remove_reader(a), lp.remove_writer(a))
        # ...and a reader added now is called when data comes.
        lp.add_reader(a, lambda: fired.append(a.recv(100)))
        b.send(b"more")
        for _ in range(100):
            if fired:
                break
            await asyncio.sleep(0)
        return got, unwatched, lp.remove_reader(a)

    assert run(lp, main()) == (b"data", (False, False), True)
    assert fired == [b"more"]


def test_many_waits_on_one_socket(lp, pair):
    a, b = pair

    async def main():
        return [await recv_after_waiting(lp, a, b, bytes([i])) for i in range(20)]

    assert run(lp, main()) == [bytes([i]) for i in range(20)]
    assert lp.remove_reader(a) is False


@pytest.mark.parametrize("second", ["sock_recv", "add_reader", "transport"])
def test_fd_number_reused_after_close(lp, second):
    a, b = socket.socketpair()
    a.setblocking(False)
    fd = a.fileno()

    async def first():
        return await recv_after_waiting(lp, a, b, b"first")

    try:
        assert run(lp, first()) == b"first"
    finally:
        a.close()
        b.close()
    # The lowest free numbers are reused: one of the new pair has the old number.
    c, d = socket.socketpair()
    try:
        mine, peer = (c, d) if c.fileno() == fd else (d, c)
        if mine.fileno() != fd:
            pytest.skip("the fd number was not reused")
        mine.setblocking(False)
        if second == "sock_recv":
            assert run(lp, recv_after_waiting(lp, mine, peer, b"second")) == b"second"
            assert lp.remove_reader(mine) is False
        elif second == "add_reader":
            got = lp.create_future()
            lp.add_reader(mine, lambda: got.done() or got.set_result(mine.recv(100)))
            peer.send(b"second")
            assert run(lp, got) == b"second"
            assert lp.remove_reader(mine) is True
        else:

            class Proto(asyncio.Protocol):
                def __init__(self):
                    self.got = lp.create_future()

                def data_received(self, data):
                    if not self.got.done():
                        self.got.set_result(data)

            async def main():
                transport, proto = await lp.connect_accepted_socket(Proto, mine)
                peer.send(b"second")
                data = await proto.got
                transport.close()
                await turns()
                return data

            assert run(lp, main()) == b"second"
    finally:
        c.close()
        d.close()


def test_socket_closed_while_recv_waits(lp):
    a, b = socket.socketpair()
    a.setblocking(False)
    fd = a.fileno()

    async def main():
        task = asyncio.ensure_future(lp.sock_recv(a, 100))
        await turns()
        a.close()
        await turns()
        pending = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await turns()
        return pending, task.cancelled()

    try:
        assert run(lp, main()) == (True, True)
        assert lp.remove_reader(fd) is False
    finally:
        a.close()
        b.close()


def test_remove_reader_stops_a_pending_recv(lp, pair):
    # asyncio: remove_reader cancels the operation's handle; the future stays pending.
    a, b = pair

    async def main():
        task = asyncio.ensure_future(lp.sock_recv(a, 100))
        await turns()
        removed = lp.remove_reader(a)
        b.send(b"unread")
        await turns(10)
        pending = not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return removed, pending, a.recv(100)

    assert run(lp, main()) == (True, True, b"unread")


def test_add_reader_replaces_a_pending_recv(lp, pair):
    a, b = pair
    fired = []

    async def main():
        task = asyncio.ensure_future(lp.sock_recv(a, 100))
        await turns()
        lp.add_reader(a, lambda: fired.append(a.recv(100)))
        b.send(b"for the reader")
        for _ in range(100):
            if fired:
                break
            await asyncio.sleep(0)
        pending = not task.done()
        removed = lp.remove_reader(a)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await turns()
        return pending, removed, lp.remove_reader(a)

    assert run(lp, main()) == (True, True, False)
    assert fired == [b"for the reader"]


def test_recv_and_sendall_waiting_on_one_socket(lp, tcp_pair):
    # A reader and a writer on the same fd at once, each finishing on its own.
    client, server = tcp_pair

    async def main():
        fill_send_buffer(client)
        recv = asyncio.ensure_future(lp.sock_recv(client, 100))
        send = asyncio.ensure_future(lp.sock_sendall(client, b"tail"))
        await turns()
        server.send(b"reply")
        got = await recv
        drained = b""
        while not drained.endswith(b"tail"):
            try:
                drained += server.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0)
        await send
        await turns()
        return got, lp.remove_reader(client), lp.remove_writer(client)

    assert run(lp, main()) == (b"reply", False, False)


def test_loop_closed_with_a_pending_recv(loop_factory, pair):
    a, b = pair
    loop = loop_factory()
    task = loop.create_task(loop.sock_recv(a, 100))
    loop.run_until_complete(asyncio.sleep(0))
    loop.run_until_complete(asyncio.sleep(0))
    assert not task.done()
    task.cancel()
    loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    loop.close()
    assert task.cancelled()


def test_loop_subclass_create_future_is_used(lp, pair):
    # A waiting operation gets its future from self.create_future(), as asyncio's does.
    a, b = pair
    made = []

    class Sub(type(lp)):
        def create_future(self):
            fut = super().create_future()
            made.append(fut)
            return fut

    async def main():
        before = len(made)
        got = await recv_after_waiting(loop, a, b, b"sub")
        return got, len(made) - before

    loop = Sub()
    try:
        loop.set_debug(False)
        assert run(loop, main()) == (b"sub", 1)
    finally:
        loop.close()


# -- what the socket's own methods decide -------------------------------------------------------


class CountingSocket(socket.socket):
    """A socket subclass whose data methods are counted: both loops call them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def recv(self, n):
        self.calls.append("recv")
        return super().recv(n)

    def recv_into(self, buf):
        self.calls.append("recv_into")
        return super().recv_into(buf)

    def send(self, data):
        self.calls.append("send")
        return super().send(data)


def counting_pair():
    a, b = socket.socketpair()
    try:
        c = CountingSocket(fileno=a.detach())
    finally:
        a.close()
    c.setblocking(False)
    b.setblocking(False)
    return c, b


def test_socket_subclass_methods_are_called(lp):
    a, b = counting_pair()

    async def main():
        got = await recv_after_waiting(lp, a, b, b"x")
        task = asyncio.ensure_future(lp.sock_recv_into(a, bytearray(10)))
        await turns()
        b.send(b"yz")
        n = await task
        await lp.sock_sendall(a, b"out")
        return got, n, b.recv(10)

    try:
        assert run(lp, main()) == (b"x", 2, b"out")
        # The first attempt would block, the second (on readiness) gets the data.
        assert a.calls == ["recv", "recv", "recv_into", "recv_into", "send"]
    finally:
        a.close()
        b.close()


def test_socket_with_a_timeout_outside_debug_mode(lp, pair):
    a, b = pair
    a.settimeout(30)
    b.send(b"ready")
    assert run(lp, lp.sock_recv(a, 100)) == b"ready"
    run(lp, lp.sock_sendall(a, b"back"))
    assert b.recv(100) == b"back"


@pytest.mark.parametrize("n", [-1, 1.5, "10", None])
def test_recv_bad_size(lp, pair, n):
    a, b = pair
    b.send(b"data")
    with pytest.raises((ValueError, TypeError)) as info:
        run(lp, lp.sock_recv(a, n))
    with pytest.raises(type(info.value), match=f"^{re.escape(str(info.value))}$"):
        a.recv(n)


def test_recv_size_zero_and_huge(lp, pair):
    a, b = pair
    b.send(b"abc")
    assert run(lp, lp.sock_recv(a, 0)) == a.recv(0)
    assert run(lp, lp.sock_recv(a, 1 << 20)) == b"abc"


def test_recv_bool_size(lp, pair):
    # bool is an int: True reads one byte, as sock.recv(True) does.
    a, b = pair
    b.send(b"ab")
    assert run(lp, lp.sock_recv(a, True)) == b"a"


def test_recv_into_readonly_buffer(lp, pair):
    a, b = pair
    b.send(b"data")
    with pytest.raises(TypeError) as info:
        run(lp, lp.sock_recv_into(a, b"readonly"))
    with pytest.raises(TypeError) as direct:
        a.recv_into(b"readonly")
    assert str(info.value) == str(direct.value)


def test_recv_into_buffers_of_other_formats(lp, pair):
    import array

    a, b = pair
    words = array.array("i", [0, 0])

    async def main():
        task = asyncio.ensure_future(lp.sock_recv_into(a, words))
        await turns()
        b.send(b"\x01\0\0\0\x02\0\0\0")
        return await task

    assert run(lp, main()) == 8
    assert list(words) == [1, 2]


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "bytes_subclass"])
def test_sendall_partial_sends_of_other_buffers(lp, tcp_pair, kind):
    client, server = tcp_pair
    payload = os.urandom(300_000)

    class Bytes(bytes):
        pass

    data = {
        "bytearray": bytearray(payload),
        "memoryview": memoryview(b"\0" + payload)[1:],
        "bytes_subclass": Bytes(payload),
    }[kind]

    async def main():
        fill_send_buffer(client)
        reader = asyncio.ensure_future(read_all(lp, server))
        await lp.sock_sendall(client, data)
        client.shutdown(socket.SHUT_WR)
        return await reader

    received = run(lp, main())
    assert received.endswith(payload)
    assert set(received[: -len(payload)]) == {ord("x")}


def dead_peer_mid_sendall(loop):
    """sock_sendall waiting on a full buffer when the peer closes with unread data."""
    client, server = make_tcp_pair()

    async def main():
        fill_send_buffer(client)
        task = asyncio.ensure_future(loop.sock_sendall(client, b"y" * 200_000))
        await turns()
        server.close()  # unread data: the kernel resets the connection
        return await asyncio.gather(task, return_exceptions=True)

    try:
        (exc,) = run(loop, main())
        return type(exc), getattr(exc, "errno", None), loop.remove_writer(client)
    finally:
        client.close()
        server.close()


def test_dead_peer_mid_sendall_same_error_as_asyncio():
    import ferroloop

    outcomes = {}
    for name, factory in [
        ("asyncio", asyncio.SelectorEventLoop),
        ("ferroloop", ferroloop.new_event_loop),
    ]:
        loop = factory()
        try:
            outcomes[name] = dead_peer_mid_sendall(loop)
        finally:
            loop.close()
    assert outcomes["asyncio"][0] in (ConnectionResetError, BrokenPipeError)
    assert outcomes["ferroloop"] == outcomes["asyncio"]


def test_many_sockets_no_fd_left(lp):
    # The autouse fixture checks the fd count; here many sockets wait and finish.
    pairs = [socket.socketpair() for _ in range(30)]
    for a, _ in pairs:
        a.setblocking(False)

    async def main():
        tasks = [asyncio.ensure_future(lp.sock_recv(a, 10)) for a, _ in pairs]
        await turns()
        for i, (_, b) in enumerate(pairs):
            b.send(bytes([i]))
        return await asyncio.gather(*tasks)

    try:
        assert run(lp, main()) == [bytes([i]) for i in range(30)]
        assert not any(lp.remove_reader(a) for a, _ in pairs)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# -- bad arguments -------------------------------------------------------------------------------


def op_calls(lp, sock, f=None):
    return {
        "recv": lambda: lp.sock_recv(sock, 1024),
        "recv_into": lambda: lp.sock_recv_into(sock, bytearray(10)),
        "recvfrom": lambda: lp.sock_recvfrom(sock, 1024),
        "recvfrom_into": lambda: lp.sock_recvfrom_into(sock, bytearray(10)),
        "sendall": lambda: lp.sock_sendall(sock, b"x"),
        "sendto": lambda: lp.sock_sendto(sock, b"x", ("127.0.0.1", 9)),
        "connect": lambda: lp.sock_connect(sock, ("127.0.0.1", 9)),
        "accept": lambda: lp.sock_accept(sock),
        "sendfile": lambda: lp.sock_sendfile(sock, f),
    }


ALL_OPS = list(op_calls(None, None))


@pytest.mark.parametrize("name", ALL_OPS)
def test_blocking_socket_refused_in_debug_mode(loop, name):
    loop.set_debug(True)
    sock = socket.socket()  # blocking
    with sock, tempfile.TemporaryFile() as f:
        with pytest.raises(ValueError, match="^the socket must be non-blocking$"):
            loop.run_until_complete(op_calls(loop, sock, f)[name]())


def test_blocking_socket_accepted_outside_debug_mode(lp, pair):
    a, b = pair
    a.setblocking(True)
    b.send(b"data")
    assert run(lp, lp.sock_recv(a, 100)) == b"data"


@pytest.fixture
def ssl_sock():
    ctx = ssl.create_default_context()
    s = ctx.wrap_socket(socket.socket(), server_hostname="example.com")
    yield s
    s.close()


@pytest.mark.parametrize("name", ALL_OPS)
def test_ssl_socket_refused(lp, ssl_sock, name):
    with tempfile.TemporaryFile() as f:
        with pytest.raises(TypeError, match="^Socket cannot be of type SSLSocket$"):
            lp.run_until_complete(op_calls(lp, ssl_sock, f)[name]())


def test_ssl_check_comes_first_except_for_sendfile(loop, ssl_sock):
    # In debug mode a blocking SSLSocket fails both checks: sock_* methods test ssl first,
    # sock_sendfile the non-blocking mode first.
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.run_until_complete(loop.sock_recv(ssl_sock, 10))
    with tempfile.TemporaryFile() as f, pytest.raises(ValueError):
        loop.run_until_complete(loop.sock_sendfile(ssl_sock, f))


def test_ops_on_a_closed_loop(lp, pair, listener):
    a, b = pair
    lp.close()
    # An operation that completes at once does not need the loop.
    b.send(b"ready")
    assert drive(lp.sock_recv(a, 100)) == ("returned", b"ready")
    assert drive(lp.sock_sendall(b, b"x")) == ("returned", None)
    # One that must wait cannot register with a closed loop.
    closed = ("raised", RuntimeError, "Event loop is closed")
    assert drive(lp.sock_recv(b, 100)) == closed
    assert drive(lp.sock_accept(listener)) == closed
    assert drive(lp.getaddrinfo("127.0.0.1", 80)) == closed
    assert drive(lp.getnameinfo(("127.0.0.1", 80))) == closed


def test_fd_owned_by_a_transport(lp, pair):
    """An fd an open transport owns is refused by sock_* (when it would wait) and add_reader,
    and free again once the transport is closed and gone."""
    a, b = pair

    async def main():
        transport, _ = await lp.connect_accepted_socket(asyncio.Protocol, a)
        assert re.fullmatch(
            r"File descriptor \d+ is used by transport <\w*Transport fd=\d+ .*>",
            await refused(lp.sock_recv(a, 10)),
        )
        assert "is used by transport" in await refused(lp.sock_sendall(a, b"x" * 10_000_000))
        with pytest.raises(RuntimeError, match="is used by transport"):
            lp.add_reader(a.fileno(), lambda: None)
        with pytest.raises(RuntimeError, match="is used by transport"):
            lp.remove_writer(a)
        # No waiting, no check: data already there is returned.
        transport.pause_reading()
        b.send(b"x")
        await asyncio.sleep(0.05)
        assert await lp.sock_recv(a, 10) == b"x"
        # A closing transport owns nothing.
        transport.close()
        assert lp.remove_reader(a.fileno()) is False
        await asyncio.sleep(0)

    async def refused(coro):
        with pytest.raises(RuntimeError) as info:
            await asyncio.wait_for(coro, TIMEOUT)
        return str(info.value)

    run(lp, main())


def test_transport_registry_forgets_a_dropped_transport(lp):
    """A transport dropped without being closed no longer owns its fd once collected (asyncio's
    registry is a WeakValueDictionary); a new transport on the fd number owns it then."""

    async def main():
        a, b = socket.socketpair()
        transport, _ = await lp.connect_accepted_socket(asyncio.Protocol, a)
        fd = a.fileno()
        transport.pause_reading()  # nothing else holds it then
        del transport
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gc.collect()
        # The warning's `source` held the transport: let go of it, then collect it.
        assert [str(w.message).startswith("unclosed transport") for w in caught] == [True]
        del caught
        gc.collect()
        assert a.fileno() == -1  # closed by the transport's finalizer
        c, d = socket.socketpair()
        try:
            assert fd in (c.fileno(), d.fileno())
            mine = c if c.fileno() == fd else d
            lp.add_reader(mine.fileno(), lambda: None)
            assert lp.remove_reader(mine.fileno()) is True
        finally:
            for s in (b, c, d):
                s.close()

    run(lp, main())


def test_recv_on_closed_socket(lp):
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(OSError) as info:
        run(lp, lp.sock_recv(a, 10))
    assert info.value.errno == errno.EBADF


# -- sock_sendfile -------------------------------------------------------------------------------


@pytest.fixture
def datafile():
    with tempfile.TemporaryFile() as f:
        f.write(DATA)
        f.seek(0)
        yield f


async def read_all(lp, sock):
    out = bytearray()
    while chunk := await lp.sock_recv(sock, 65536):
        out.extend(chunk)
    return bytes(out)


def sendfile_and_read(lp, client, server, *args, **kwargs):
    async def main():
        reader = asyncio.ensure_future(read_all(lp, server))
        sent = await lp.sock_sendfile(client, *args, **kwargs)
        client.shutdown(socket.SHUT_WR)
        return sent, await reader

    return run(lp, main())


def test_sendfile_whole_file(lp, tcp_pair, datafile):
    client, server = tcp_pair
    sent, got = sendfile_and_read(lp, client, server, datafile)
    assert (sent, got, datafile.tell()) == (len(DATA), DATA, len(DATA))
    assert lp.remove_writer(client) is False


def test_sendfile_offset_and_count(lp, tcp_pair, datafile):
    client, server = tcp_pair
    sent, got = sendfile_and_read(lp, client, server, datafile, 1000, 2000)
    assert (sent, got, datafile.tell()) == (2000, DATA[1000:3000], 3000)


def test_sendfile_count_past_end(lp, tcp_pair, datafile):
    client, server = tcp_pair
    sent, got = sendfile_and_read(lp, client, server, datafile, len(DATA) - 10, 1000)
    assert (sent, got, datafile.tell()) == (10, DATA[-10:], len(DATA))


def test_sendfile_empty_file(lp, tcp_pair):
    client, server = tcp_pair
    with tempfile.TemporaryFile() as f:
        sent, got = sendfile_and_read(lp, client, server, f)
        assert (sent, got, f.tell()) == (0, b"", 0)


def test_sendfile_partial_sends_with_small_buffers(lp, tcp_pair):
    client, server = tcp_pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = os.urandom(1 << 20)
    with tempfile.TemporaryFile() as f:
        f.write(payload)
        f.seek(0)
        sent, got = sendfile_and_read(lp, client, server, f)
        assert (sent, f.tell()) == (len(payload), len(payload))
    assert got == payload


def test_sendfile_after_regular_send(lp, tcp_pair, datafile):
    client, server = tcp_pair

    async def main():
        reader = asyncio.ensure_future(read_all(lp, server))
        await lp.sock_sendall(client, b"header:")
        sent = await lp.sock_sendfile(client, datafile, 0, 100)
        await lp.sock_sendall(client, b":trailer")
        client.shutdown(socket.SHUT_WR)
        return sent, await reader

    assert run(lp, main()) == (100, b"header:" + DATA[:100] + b":trailer")


def test_sendfile_fallback_for_a_non_file(lp, tcp_pair):
    client, server = tcp_pair
    buf = io.BytesIO(DATA)
    sent, got = sendfile_and_read(lp, client, server, buf, 10, 5000)
    assert (sent, got, buf.tell()) == (5000, DATA[10:5010], 5010)


def test_sendfile_no_fallback_for_a_non_file(lp, tcp_pair):
    client, _ = tcp_pair
    with pytest.raises(asyncio.SendfileNotAvailableError, match="^not a regular file$"):
        run(lp, lp.sock_sendfile(client, io.BytesIO(DATA), fallback=False))


def test_sendfile_fallback_when_os_sendfile_fails_first(lp, tcp_pair, datafile):
    client, server = tcp_pair
    with mock.patch("os.sendfile", side_effect=OSError(errno.EINVAL, "Invalid argument")):
        sent, got = sendfile_and_read(lp, client, server, datafile, 5, 300_000)
    assert (sent, got, datafile.tell()) == (len(DATA) - 5, DATA[5:], len(DATA))


def test_sendfile_first_failure_without_fallback(lp, tcp_pair, datafile):
    client, _ = tcp_pair
    with mock.patch("os.sendfile", side_effect=OSError(errno.EINVAL, "Invalid argument")):
        with pytest.raises(asyncio.SendfileNotAvailableError, match="^os.sendfile call failed$"):
            run(lp, lp.sock_sendfile(client, datafile, fallback=False))
    assert datafile.tell() == 0


def fail_second_call(exc):
    """An os.sendfile that sends 1000 bytes, then raises ``exc``."""
    real = os.sendfile
    calls = []

    def fake(out_fd, in_fd, offset, count):
        calls.append((offset, count))
        if len(calls) == 1:
            return real(out_fd, in_fd, offset, 1000)
        raise exc

    return fake, calls


def test_sendfile_error_after_progress(lp, tcp_pair, datafile):
    client, _ = tcp_pair
    err = OSError(errno.EIO, "I/O error")
    fake, calls = fail_second_call(err)
    with mock.patch("os.sendfile", fake):
        with pytest.raises(OSError) as info:
            run(lp, lp.sock_sendfile(client, datafile, 100))
    assert info.value is err
    assert calls == [(100, len(DATA)), (1100, len(DATA))]
    assert datafile.tell() == 1100


def test_sendfile_not_connected_after_progress(lp, tcp_pair, datafile):
    client, _ = tcp_pair
    err = OSError(errno.ENOTCONN, "Transport endpoint is not connected")
    fake, _ = fail_second_call(err)
    with mock.patch("os.sendfile", fake):
        with pytest.raises(OSError) as info:
            run(lp, lp.sock_sendfile(client, datafile))
    exc = info.value
    assert type(exc) is ConnectionError
    assert exc.args == ("socket is not connected", errno.ENOTCONN)
    assert exc.__cause__ is err
    assert datafile.tell() == 1000


@pytest.mark.parametrize(
    "kwargs, exc_type, message",
    [
        ({"count": 0}, ValueError, "count must be a positive integer (got 0)"),
        ({"count": -1}, ValueError, "count must be a positive integer (got -1)"),
        ({"count": "1"}, TypeError, "count must be a positive integer (got '1')"),
        ({"offset": -1}, ValueError, "offset must be a non-negative integer (got -1)"),
        ({"offset": 1.5}, TypeError, "offset must be a non-negative integer (got 1.5)"),
    ],
)
def test_sendfile_bad_arguments(lp, tcp_pair, datafile, kwargs, exc_type, message):
    client, _ = tcp_pair
    with pytest.raises(exc_type) as info:
        run(lp, lp.sock_sendfile(client, datafile, **kwargs))
    assert str(info.value) == message


def test_sendfile_text_file(lp, tcp_pair):
    client, _ = tcp_pair
    with tempfile.TemporaryFile("w+") as f:
        with pytest.raises(ValueError, match="^file should be opened in binary mode$"):
            run(lp, lp.sock_sendfile(client, f))


def test_sendfile_datagram_socket(lp, udp_pair, datafile):
    a, _ = udp_pair
    with pytest.raises(ValueError, match="^only SOCK_STREAM type sockets are supported$"):
        run(lp, lp.sock_sendfile(a, datafile))


# -- getaddrinfo / getnameinfo / _ensure_resolved ------------------------------------------------


GETADDRINFO_CASES = [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", 80, {"type": socket.SOCK_STREAM}),
    ("127.0.0.1", 0, {"family": socket.AF_INET, "type": socket.SOCK_DGRAM}),
    ("127.0.0.1", None, {"flags": socket.AI_PASSIVE}),
    ("127.0.0.1", "80", {}),
    ("127.0.0.1", "http", {"type": socket.SOCK_STREAM}),
    ("::1", 443, {"family": socket.AF_INET6}),
    ("::ffff:127.0.0.1", 1, {}),
    (None, 8080, {"flags": socket.AI_PASSIVE, "type": socket.SOCK_STREAM}),
    (None, 8080, {"type": socket.SOCK_STREAM}),
    ("0.0.0.0", 65535, {"proto": socket.IPPROTO_TCP}),
    (b"127.0.0.1", 80, {}),
    ("localhost", 80, {"type": socket.SOCK_STREAM}),
    ("localhost", 80, {"family": socket.AF_INET}),
    ("127.0.0.1", 80, {"flags": socket.AI_CANONNAME, "type": socket.SOCK_STREAM}),
    ("127.0.0.1", 80, {"flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}),
]


@pytest.mark.parametrize("host, port, kwargs", GETADDRINFO_CASES)
def test_getaddrinfo_same_as_socket_module(lp, host, port, kwargs):
    expected = socket.getaddrinfo(
        host,
        port,
        kwargs.get("family", 0),
        kwargs.get("type", 0),
        kwargs.get("proto", 0),
        kwargs.get("flags", 0),
    )
    got = run(lp, lp.getaddrinfo(host, port, **kwargs))
    assert repr(got) == repr(expected)


@pytest.mark.parametrize(
    "host, port, kwargs",
    [
        ("::1", 80, {"family": socket.AF_INET}),
        ("127.0.0.1", 80, {"type": 99}),
        ("name.invalid", 80, {"flags": socket.AI_NUMERICHOST}),
        ("127.0.0.1", "no-such-service", {}),
    ],
)
def test_getaddrinfo_errors(lp, host, port, kwargs):
    with pytest.raises(socket.gaierror) as expected:
        socket.getaddrinfo(
            host, port, kwargs.get("family", 0), kwargs.get("type", 0), 0, kwargs.get("flags", 0)
        )
    with pytest.raises(socket.gaierror) as got:
        run(lp, lp.getaddrinfo(host, port, **kwargs))
    assert got.value.args == expected.value.args


def test_getaddrinfo_bad_port_type(lp):
    with pytest.raises(OSError, match="Int or String expected"):
        run(lp, lp.getaddrinfo("127.0.0.1", 1.5))


def test_getaddrinfo_debug_logging(loop, caplog):
    loop.set_debug(True)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        infos = loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM))
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert "Get address info 127.0.0.1:80, type=<SocketKind.SOCK_STREAM: 1>" in messages
    assert any(
        m.startswith("Getting address info 127.0.0.1:80, type=<SocketKind.SOCK_STREAM: 1> took ")
        and m.endswith(f"ms: {infos!r}")
        for m in messages
    )


def test_getaddrinfo_after_executor_shutdown(lp):
    run(lp, lp.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        run(lp, lp.getaddrinfo("127.0.0.1", 80))


def test_getaddrinfo_patched_socket_function(lp):
    # The lookup goes through socket.getaddrinfo as looked up at call time.
    sentinel = [("patched",)]
    with mock.patch("socket.getaddrinfo", return_value=sentinel) as m:
        assert run(lp, lp.getaddrinfo("127.0.0.1", 80)) is sentinel
    m.assert_called_once_with("127.0.0.1", 80, 0, 0, 0, 0)


@pytest.mark.parametrize(
    "sockaddr, flags",
    [
        (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
        (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV | socket.NI_DGRAM),
        (("127.0.0.1", 80), 0),
        (("127.0.0.1", 80), socket.NI_NUMERICSERV),
        (("::1", 443, 0, 0), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    ],
)
def test_getnameinfo_same_as_socket_module(lp, sockaddr, flags):
    assert run(lp, lp.getnameinfo(sockaddr, flags)) == socket.getnameinfo(sockaddr, flags)


def test_getnameinfo_bad_sockaddr(lp):
    with pytest.raises(TypeError):
        run(lp, lp.getnameinfo("127.0.0.1"))


AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
STREAM, DGRAM = socket.SOCK_STREAM, socket.SOCK_DGRAM
TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP


@pytest.mark.parametrize(
    "address, kwargs, expected",
    [
        (("127.0.0.1", 80), {}, [(AF_INET, STREAM, TCP, "", ("127.0.0.1", 80))]),
        (("127.0.0.1", 80), {"type": DGRAM}, [(AF_INET, DGRAM, UDP, "", ("127.0.0.1", 80))]),
        (("127.0.0.1", "80"), {"family": 2}, [(2, STREAM, TCP, "", ("127.0.0.1", 80))]),
        ((b"127.0.0.1", b""), {}, [(AF_INET, STREAM, TCP, "", ("127.0.0.1", 0))]),
        (("127.0.0.1", None), {}, [(AF_INET, STREAM, TCP, "", ("127.0.0.1", 0))]),
        (("::1", 80), {}, [(AF_INET6, STREAM, TCP, "", ("::1", 80, 0, 0))]),
        (("::1", 80, 5, 7), {}, [(AF_INET6, STREAM, TCP, "", ("::1", 80, 5, 7))]),
        (("::1", 80), {"family": AF_INET6}, [(AF_INET6, STREAM, TCP, "", ("::1", 80, 0, 0))]),
    ],
)
def test_ensure_resolved_numeric(lp, address, kwargs, expected):
    got = run(lp, lp._ensure_resolved(address, loop=lp, **kwargs))
    assert repr(got) == repr(expected)


@pytest.mark.parametrize(
    "address, kwargs",
    [
        (("localhost", 80), {"family": AF_INET}),
        (("127.0.0.1", "http"), {}),
        (("127.0.0.1", 80), {"type": socket.SOCK_RAW}),
        (("127.0.0.1", 80), {"proto": 99}),
        (("::1", 80), {"family": AF_INET}),
    ],
)
def test_ensure_resolved_asks_getaddrinfo(lp, address, kwargs):
    calls = []

    async def fake_getaddrinfo(host, port, **kw):
        calls.append((host, port, kw))
        return ["answer"]

    got = run(
        lp, lp._ensure_resolved(address, loop=mock.Mock(getaddrinfo=fake_getaddrinfo), **kwargs)
    )
    assert got == ["answer"]
    full = {"family": 0, "type": STREAM, "proto": 0, "flags": 0}
    full.update(kwargs)
    assert calls == [(address[0], address[1], full)]


# -- the native sendfile step, called directly (asyncio's private _sock_sendfile_native_impl) -----


def test_sendfile_impl_blocked_registers_writer(lp, tcp_pair, datafile):
    client, _ = tcp_pair
    fut = mock.Mock()
    fut.cancelled.return_value = False
    with mock.patch("os.sendfile", side_effect=BlockingIOError()):
        lp._sock_sendfile_native_impl(fut, None, client, datafile.fileno(), 0, None, 100, 0)
    fut.add_done_callback.assert_called_once_with(mock.ANY)
    assert lp.remove_writer(client) is True


def test_sendfile_impl_cancelled_future_unregisters(lp, tcp_pair, datafile):
    client, _ = tcp_pair
    fut = lp.create_future()
    lp._sock_sendfile_native_impl(fut, None, client, datafile.fileno(), 0, None, len(DATA), 0)
    fut.cancel()
    lp._sock_sendfile_native_impl(
        fut, client.fileno(), client, datafile.fileno(), 0, None, len(DATA), 0
    )
    assert lp.remove_writer(client) is False


def test_sendfile_impl_os_error_on_first_call(lp, tcp_pair, datafile):
    client, _ = tcp_pair
    fut = lp.create_future()
    with mock.patch("os.sendfile", side_effect=OSError()):
        lp._sock_sendfile_native_impl(fut, None, client, datafile.fileno(), 0, None, 100, 0)
    assert lp.remove_writer(client) is False
    assert isinstance(fut.exception(), asyncio.SendfileNotAvailableError)
    assert datafile.tell() == 0


@pytest.mark.parametrize("err", [OSError(), asyncio.SendfileNotAvailableError()])
def test_sendfile_impl_error_on_next_call(lp, tcp_pair, datafile, err):
    client, _ = tcp_pair
    fut = lp.create_future()
    lp.add_writer(client, lambda: None)  # what the previous step registered
    with mock.patch("os.sendfile", side_effect=err):
        lp._sock_sendfile_native_impl(
            fut, client.fileno(), client, datafile.fileno(), 1000, None, len(DATA), 1000
        )
    assert lp.remove_writer(client) is False
    assert fut.exception() is err
    assert datafile.tell() == 1000


def test_sendfile_impl_count_reached(lp, tcp_pair, datafile):
    client, _ = tcp_pair
    fut = lp.create_future()
    lp._sock_sendfile_native_impl(fut, None, client, datafile.fileno(), 500, 100, 100, 100)
    assert fut.result() == 100
    assert datafile.tell() == 500


def test_sendfile_without_os_sendfile(lp, tcp_pair, datafile):
    # asyncio reads os.sendfile through its unix_events module; without it the native path is
    # unavailable and the fallback sends the file.
    client, server = tcp_pair
    with mock.patch("asyncio.unix_events.os", spec=[]):
        with pytest.raises(
            asyncio.SendfileNotAvailableError, match=r"^os\.sendfile\(\) is not available$"
        ):
            run(lp, lp.sock_sendfile(client, datafile, fallback=False))
        sent, got = sendfile_and_read(lp, client, server, datafile, 0, 1000)
    assert (sent, got, datafile.tell()) == (1000, DATA[:1000], 1000)
