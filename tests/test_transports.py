"""Socket, datagram and pipe transports, servers and streams: the same observable behaviour on
asyncio's loop and ferroloop's (protocol callback order, flow control, half-close, errors,
extra info, closing), over loopback only."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import socket
import struct
import sys
import termios
import warnings

import pytest


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def queued(fd: int) -> int:
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def tcp_pair():
    """A connected TCP pair (client, accepted server side), blocking mode."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        client = socket.create_connection(ls.getsockname())
        server, _ = ls.accept()
    return client, server


class Recorder(asyncio.Protocol):
    """Records every callback in order; `lost` resolves on connection_lost."""

    def __init__(self, loop, *, keep_open=False):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.keep_open = keep_open
        self.lost = loop.create_future()
        self.eof = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))
        self.lost.set_result(exc)


async def read_exactly(sock, n):
    loop = asyncio.get_running_loop()
    chunks = bytearray()
    while len(chunks) < n:
        chunk = await loop.run_in_executor(None, sock.recv, n - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, 30))


def test_connection_roundtrip_order_and_extra_info(loop):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        assert isinstance(t, asyncio.Transport)
        assert isinstance(t, asyncio.ReadTransport) and isinstance(t, asyncio.WriteTransport)
        assert p.events == ["made"]
        assert t.get_extra_info("peername") == peer.getsockname()
        assert t.get_extra_info("sockname") == client.getsockname()
        assert t.get_extra_info("socket").fileno() == client.fileno()
        assert t.get_extra_info("nothing", 42) == 42
        assert t.get_protocol() is p
        assert t.can_write_eof()
        assert t.is_reading() and not t.is_closing()
        t.write(b"hello ")
        t.writelines([b"wor", bytearray(b"l"), memoryview(b"d")])
        assert await read_exactly(peer, 11) == b"hello world"
        peer.sendall(b"back")
        while bytes(p.data) != b"back":
            await asyncio.sleep(0.001)
        peer.shutdown(socket.SHUT_WR)
        await p.lost
        assert p.events == ["made", "data", "eof", ("lost", None)]
        assert t.is_closing()
        assert t.get_extra_info("socket").fileno() == -1
        peer.close()

    run(loop, main())


def test_large_then_small_reads_then_eof(loop):
    """Megabytes in big chunks (reads of 16 KiB and more), then a few bytes, then EOF: every
    byte arrives in order as bytes, and EOF is reported after the big reads."""
    payload = bytes(range(256)) * (3 * 4096)  # 3 MiB

    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)

        def send_all():
            peer.sendall(payload)
            peer.sendall(b"tail")
            peer.shutdown(socket.SHUT_WR)

        await loop.run_in_executor(None, send_all)
        await p.lost
        assert bytes(p.data) == payload + b"tail"
        assert p.events == ["made", "data", "eof", ("lost", None)]
        assert t.is_closing()
        peer.close()

    run(loop, main())


def test_each_read_takes_all_that_is_queued_whatever_the_last_read_was(loop):
    """One data_received per read, each with everything queued (up to 256 KiB), as asyncio's
    `sock.recv(max_size)`: after a large read, a larger and a smaller one and a tiny one come
    whole, whatever size the previous read had."""
    sizes = [17 * 1024, 40 * 1024, 18 * 1024, 3, 70 * 1024]

    async def main():
        client, peer = tcp_pair()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        chunks = []
        arrived = asyncio.Event()

        class Chunks(asyncio.Protocol):
            def data_received(self, data):
                assert type(data) is bytes
                chunks.append(data)
                arrived.set()

        t, _ = await loop.create_connection(Chunks, sock=client)
        fd = client.fileno()
        sent = b""
        for i, size in enumerate(sizes):
            t.pause_reading()
            part = bytes([i + 1]) * size
            peer.sendall(part)
            sent += part
            # Wait until the whole part is queued on the paused transport's socket.
            while queued(fd) < size:
                await asyncio.sleep(0.001)
            arrived.clear()
            t.resume_reading()
            await arrived.wait()
        assert [len(c) for c in chunks] == sizes
        assert b"".join(chunks) == sent
        t.close()
        peer.close()

    run(loop, main())


def test_eof_received_true_keeps_writing_side_open(loop):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop, keep_open=True), sock=client)
        peer.shutdown(socket.SHUT_WR)
        await p.eof
        assert not t.is_closing()
        t.write(b"after eof")
        assert await read_exactly(peer, 9) == b"after eof"
        t.write_eof()
        assert await read_exactly(peer, 1) == b""
        with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
            t.write(b"x")
        t.close()
        await p.lost
        assert p.events == ["made", "eof", ("lost", None)]
        peer.close()

    run(loop, main())


def test_write_rejects_non_bytes(loop):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        with pytest.raises(TypeError, match="data argument must be a bytes-like object, not 'str'"):
            t.write("text")
        t.write(b"")  # nothing happens
        assert t.get_write_buffer_size() == 0
        t.close()
        await p.lost
        peer.close()

    run(loop, main())


def test_flow_control_pauses_and_resumes_writing(loop):
    async def main():
        client, peer = tcp_pair()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
            t.set_write_buffer_limits(high=1, low=2)
        t.set_write_buffer_limits(high=1000, low=100)
        assert t.get_write_buffer_limits() == (100, 1000)
        t.set_write_buffer_limits(low=50)
        assert t.get_write_buffer_limits() == (50, 200)
        t.set_write_buffer_limits(high=1000, low=100)
        payload = b"z" * 4_000_000
        t.write(payload)
        assert t.get_write_buffer_size() > 1000
        assert p.events == ["made", "pause_writing"]
        got = await read_exactly(peer, len(payload))
        assert got == payload
        while t.get_write_buffer_size():
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)
        assert p.events == ["made", "pause_writing", "resume_writing"]
        t.close()
        await p.lost
        peer.close()

    run(loop, main())


def test_close_flushes_buffer_abort_does_not(loop):
    async def main():
        client, peer = tcp_pair()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        payload = b"q" * 3_000_000
        t.write(payload)
        assert t.get_write_buffer_size() > 0
        t.close()
        assert t.is_closing()
        t.close()  # idempotent
        got = await read_exactly(peer, len(payload) + 1)
        assert got == payload
        await p.lost
        assert p.events[-1] == ("lost", None)
        peer.close()

        client, peer = tcp_pair()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        t.write(payload)
        t.abort()
        await p.lost
        assert t.get_write_buffer_size() == 0
        got = await read_exactly(peer, len(payload) + 1)
        assert len(got) < len(payload)
        peer.close()

    run(loop, main())


def test_writes_after_connection_lost_are_dropped_then_logged(loop, caplog):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        t.abort()
        await p.lost
        with caplog.at_level("WARNING", logger="asyncio"):
            for _ in range(7):
                t.write(b"x")
        warnings_logged = [r for r in caplog.records if "socket.send() raised" in r.getMessage()]
        assert len(warnings_logged) == 3
        peer.close()

    run(loop, main())


def test_pause_and_resume_reading(loop):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        t.pause_reading()
        assert not t.is_reading()
        t.pause_reading()
        peer.sendall(b"held")
        await asyncio.sleep(0.05)
        assert p.data == b""
        t.resume_reading()
        assert t.is_reading()
        while p.data != b"held":
            await asyncio.sleep(0.001)
        t.close()
        assert not t.is_reading()
        await p.lost
        peer.close()

    run(loop, main())


def test_peer_reset_reports_connection_lost_once(loop):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # RST
        exc = await p.lost
        assert isinstance(exc, ConnectionResetError) or exc is None
        await asyncio.sleep(0.01)
        assert sum(1 for e in p.events if isinstance(e, tuple)) == 1

    run(loop, main())


def test_protocol_error_goes_to_exception_handler_and_closes(loop):
    contexts = []

    class Bad(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError("boom")

    async def main():
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Bad(loop), sock=client)
        peer.sendall(b"x")
        exc = await p.lost
        assert isinstance(exc, ZeroDivisionError)
        peer.close()

    run(loop, main())
    assert len(contexts) == 1
    ctx = contexts[0]
    assert ctx["message"] == "Fatal error: protocol.data_received() call failed."
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["protocol"].__class__.__name__ == "Bad"
    assert isinstance(ctx["transport"], asyncio.Transport)


def test_buffered_protocol(loop):
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(7)
            self.got = bytearray()
            self.lost = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            assert sizehint == -1
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]

        def eof_received(self):
            return False

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(Buffered, sock=client)
        peer.sendall(b"0123456789" * 1000)
        peer.shutdown(socket.SHUT_WR)
        assert await p.lost is None
        assert p.got == b"0123456789" * 1000
        peer.close()

    run(loop, main())


def test_empty_get_buffer_is_fatal(loop):
    contexts = []

    class Empty(asyncio.BufferedProtocol):
        def __init__(self):
            self.lost = loop.create_future()

        def get_buffer(self, sizehint):
            return bytearray()

        def buffer_updated(self, nbytes):
            raise AssertionError("not reached")

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        client, peer = tcp_pair()
        t, p = await loop.create_connection(Empty, sock=client)
        peer.sendall(b"x")
        exc = await p.lost
        assert isinstance(exc, RuntimeError)
        assert str(exc) == "get_buffer() returned an empty buffer"
        peer.close()

    run(loop, main())
    assert contexts[0]["message"] == "Fatal error: protocol.get_buffer() call failed."


def test_transport_fd_is_refused_by_add_reader(loop):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.add_reader(client.fileno(), lambda: None)
        with pytest.raises(RuntimeError, match="is used by transport"):
            loop.remove_writer(client)
        t.close()
        await p.lost
        peer.close()

    run(loop, main())


def test_server_accepts_counts_and_closes(loop):
    async def main():
        fds = open_fds()
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        protocols = []

        def factory():
            p = Recorder(loop)
            protocols.append(p)
            return p

        srv = await loop.create_server(factory, sock=ls, start_serving=False)
        assert not srv.is_serving()
        assert srv.get_loop() is loop
        assert len(srv.sockets) == 1
        await srv.start_serving()
        assert srv.is_serving()
        clients = [socket.create_connection(ls.getsockname()) for _ in range(20)]
        while len(protocols) < 20 or any(p.transport is None for p in protocols):
            await asyncio.sleep(0.001)
        for p in protocols:
            assert p.transport.get_extra_info("peername") in [c.getsockname() for c in clients]
        srv.close()
        assert srv.sockets == ()
        assert not srv.is_serving()
        waiter = asyncio.ensure_future(srv.wait_closed())
        await asyncio.sleep(0.01)
        # 3.11 returns at once once the server is closed; 3.12+ waits for the connections.
        assert waiter.done() == (sys.version_info < (3, 12))
        for c in clients:
            c.close()
        await asyncio.gather(*(p.lost for p in protocols))
        await waiter
        await asyncio.sleep(0)
        assert open_fds() == fds

    run(loop, main())


def test_serve_forever_cancel_and_errors(loop):
    async def main():
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        srv = await loop.create_server(lambda: Recorder(loop), sock=ls)
        task = asyncio.ensure_future(srv.serve_forever())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="is already being awaited on serve_forever"):
            await srv.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not srv.is_serving()
        with pytest.raises(RuntimeError, match="is closed"):
            await srv.serve_forever()

    run(loop, main())


def test_server_async_context_manager(loop):
    async def main():
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        async with await loop.create_server(lambda: Recorder(loop), sock=ls) as srv:
            assert srv.is_serving()
        assert not srv.is_serving()
        assert ls.fileno() == -1

    run(loop, main())


def test_argument_errors(loop):
    async def main():
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.create_connection(asyncio.Protocol, sock=udp)
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.create_server(asyncio.Protocol, sock=udp)
            with pytest.raises(ValueError, match="server_hostname is only meaningful with ssl"):
                await loop.create_connection(asyncio.Protocol, sock=udp, server_hostname="x")
            with pytest.raises(ValueError, match="host and port was not specified"):
                await loop.create_connection(asyncio.Protocol)
            with pytest.raises(ValueError, match="Neither host/port nor sock were specified"):
                await loop.create_server(asyncio.Protocol)
            with pytest.raises(TypeError, match="ssl argument must be an SSLContext or None"):
                await loop.create_server(asyncio.Protocol, sock=udp, ssl=True)
            with pytest.raises(ValueError, match="A UDP Socket was expected"):
                await loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=socket.socket())
            with pytest.raises(ValueError, match="unexpected address family"):
                await loop.create_datagram_endpoint(asyncio.DatagramProtocol)
            with pytest.raises(ValueError, match="socket modifier keyword arguments"):
                await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, sock=udp, reuse_port=True
                )
        finally:
            udp.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        run(loop, main())
        gc.collect()


def test_unix_stream_server_and_connection(loop, tmp_path):
    path = str(tmp_path / "sock")

    async def main():
        class Echo(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t

            def data_received(self, d):
                self.t.write(d)

        srv = await loop.create_unix_server(Echo, path)
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        t, p = await loop.create_unix_connection(lambda: Recorder(loop), sock=c)
        assert t.get_extra_info("peername") == path
        t.write(b"ping" * 10000)
        while len(p.data) < 40000:
            await asyncio.sleep(0.001)
        assert p.data == b"ping" * 10000
        t.close()
        await p.lost
        srv.close()
        await srv.wait_closed()
        with pytest.raises(ValueError, match="path and sock can not be specified"):
            await loop.create_unix_server(Echo, path, sock=c)

    run(loop, main())


def test_streams_over_accepted_sockets(loop):
    async def main():
        got = loop.create_future()

        async def handler(reader, writer):
            line = await reader.readline()
            writer.write(line.upper())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            got.set_result(line)

        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        srv = await asyncio.start_server(handler, sock=ls)
        c = socket.create_connection(ls.getsockname())
        reader, writer = await asyncio.open_connection(sock=c)
        writer.write(b"hello stream\n")
        await writer.drain()
        assert await reader.read() == b"HELLO STREAM\n"
        assert await got == b"hello stream\n"
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_connect_accepted_socket(loop):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.connect_accepted_socket(lambda: Recorder(loop), peer)
        client.sendall(b"abc")
        while p.data != b"abc":
            await asyncio.sleep(0.001)
        t.close()
        await p.lost
        assert client.recv(10) == b""
        client.close()

    run(loop, main())


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self.queue = asyncio.Queue()
        self.errors = []
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_datagram_endpoints(loop):
    async def main():
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(("127.0.0.1", 0))
        ta, pa = await loop.create_datagram_endpoint(lambda: DatagramRecorder(loop), sock=a)
        assert isinstance(ta, asyncio.BaseTransport)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b.bind(("127.0.0.1", 0))
        b.connect(a.getsockname())
        tb, pb = await loop.create_datagram_endpoint(lambda: DatagramRecorder(loop), sock=b)
        assert tb.get_extra_info("peername") == a.getsockname()
        for i in range(50):
            tb.sendto(b"n%d" % i)
        for i in range(50):
            data, addr = await pa.queue.get()
            assert data == b"n%d" % i and addr == b.getsockname()
        ta.sendto(memoryview(b"reply"), b.getsockname())
        assert await pb.queue.get() == (b"reply", a.getsockname())
        with pytest.raises(TypeError, match="data argument must be a bytes-like object"):
            ta.sendto("str", b.getsockname())
        assert ta.get_write_buffer_size() == 0
        ta.close()
        tb.abort()
        assert await pa.lost is None
        assert await pb.lost is None

    run(loop, main())


def test_datagram_error_received_for_refused_port(loop):
    async def main():
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()
        probe.close()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.connect(dead)
        t, p = await loop.create_datagram_endpoint(lambda: DatagramRecorder(loop), sock=s)
        for _ in range(100):
            t.sendto(b"x")
            await asyncio.sleep(0.001)
            if p.errors:
                break
        assert p.errors and isinstance(p.errors[0], ConnectionRefusedError)
        assert not t.is_closing()
        t.close()
        await p.lost

    run(loop, main())


def test_pipes_roundtrip_and_eof(loop):
    async def main():
        fds = open_fds()
        r, w = os.pipe()
        rt, rp = await loop.connect_read_pipe(lambda: Recorder(loop), os.fdopen(r, "rb", 0))
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), os.fdopen(w, "wb", 0))
        assert isinstance(rt, asyncio.ReadTransport) and not isinstance(rt, asyncio.WriteTransport)
        assert isinstance(wt, asyncio.WriteTransport)
        assert rt.get_extra_info("pipe").fileno() == r
        wt.write(b"p" * 2_000_000)
        assert wt.get_write_buffer_size() > 0
        wt.close()
        assert await rp.lost is None
        assert len(rp.data) == 2_000_000
        assert rp.events == ["made", "data", "eof", ("lost", None)]
        assert await wp.lost is None
        await asyncio.sleep(0)
        assert open_fds() == fds

    run(loop, main())


def test_write_pipe_notices_reader_closing(loop):
    async def main():
        r, w = os.pipe()
        wt, wp = await loop.connect_write_pipe(lambda: Recorder(loop), os.fdopen(w, "wb", 0))
        os.close(r)
        exc = await wp.lost
        assert exc is None
        assert wt.is_closing()

    run(loop, main())


def test_pipe_transport_refuses_regular_file(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")

    async def main():
        with open(path, "rb") as f:
            with pytest.raises(ValueError, match="Pipe transport is for pipes/sockets only."):
                await loop.connect_read_pipe(asyncio.Protocol, f)

    run(loop, main())


def test_unclosed_transport_warns(loop):
    async def main():
        client, peer = tcp_pair()
        t, p = await loop.create_connection(lambda: Recorder(loop), sock=client)
        t.pause_reading()  # the loop no longer references it
        return t, peer

    t, peer = run(loop, main())
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        del t
        gc.collect()
    peer.close()


@pytest.mark.skipif(sys.platform != "linux", reason="counts /proc/self/fd")
def test_many_connections_leave_no_fds(loop):
    async def main():
        fds = open_fds()
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        done = []

        class Echo(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t

            def data_received(self, d):
                self.t.write(d)

            def connection_lost(self, exc):
                done.append(exc)

        srv = await loop.create_server(Echo, sock=ls, backlog=200)
        streams = []
        for _ in range(200):
            c = socket.create_connection(ls.getsockname())
            streams.append(await asyncio.open_connection(sock=c))
        for _reader, writer in streams:
            writer.write(b"x" * 100)
        for reader, writer in streams:
            assert await reader.readexactly(100) == b"x" * 100
            writer.close()
        for _reader, writer in streams:
            await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
        while len(done) < 200:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)
        assert open_fds() == fds

    run(loop, main())


CLIENT_SCRIPT = r"""
import asyncio, sys
port, count = int(sys.argv[1]), int(sys.argv[2])

async def one(i, opened, release):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"%d\n" % i)
    assert await reader.readline() == b"%d\n" % i
    opened.append(1)
    await release.wait()
    writer.close()
    await writer.wait_closed()

async def main():
    opened, release = [], asyncio.Event()
    sem = asyncio.Semaphore(500)
    async def guarded(i):
        async with sem:
            pass
        await one(i, opened, release)
    tasks = [asyncio.create_task(guarded(i)) for i in range(count)]
    while len(opened) < count:
        await asyncio.sleep(0.05)
        if any(t.done() and t.exception() for t in tasks):
            raise next(t.exception() for t in tasks if t.done() and t.exception())
    print("all open", flush=True)
    sys.stdin.readline()
    release.set()
    await asyncio.gather(*tasks)

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="counts /proc/self/fd")
def test_ten_thousand_concurrent_connections(loop):
    import resource

    count = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 200:
        pytest.skip(f"needs {count + 200} fds, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 200), hard))

    async def main():
        fds = open_fds()
        active = []
        peak = [0]

        async def handler(reader, writer):
            active.append(writer)
            peak[0] = max(peak[0], len(active))
            line = await reader.readline()
            writer.write(line)
            await writer.drain()
            await reader.read()  # until the client closes
            writer.close()
            await writer.wait_closed()
            active.remove(writer)

        srv = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=4096)
        port = srv.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT_SCRIPT,
            str(port),
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)),
        )
        assert await asyncio.wait_for(proc.stdout.readline(), 120) == b"all open\n"
        assert len(active) == count
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        assert await proc.wait() == 0
        while active:
            await asyncio.sleep(0.01)
        srv.close()
        await srv.wait_closed()
        await asyncio.sleep(0)
        assert peak[0] == count
        assert open_fds() == fds

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 300))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_accept_out_of_fds_reports_and_keeps_serving(loop):
    """EMFILE on accept: the exception handler hears 'socket.accept() out of system resource',
    accepting pauses, and resumes once fds are free again; nothing leaks."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    messages = []

    async def main():
        loop.set_exception_handler(lambda lp, ctx: messages.append(ctx["message"]))
        accepted = []

        class Keep(asyncio.Protocol):
            def connection_made(self, t):
                accepted.append(t)

        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        srv = await loop.create_server(Keep, sock=ls)
        clients = [socket.socket() for _ in range(8)]
        for c in clients:
            c.setblocking(False)
        fds = open_fds()
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        fillers = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 20, hard))
        try:
            # Take every free fd number below the limit, then give back three.
            try:
                while True:
                    fillers.append(os.dup(ls.fileno()))
            except OSError:
                pass
            for _ in range(3):
                os.close(fillers.pop())
            for c in clients:
                try:
                    c.connect(ls.getsockname())
                except BlockingIOError:
                    pass
            while not messages:
                await asyncio.sleep(0.01)
            assert len(accepted) <= 3
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        while len(accepted) < len(clients):
            await asyncio.sleep(0.05)
        for t in accepted:
            t.abort()
        for c in clients:
            c.close()
        srv.close()
        await asyncio.sleep(0.01)
        assert open_fds() == fds - len(clients) - 1

    run(loop, main())
    assert "socket.accept() out of system resource" in messages


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_datagram_ipv6_addresses_and_unusual_targets(loop):
    async def main():
        try:
            a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            a.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback")
        b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        b.bind(("::1", 0))
        ta, pa = await loop.create_datagram_endpoint(lambda: DatagramRecorder(loop), sock=a)
        tb, pb = await loop.create_datagram_endpoint(lambda: DatagramRecorder(loop), sock=b)
        host, port = a.getsockname()[:2]
        tb.sendto(b"two", (host, port))  # a 2-tuple for an IPv6 socket
        tb.sendto(b"four", (host, port, 0, 0))
        tb.sendto(b"three", (host, port, 0))
        got = sorted([await pa.queue.get() for _ in range(3)])
        assert [d for d, _ in got] == [b"four", b"three", b"two"]
        assert all(addr == b.getsockname() for _, addr in got)
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        tb.sendto(b"x", (host, 70000))  # the socket module refuses the port: fatal
        assert tb.is_closing()
        assert isinstance(await pb.lost, OverflowError)
        assert contexts[0]["message"] == "Fatal write error on datagram transport"
        ta.close()
        await pa.lost

    run(loop, main())


def _families():
    families = [(socket.AF_INET, "127.0.0.1")]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
            families.append((socket.AF_INET6, "::1"))
        except OSError:
            pass
    return families


@pytest.mark.parametrize("family,host", _families(), ids=lambda v: str(v))
def test_accepted_connection_extra_info(loop, family, host):
    """A server's connection: peername as accept gave it (IPv6: the 4-tuple), sockname, the
    socket, in asyncio's order; the same after the peer reset the connection and after close.
    (ferroloop keeps the peer address natively and builds the dict when asked.)"""

    async def main():
        protocols = []

        def factory():
            protocols.append(Recorder(loop))
            return protocols[-1]

        srv = await loop.create_server(factory, host, 0, family=family)
        address = srv.sockets[0].getsockname()
        first = socket.socket(family)
        first.connect(address)
        second = socket.socket(family)
        second.connect(address)
        while len(protocols) < 2 or any(p.transport is None for p in protocols):
            await asyncio.sleep(0.001)
        by_peer = {p.transport.get_extra_info("peername"): p for p in protocols}
        assert set(by_peer) == {first.getsockname(), second.getsockname()}
        p1, p2 = by_peer[first.getsockname()], by_peer[second.getsockname()]
        t1 = p1.transport
        assert list(t1._extra) == ["peername", "socket", "sockname"]
        assert t1.get_extra_info("sockname") == address
        assert t1.get_extra_info("socket").fileno() == t1._sock.fileno()
        assert t1.get_extra_info("missing", "dflt") == "dflt"
        # Asked for the first time only after the peer reset the connection.
        second.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer2 = second.getsockname()
        second.close()
        await p2.lost
        assert p2.transport.get_extra_info("peername") == peer2
        assert p2.transport.get_extra_info("sockname") == address
        assert p2.transport.get_extra_info("socket") is not None
        t1.close()
        await p1.lost
        assert t1.get_extra_info("peername") == first.getsockname()
        first.close()
        srv.close()
        await srv.wait_closed()

    run(loop, main())


def test_accepted_connection_debug_log_names_the_peer(loop, caplog):
    """Debug mode logs each accepted connection with its peer address (asyncio's message)."""
    import logging

    loop.set_debug(True)

    async def main():
        made = loop.create_future()
        srv = await loop.create_server(
            lambda: Recorder(loop) if made.done() else _done(made), "127.0.0.1", 0
        )
        client = socket.create_connection(srv.sockets[0].getsockname())
        transport = await made
        transport.close()
        client_address = client.getsockname()
        client.close()
        srv.close()
        await srv.wait_closed()
        return client_address

    def _done(made):
        class Once(asyncio.Protocol):
            def connection_made(self, transport):
                made.set_result(transport)

        return Once()

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        client_address = run(loop, main())
    assert any(
        "got a new connection from " + repr(client_address) in r.getMessage()
        for r in caplog.records
    )


def test_native_transport_methods_belong_to_each_transport_class():
    """ferroloop's native `is_closing`/`write` are method descriptors of each concrete
    transport class (CPython specialises a method call only for an instance of exactly the
    descriptor's class); a datagram or read pipe transport gets no native write."""
    from ferroloop import _transports

    for cls, writes in (
        (_transports.SocketTransport, True),
        (_transports.DatagramTransport, False),
        (_transports.ReadPipeTransport, False),
        (_transports.WritePipeTransport, True),
    ):
        assert cls.is_closing.__objclass__ is cls
        assert (getattr(getattr(cls, "write", None), "__objclass__", None) is cls) == writes
