"""bench/wl_net.py — owns the benchmark suite's network and memory workloads.

TCP echo (Protocol, streams, sock_* calls), UDP echo, TLS echo, HTTP servers (aiohttp and
uvicorn on the loop under test, loaded by bench/httpclient.py in a separate process), and the
memory rows (peak RSS per idle connection and per pending task).

In the echo workloads both ends (server and clients) run on the loop under test, in one
process: the loop does the work of both sides. Connections are set up before the clock starts
and closed after it stops, so only the steady echo traffic is timed. Every workload checks that
all its messages came back (byte counts, and the content of each connection's last message).

Each workload takes (loop, size) and returns (measured quantity, units): seconds for the timed
rows, bytes for the memory rows (see bench/run.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
WATCHDOG = 120.0  # seconds: a workload that has not finished by then fails instead of hanging


class WrongResult(Exception):
    """The loop ran the workload but did not do all the work it was given."""


def _message(size: int) -> bytes:
    """size bytes of a repeating, position-dependent pattern (so a reordering shows)."""
    pattern = bytes(range(251))  # prime length: the pattern does not line up with 1 KiB blocks
    return (pattern * (size // len(pattern) + 1))[:size]


def _watchdog(loop: asyncio.AbstractEventLoop, fut: asyncio.Future, what: str):
    def fire() -> None:
        if not fut.done():
            fut.set_exception(WrongResult(f"{what}: not finished after {WATCHDOG:.0f}s"))

    return loop.call_later(WATCHDOG, fire)


def _nodelay(sock: socket.socket) -> None:
    # asyncio's transports set TCP_NODELAY on their sockets; do the same for the sock_* rows.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --------------------------------------------------------------------------------------------
# TCP echo with Protocols (and TLS: the same protocols over ssl=).
# --------------------------------------------------------------------------------------------


class _EchoServer(asyncio.Protocol):
    transport: asyncio.Transport

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _EchoClient(asyncio.Protocol):
    """Sends `msg`, waits until all of it came back, repeats `rounds` times."""

    def __init__(self, msg: bytes, rounds: int, on_done) -> None:
        self.msg = msg
        self.size = len(msg)
        self.rounds = rounds
        self.on_done = on_done
        self.got = 0
        self.done_rounds = 0
        self.last = bytearray()
        self.finished = False
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self) -> None:
        self.transport.write(self.msg)

    def data_received(self, data: bytes) -> None:
        got = self.got + len(data)
        if self.done_rounds == self.rounds - 1:
            self.last += data  # the last round's bytes, checked at the end
        if got < self.size:
            self.got = got
            return
        if got > self.size:
            self._finish(WrongResult(f"echo: {got} bytes came back for a {self.size}-byte message"))
            return
        self.got = 0
        self.done_rounds += 1
        if self.done_rounds == self.rounds:
            self._finish(None)
        else:
            self.transport.write(self.msg)

    def connection_lost(self, exc) -> None:
        if not self.finished:
            self._finish(exc or ConnectionError("echo: connection closed early"))

    def _finish(self, exc) -> None:
        self.finished = True
        self.on_done(exc)


def _tcp_proto(
    loop: asyncio.AbstractEventLoop,
    total: int,
    size: int,
    conns: int,
    server_ssl=None,
    client_ssl=None,
) -> tuple[float, int]:
    rounds = max(1, total // conns)
    msg = _message(size)

    async def main() -> float:
        server = await loop.create_server(_EchoServer, HOST, 0, ssl=server_ssl)
        port = server.sockets[0].getsockname()[1]
        done = loop.create_future()
        remaining = conns

        def on_done(exc) -> None:
            nonlocal remaining
            if done.done():
                return
            if exc is not None:
                done.set_exception(exc)
                return
            remaining -= 1
            if remaining == 0:
                done.set_result(None)

        kw = {"ssl": client_ssl, "server_hostname": "localhost"} if client_ssl else {}
        made = await asyncio.gather(
            *[
                loop.create_connection(lambda: _EchoClient(msg, rounds, on_done), HOST, port, **kw)
                for _ in range(conns)
            ]
        )
        clients = [proto for _, proto in made]
        dog = _watchdog(loop, done, "echo")
        t0 = time.perf_counter()
        for c in clients:
            c.start()
        await done
        elapsed = time.perf_counter() - t0
        dog.cancel()
        for c in clients:
            if c.done_rounds != rounds or bytes(c.last) != msg:
                raise WrongResult(f"echo: {c.done_rounds} of {rounds} rounds, or bad content")
            c.transport.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)
        return elapsed

    elapsed = loop.run_until_complete(main())
    return elapsed, rounds * conns


# --------------------------------------------------------------------------------------------
# TCP echo with streams.
# --------------------------------------------------------------------------------------------


def _tcp_streams(
    loop: asyncio.AbstractEventLoop, total: int, size: int, conns: int
) -> tuple[float, int]:
    rounds = max(1, total // conns)
    msg = _message(size)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        data = b""
        for _ in range(rounds):
            writer.write(msg)
            await writer.drain()
            data = await reader.readexactly(size)
        return data

    async def main() -> float:
        server = await asyncio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        pairs = await asyncio.gather(*[asyncio.open_connection(HOST, port) for _ in range(conns)])
        t0 = time.perf_counter()
        lasts = await asyncio.wait_for(asyncio.gather(*[client(r, w) for r, w in pairs]), WATCHDOG)
        elapsed = time.perf_counter() - t0
        if any(last != msg for last in lasts):
            raise WrongResult("streams echo: a connection's last message came back changed")
        for _, w in pairs:
            w.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)
        return elapsed

    elapsed = loop.run_until_complete(main())
    return elapsed, rounds * conns


# --------------------------------------------------------------------------------------------
# TCP echo with the loop's sock_* coroutines on non-blocking sockets.
# --------------------------------------------------------------------------------------------


def _tcp_sock(
    loop: asyncio.AbstractEventLoop, total: int, size: int, conns: int
) -> tuple[float, int]:
    rounds = max(1, total // conns)
    msg = _message(size)

    async def serve(conn: socket.socket) -> None:
        recv, sendall = loop.sock_recv, loop.sock_sendall
        try:
            while True:
                data = await recv(conn, 65536)
                if not data:
                    break
                await sendall(conn, data)
        finally:
            conn.close()

    async def client(sock: socket.socket) -> bytes:
        recv, sendall = loop.sock_recv, loop.sock_sendall
        last = b""
        for _ in range(rounds):
            await sendall(sock, msg)
            got = 0
            parts = []
            while got < size:
                data = await recv(sock, size - got)
                if not data:
                    raise ConnectionError("sock echo: connection closed early")
                got += len(data)
                parts.append(data)
            last = b"".join(parts)
        return last

    async def main() -> float:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind((HOST, 0))
        lsock.listen(conns + 16)
        lsock.setblocking(False)
        addr = lsock.getsockname()
        servers = []

        async def acceptor() -> None:
            for _ in range(conns):
                conn, _ = await loop.sock_accept(lsock)
                conn.setblocking(False)
                _nodelay(conn)
                servers.append(loop.create_task(serve(conn)))

        acc = loop.create_task(acceptor())
        socks = []
        for _ in range(conns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            _nodelay(s)
            socks.append(s)
        await asyncio.gather(*[loop.sock_connect(s, addr) for s in socks])
        await asyncio.wait_for(acc, WATCHDOG)
        t0 = time.perf_counter()
        lasts = await asyncio.wait_for(asyncio.gather(*[client(s) for s in socks]), WATCHDOG)
        elapsed = time.perf_counter() - t0
        if any(last != msg for last in lasts):
            raise WrongResult("sock echo: a connection's last message came back changed")
        for s in socks:
            s.close()
        await asyncio.wait_for(asyncio.gather(*servers), WATCHDOG)
        lsock.close()
        return elapsed

    elapsed = loop.run_until_complete(main())
    return elapsed, rounds * conns


def _echo_rows(kind: str, func) -> dict:
    """Four rows per kind: 1 KiB / 64 KiB messages x 1 / 100 connections."""
    rows = {}
    for size, size_name in ((1024, "1k"), (65536, "64k")):
        for conns in (1, 100):
            name = f"{kind}_{size_name}_{conns}c"

            def wl(loop, total, size=size, conns=conns):
                return func(loop, total, size, conns)

            wl.__name__ = f"wl_{name}"
            rows[name] = (wl, size, conns)
    return rows


TCP_PROTO_ROWS = _echo_rows("tcp_proto", _tcp_proto)
TCP_STREAM_ROWS = _echo_rows("tcp_stream", _tcp_streams)
TCP_SOCK_ROWS = _echo_rows("tcp_sock", _tcp_sock)


# --------------------------------------------------------------------------------------------
# UDP echo.
# --------------------------------------------------------------------------------------------


class _UdpEchoServer(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self, msg: bytes, rounds: int, done: asyncio.Future) -> None:
        self.msg = msg
        self.rounds = rounds
        self.done = done
        self.count = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if data != self.msg:
            if not self.done.done():
                self.done.set_exception(WrongResult("udp echo: a datagram came back changed"))
            return
        self.count += 1
        if self.count == self.rounds:
            if not self.done.done():
                self.done.set_result(None)
        else:
            self.transport.sendto(self.msg)

    def error_received(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


def wl_udp_echo(loop: asyncio.AbstractEventLoop, rounds: int) -> tuple[float, int]:
    """One client, one 1 KiB datagram in flight at a time (ping-pong)."""
    msg = _message(1024)

    async def main() -> float:
        server_tr, _ = await loop.create_datagram_endpoint(_UdpEchoServer, local_addr=(HOST, 0))
        addr = server_tr.get_extra_info("sockname")
        done = loop.create_future()
        client_tr, client = await loop.create_datagram_endpoint(
            lambda: _UdpClient(msg, rounds, done), remote_addr=addr
        )
        dog = _watchdog(loop, done, "udp echo")
        t0 = time.perf_counter()
        client_tr.sendto(msg)
        await done
        elapsed = time.perf_counter() - t0
        dog.cancel()
        client_tr.close()
        server_tr.close()
        await asyncio.sleep(0)
        return elapsed

    return loop.run_until_complete(main()), rounds


# --------------------------------------------------------------------------------------------
# TLS echo: the Protocol echo over ssl=, with a self-signed certificate made at run time.
# --------------------------------------------------------------------------------------------

CERT_ENV = "FERROLOOP_BENCH_CERT_DIR"


def make_cert(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for "localhost" (and 127.0.0.1) into directory.

    Uses the `cryptography` package if it imports, else the `openssl` command.
    Returns (cert.pem, key.pem).
    """
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _make_cert_cryptography(cert, key)
    except ImportError:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    return cert, key


def _make_cert_cryptography(cert: Path, key: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    pkey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .sign(pkey, hashes.SHA256())
    )
    key.write_bytes(
        pkey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))


def _ssl_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    directory = os.environ.get(CERT_ENV)
    if directory:
        cert, key = make_cert(Path(directory))
    else:
        import tempfile

        cert, key = make_cert(Path(tempfile.mkdtemp(prefix="ferroloop-bench-cert-")))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)  # verifies the chain and the host name "localhost"
    return server, client


def _tls(loop: asyncio.AbstractEventLoop, total: int, size: int) -> tuple[float, int]:
    server_ctx, client_ctx = _ssl_contexts()
    return _tcp_proto(loop, total, size, 1, server_ssl=server_ctx, client_ssl=client_ctx)


def wl_tls_1k(loop, total):
    return _tls(loop, total, 1024)


def wl_tls_64k(loop, total):
    return _tls(loop, total, 65536)


# --------------------------------------------------------------------------------------------
# HTTP servers on the loop under test, loaded from a separate process (bench/httpclient.py).
# --------------------------------------------------------------------------------------------

HTTP_CONNS = 10
HTTP_BODY = b"Hello, World!"


def _load_http(loop: asyncio.AbstractEventLoop, port: int, requests: int) -> float:
    """Run the client process against port while the loop serves; return its timed seconds."""
    cmd = [
        sys.executable,
        str(HERE / "httpclient.py"),
        "--port", str(port),
        "--requests", str(requests),
        "--warmup", str(max(100, requests // 10)),
        "--conns", str(HTTP_CONNS),
        "--body", HTTP_BODY.decode(),
    ]  # fmt: skip
    # Server and client share one CPU: on a small shared machine, whether the two processes
    # get a core each or take turns on one changes the result twofold; pinned, the figure is
    # steady (the CPU time of both per request) and the same for every loop under test.
    cpu = {min(os.sched_getaffinity(0))} if hasattr(os, "sched_setaffinity") else None
    if cpu:
        os.sched_setaffinity(0, cpu)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cpu:
        os.sched_setaffinity(proc.pid, cpu)

    def wait() -> tuple[str, str]:
        try:
            return proc.communicate(timeout=WATCHDOG)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return out, err + f"\nhttp client: killed after {WATCHDOG:.0f}s"

    # The loop keeps serving while a thread waits for the client (no subprocess support needed).
    done = loop.create_future()

    def waiter() -> None:
        res = wait()
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(res))

    import threading

    threading.Thread(target=waiter, daemon=True).start()
    out, err = loop.run_until_complete(done)
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        raise WrongResult(f"http client failed (exit {proc.returncode}): {tail}")
    res = json.loads(lines[-1])
    if res.get("ok") != requests:
        raise WrongResult(f"http: {res.get('ok')} of {requests} requests answered correctly")
    return float(res["elapsed"])


def wl_http_aiohttp(loop: asyncio.AbstractEventLoop, requests: int) -> tuple[float, int]:
    from aiohttp import web

    async def hello(request):
        return web.Response(body=HTTP_BODY, content_type="text/plain")

    async def start():
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        return runner, runner.addresses[0][1]

    runner, port = loop.run_until_complete(start())
    try:
        elapsed = _load_http(loop, port, requests)
    finally:
        loop.run_until_complete(runner.cleanup())
    return elapsed, requests


def wl_http_uvicorn(loop: asyncio.AbstractEventLoop, requests: int) -> tuple[float, int]:
    import uvicorn

    async def app(scope, receive, send):
        assert scope["type"] == "http"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(HTTP_BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": HTTP_BODY})

    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    # host/port: uvicorn's single-process path, loop.create_server(host=, port=) (port 0 here)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=0,
        lifespan="off",
        log_level="warning",
        access_log=False,
        http=http,
        ws="none",
    )
    server = uvicorn.Server(config)

    async def start():
        task = loop.create_task(server.serve())
        deadline = time.monotonic() + 30
        while not server.started:
            if task.done():
                task.result()  # raises the server's startup error
                raise WrongResult("uvicorn: server stopped during startup")
            if time.monotonic() > deadline:
                raise WrongResult("uvicorn: not started after 30s")
            await asyncio.sleep(0.01)
        return task, server.servers[0].sockets[0].getsockname()[1]

    async def stop(task):
        server.should_exit = True
        await asyncio.wait_for(task, 30)

    task, port = loop.run_until_complete(start())
    try:
        elapsed = _load_http(loop, port, requests)
    finally:
        loop.run_until_complete(stop(task))
    return elapsed, requests


# --------------------------------------------------------------------------------------------
# Memory: peak RSS growth per idle connection and per pending task.
# --------------------------------------------------------------------------------------------


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakMeter:
    """Peak RSS growth over a block: the peak mark is reset to the current RSS at start."""

    def __enter__(self):
        gc.collect()
        if not _reset_peak():
            raise WrongResult("memory: cannot reset the peak RSS mark (/proc/self/clear_refs)")
        self.base = _rss_now()
        return self

    def __exit__(self, *exc) -> None:
        self.grown = max(0, _peak_rss() - self.base)


class _Idle(asyncio.Protocol):
    count = 0
    target = 0
    done: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        cls = type(self)
        cls.count += 1
        if cls.count == cls.target and cls.done is not None and not cls.done.done():
            cls.done.set_result(None)


# The memory rows measure the marginal cost: a first batch of PRE_SHARE * n connections (or
# tasks) is made before the meter starts, so memory the process already holds but has freed
# (from imports, the warm-up, ...) is used up by it and does not hide the cost of the next n.
PRE_SHARE = 0.5


def wl_mem_idle_conn(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """Peak RSS growth per idle TCP connection accepted by create_server.

    Clients are plain blocking sockets, connected (into the listen backlog) before the meter
    starts; the measured block is the loop accepting n of them and making one server
    transport + protocol each, then one more loop pass with all of them idle.
    """
    pre = int(n * PRE_SHARE)
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2 * (n + pre) + 100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * (n + pre) + 100), hard))
    except (ValueError, OSError):
        pass

    async def main() -> int:
        _Idle.count = 0
        server = await loop.create_server(_Idle, HOST, 0, backlog=min(max(n, pre) + 16, 4096))
        port = server.sockets[0].getsockname()[1]
        clients = []

        async def accept(k: int, meter: _PeakMeter | None) -> None:
            clients.extend(socket.create_connection((HOST, port)) for _ in range(k))
            _Idle.target = _Idle.count + k
            _Idle.done = loop.create_future()
            with meter or contextlib.nullcontext():
                dog = _watchdog(loop, _Idle.done, "idle connections")
                await _Idle.done
                dog.cancel()
                await asyncio.sleep(0.01)

        await accept(pre, None)
        meter = _PeakMeter()
        await accept(n, meter)
        if _Idle.count != n + pre:
            raise WrongResult(f"idle connections: {_Idle.count} of {n + pre} accepted")
        for c in clients:
            c.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
        return meter.grown

    grown = loop.run_until_complete(main())
    return float(grown), n


def wl_mem_pending_task(loop: asyncio.AbstractEventLoop, n: int) -> tuple[float, int]:
    """Peak RSS growth per pending task: n tasks made with loop.create_task, each suspended
    on one shared future (the task, its coroutine and its wake-up callback)."""

    async def waiter(gate: asyncio.Future) -> int:
        return await gate

    async def main() -> int:
        gate = loop.create_future()
        tasks = [loop.create_task(waiter(gate)) for _ in range(int(n * PRE_SHARE))]
        await asyncio.sleep(0)
        with _PeakMeter() as meter:
            tasks += [loop.create_task(waiter(gate)) for _ in range(n)]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        pending = sum(1 for t in tasks if not t.done())
        if pending != len(tasks):
            raise WrongResult(f"pending tasks: {pending} of {len(tasks)} pending")
        gate.set_result(1)
        results = await asyncio.gather(*tasks)
        if sum(results) != len(tasks):
            raise WrongResult("pending tasks: not every task finished")
        return meter.grown

    grown = loop.run_until_complete(main())
    return float(grown), n
