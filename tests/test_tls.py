"""TLS: ssl= on connections and servers, loop.start_tls, and the SSL protocol itself.

Every test runs on asyncio's loop (with asyncio's own sslproto.SSLProtocol, the oracle) and on
ferroloop's (with ferroloop._tls.SSLProtocol). Certificates are made at test time with the
``openssl`` command (a CA and a "localhost" server certificate it signs); without it, CPython's
own test certificates from the stdlib install are used.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import dataclasses
import hashlib
import logging
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sysconfig
import threading

import ferroloop._tls
import pytest

TIMEOUT = 60  # a watchdog against hangs, not an assertion on duration


# --------------------------------------------------------------------------- certificates


@dataclasses.dataclass(frozen=True)
class Certs:
    ca: str  # the CA that signed the server certificate
    cert: str  # server certificate for "localhost" (and 127.0.0.1)
    key: str


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    if shutil.which("openssl") is None:
        certdata = os.path.join(sysconfig.get_paths()["stdlib"], "test", "certdata")
        if not os.path.isdir(certdata):
            pytest.skip("neither the openssl command nor CPython's test certificates")
        keycert = os.path.join(certdata, "keycert3.pem")  # localhost, signed by pycacert
        return Certs(os.path.join(certdata, "pycacert.pem"), keycert, keycert)
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=ferroloop test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
             cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
        cwd=d,
    )  # fmt: skip
    return Certs(str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key"))


def server_context(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.cert, certs.key)
    return ctx


def client_context(certs: Certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certs.ca)


# --------------------------------------------------------------------------- helpers


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


def ssl_protocol_class(loop_kind):
    """The SSL protocol each loop uses: asyncio's (the oracle) or ferroloop's."""
    if loop_kind == "asyncio":
        return asyncio.sslproto.SSLProtocol
    return ferroloop._tls.SSLProtocol


def collect_errors(loop):
    """Record what reaches the loop's exception handler."""
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    return errors


def describe(exc):
    return None if exc is None else type(exc).__name__


class Recorder(asyncio.Protocol):
    """An app protocol that records its callbacks (connection_lost must come exactly once)."""

    def __init__(self, loop, *, eof_result=None, on_data=None):
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.eof_result = eof_result
        self.on_data = on_data
        self.lost_exc = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        if self.on_data is not None:
            self.on_data(self, data)

    def eof_received(self):
        self.events.append("eof")
        return self.eof_result

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")

    def connection_lost(self, exc):
        self.events.append(("lost", describe(exc)))
        self.lost_exc = exc
        self.lost.set_result(exc)  # a second call would raise InvalidStateError


class BufferedRecorder(asyncio.BufferedProtocol):
    """A BufferedProtocol app: the SSL protocol decrypts into its buffer."""

    def __init__(self, loop, want):
        self.buf = bytearray(64 * 1024)
        self.data = bytearray()
        self.want = want
        self.done = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]
        if len(self.data) >= self.want and not self.done.done():
            self.done.set_result(None)

    def eof_received(self):
        pass

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class Echo(asyncio.Protocol):
    def __init__(self):
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def tls_server(loop, certs, factory, **kwargs):
    ctx = kwargs.pop("ssl", None) or server_context(certs)
    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx, **kwargs)
    return server, server.sockets[0].getsockname()[1]


class ThreadPeer:
    """A peer served by a thread over blocking sockets: ``target(conn, peer)`` runs once a
    client connects. ``peer.release`` is set when the test is done with it."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(TIMEOUT)
        self.port = self.lsock.getsockname()[1]
        self.release = threading.Event()
        self.accepted = False
        self.error = None
        self.result = None
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        try:
            conn, _ = self.lsock.accept()
        except OSError as e:
            self.error = e
            return
        self.accepted = True
        conn.settimeout(TIMEOUT)
        try:
            self.result = self.target(conn, self)
        except BaseException as e:  # reported by __exit__
            self.error = e
        finally:
            conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        if not self.accepted:
            # The test failed before connecting: unblock accept() with a connection.
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT):
                pass
        self.lsock.close()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


# --------------------------------------------------------------------------- echo


@pytest.mark.parametrize("size", [1, 4 * 1024 * 1024])
def test_echo_both_ways(loop_factory, certs, size):
    loop = loop_factory()
    errors = collect_errors(loop)
    payload = os.urandom(size)
    echoes = []

    def echo_factory():
        e = Echo()
        echoes.append(e)
        return e

    async def main():
        server, port = await tls_server(loop, certs, echo_factory)
        got = loop.create_future()

        def on_data(proto, data):
            if len(proto.data) >= size and not got.done():
                got.set_result(None)

        tr, proto = await loop.create_connection(
            lambda: Recorder(loop, on_data=on_data),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
        )
        assert isinstance(tr, asyncio.Transport)
        tr.write(payload)
        await got
        tr.close()
        assert tr.is_closing()
        exc = await proto.lost
        server_exc = await echoes[0].lost
        server.close()
        await server.wait_closed()
        return proto, exc, server_exc

    proto, exc, server_exc = run(loop, main())
    assert bytes(proto.data) == payload
    assert exc is None and server_exc is None
    # close() flushes, sends close_notify and waits for the peer's: eof_received comes last.
    assert proto.events == ["made", "data", "eof", ("lost", None)]
    assert errors == []


def test_echo_buffered_protocol_and_writelines(loop_factory, certs):
    loop = loop_factory()
    chunks = [os.urandom(700 * 1024) for _ in range(3)]
    total = b"".join(chunks)

    async def main():
        server, port = await tls_server(loop, certs, Echo)
        tr, proto = await loop.create_connection(
            lambda: BufferedRecorder(loop, len(total)),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
        )
        tr.writelines(chunks)
        await proto.done
        tr.close()
        exc = await proto.lost
        server.close()
        await server.wait_closed()
        return bytes(proto.data), exc

    data, exc = run(loop, main())
    assert data == total
    assert exc is None


def test_streams_large_transfer(loop_factory, certs):
    loop = loop_factory()
    size = 3 * 1024 * 1024
    payload = os.urandom(size)

    async def handler(reader, writer):
        data = await reader.readexactly(size)
        writer.write(hashlib.sha256(data).digest())
        writer.write(data[::-1])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_context(certs))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(certs), server_hostname="localhost"
        )
        writer.write(payload)
        await writer.drain()
        digest = await reader.readexactly(32)
        back = await reader.readexactly(size)
        rest = await reader.read()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return digest, back, rest

    digest, back, rest = run(loop, main())
    assert digest == hashlib.sha256(payload).digest()
    assert back == payload[::-1]
    assert rest == b""


# --------------------------------------------------------------------------- handshake


def _failed_handshake(loop_factory, certs, client_ctx, server_hostname, debug):
    loop = loop_factory()
    loop.set_debug(debug)
    errors = collect_errors(loop)

    async def main():
        server, port = await tls_server(loop, certs, asyncio.Protocol)
        try:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await loop.create_connection(
                    asyncio.Protocol,
                    "127.0.0.1",
                    port,
                    ssl=client_ctx,
                    server_hostname=server_hostname,
                )
        finally:
            server.close()
            await server.wait_closed()
        await asyncio.sleep(0.05)  # let the server side see the alert
        return info.value

    exc = run(loop, main())
    assert exc.reason == "CERTIFICATE_VERIFY_FAILED"
    # The client drops the connection: in debug mode the server reports the failed accept.
    reported = [(ctx["message"], describe(ctx.get("exception"))) for ctx in errors]
    if debug:
        assert reported == [
            ("Error on transport creation for incoming connection", "ConnectionResetError")
        ]
    else:
        assert reported == []
    return exc


@pytest.mark.parametrize("debug", [False, True])
def test_handshake_wrong_hostname(loop_factory, certs, debug):
    exc = _failed_handshake(loop_factory, certs, client_context(certs), "wrong.example", debug)
    assert "Hostname mismatch" in exc.verify_message


@pytest.mark.parametrize("debug", [False, True])
def test_handshake_untrusted_certificate(loop_factory, certs, debug):
    ctx = ssl.create_default_context()  # the system's CAs: our test CA is not among them
    exc = _failed_handshake(loop_factory, certs, ctx, "localhost", debug)
    assert exc.verify_code != 0
    assert "Hostname mismatch" not in exc.verify_message


def test_handshake_timeout(loop_factory, certs):
    loop = loop_factory()
    errors = collect_errors(loop)
    # A listening socket nobody accepts on: TCP connects, the TLS handshake never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]

    async def main():
        with pytest.raises(ConnectionAbortedError) as info:
            await loop.create_connection(
                asyncio.Protocol,
                "127.0.0.1",
                port,
                ssl=client_context(certs),
                server_hostname="localhost",
                ssl_handshake_timeout=0.2,
            )
        return info.value

    try:
        exc = run(loop, main())
    finally:
        silent.close()
    assert str(exc) == ("SSL handshake is taking longer than 0.2 seconds: aborting the connection")
    assert errors == []


def test_cancel_during_handshake_closes_socket(loop_factory, certs):
    """A cancelled handshake closes the raw connection and reports nothing."""
    loop = loop_factory()
    errors = collect_errors(loop)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    silent.settimeout(TIMEOUT)
    port = silent.getsockname()[1]

    async def main():
        task = loop.create_task(
            loop.create_connection(
                asyncio.Protocol,
                "127.0.0.1",
                port,
                ssl=client_context(certs),
                server_hostname="localhost",
            )
        )
        await asyncio.sleep(0.1)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)

    try:
        run(loop, main())
        conn, _ = silent.accept()
        conn.settimeout(TIMEOUT)
        received = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
        conn.close()
    finally:
        silent.close()
    assert received[:1] == b"\x16"  # the ClientHello record, then EOF
    assert errors == []


@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_or_abort_during_handshake(loop_kind, loop_factory, certs, how):
    """The app transport closed before the handshake ends: the raw transport is aborted, the
    waiter gets the outcome, the app protocol hears nothing."""
    loop = loop_factory()
    errors = collect_errors(loop)
    cls = ssl_protocol_class(loop_kind)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    app = Recorder(loop)

    async def main():
        waiter = loop.create_future()
        raw, ssl_proto = await loop.create_connection(
            lambda: cls(loop, app, client_context(certs), waiter, server_hostname="localhost"),
            "127.0.0.1",
            port,
        )
        app_tr = ssl_proto._get_app_transport()
        getattr(app_tr, how)()
        assert app_tr.is_closing()
        await asyncio.sleep(0.05)
        return waiter, raw

    try:
        waiter, raw = run(loop, main())
    finally:
        silent.close()
    assert waiter.done() and waiter.exception() is None
    assert raw.is_closing()
    assert app.events == []
    assert errors == []


# --------------------------------------------------------------------------- shutdown


def test_shutdown_timeout(loop_factory, certs):
    """The peer reads our close_notify but never answers: the shutdown times out."""
    loop = loop_factory()
    errors = collect_errors(loop)
    sctx = server_context(certs)

    def peer(conn, p):
        tls = sctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"ready")
        got = tls.recv(1024)  # b"" once close_notify arrives; no reply is sent
        p.release.wait(TIMEOUT)
        tls.detach()
        return got

    async def main(port):
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
            ssl_shutdown_timeout=0.3,
        )
        while len(proto.data) < 5:
            await asyncio.sleep(0.01)
        tr.close()
        return proto, await proto.lost

    with ThreadPeer(peer) as p:
        proto, exc = run(loop, main(p.port))
    assert p.error is None and p.result == b""
    assert isinstance(exc, TimeoutError) and str(exc) == "SSL shutdown timed out"
    assert proto.events == ["made", "data", ("lost", "TimeoutError")]
    assert errors == []


@pytest.mark.parametrize("eof_result", [None, True])
def test_peer_close_notify_after_data(loop_factory, certs, caplog, eof_result):
    """Data, then the peer's close_notify: data_received, eof_received, connection_lost(None);
    eof_received returning true only earns asyncio's warning."""
    loop = loop_factory()
    errors = collect_errors(loop)
    sctx = server_context(certs)

    def peer(conn, p):
        tls = sctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"goodbye")
        plain = tls.unwrap()  # sends close_notify, waits for the client's
        plain.detach()

    async def main(port):
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop, eof_result=eof_result),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
        )
        exc = await proto.lost
        # Writes after the close are dropped; past the threshold asyncio logs a warning.
        for _ in range(7):
            tr.write(b"late")
        return proto, exc

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        with ThreadPeer(peer) as p:
            proto, exc = run(loop, main(p.port))
    assert p.error is None
    assert exc is None
    assert bytes(proto.data) == b"goodbye"
    assert proto.events == ["made", "data", "eof", ("lost", None)]
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    warned = "returning true from eof_received() has no effect when using ssl" in messages
    assert warned == bool(eof_result)
    assert "SSL connection is closed" in messages
    assert errors == []


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_peer_vanishes(loop_factory, certs, how):
    """The peer drops the TCP connection without close_notify (FIN or RST)."""
    loop = loop_factory()
    errors = collect_errors(loop)
    sctx = server_context(certs)

    def peer(conn, p):
        tls = sctx.wrap_socket(conn, server_side=True)
        tls.sendall(b"hi")
        assert tls.recv(3) == b"ack"
        raw = tls.detach()
        raw = socket.socket(fileno=raw) if isinstance(raw, int) else raw
        if how == "rst":
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()

    def on_data(proto, data):
        proto.transport.write(b"ack")

    async def main(port):
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop, on_data=on_data),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
        )
        exc = await proto.lost
        await asyncio.sleep(0)
        return tr, proto, exc

    with ThreadPeer(peer) as p:
        tr, proto, exc = run(loop, main(p.port))
    assert p.error is None
    assert bytes(proto.data) == b"hi"
    if how == "fin":
        assert proto.events == ["made", "data", "eof", ("lost", None)]
    else:
        assert proto.events == ["made", "data", ("lost", "ConnectionResetError")]
    assert tr.is_closing()
    assert errors == []


def test_abort_after_handshake(loop_factory, certs):
    loop = loop_factory()
    errors = collect_errors(loop)

    async def main():
        server, port = await tls_server(loop, certs, Echo)
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
        )
        tr.write(b"dropped or not")
        tr.abort()
        assert tr.is_closing()
        exc = await proto.lost
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        return proto, exc

    proto, exc = run(loop, main())
    assert exc is None
    assert proto.events == ["made", ("lost", None)]
    assert errors == []


# --------------------------------------------------------------------------- ALPN, SNI, extra info


def test_alpn(loop_factory, certs):
    loop = loop_factory()
    sctx = server_context(certs)
    sctx.set_alpn_protocols(["h2", "http/1.1"])
    cctx = client_context(certs)
    cctx.set_alpn_protocols(["http/1.1", "spdy/3"])
    server_side = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            server_side.append(transport.get_extra_info("ssl_object").selected_alpn_protocol())

    async def main():
        server, port = await tls_server(loop, certs, Server, ssl=sctx)
        tr, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, ssl=cctx, server_hostname="localhost"
        )
        chosen = tr.get_extra_info("ssl_object").selected_alpn_protocol()
        tr.close()
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        return chosen

    assert run(loop, main()) == "http/1.1"
    assert server_side == ["http/1.1"]


def test_sni_callback_switches_context(loop_factory, certs):
    loop = loop_factory()
    seen = []
    sctx = server_context(certs)
    other = server_context(certs)
    other.set_alpn_protocols(["picked-by-sni"])

    def sni(sslobj, name, ctx):
        seen.append((type(sslobj).__name__, name))
        sslobj.context = other

    sctx.sni_callback = sni
    cctx = client_context(certs)
    cctx.set_alpn_protocols(["picked-by-sni"])
    server_extra = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            obj = transport.get_extra_info("ssl_object")
            server_extra.append((obj.context is other, obj.selected_alpn_protocol()))

    async def main():
        server, port = await tls_server(loop, certs, Server, ssl=sctx)
        tr, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, ssl=cctx, server_hostname="localhost"
        )
        obj = tr.get_extra_info("ssl_object")
        result = (obj.server_hostname, obj.selected_alpn_protocol())
        tr.close()
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        return result

    assert run(loop, main()) == ("localhost", "picked-by-sni")
    assert seen == [("SSLObject", "localhost")]
    assert server_extra == [(True, "picked-by-sni")]


def test_get_extra_info_and_transport_api(loop_factory, certs):
    loop = loop_factory()
    cctx = client_context(certs)
    server_info = []

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            obj = transport.get_extra_info("ssl_object")
            server_info.append(
                (
                    transport.get_extra_info("peercert") == obj.getpeercert(),
                    transport.get_extra_info("sslcontext") is not None,
                    obj.server_side,
                )
            )

    async def main():
        server, port = await tls_server(loop, certs, Server)
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop), "127.0.0.1", port, ssl=cctx, server_hostname="localhost"
        )
        obj = tr.get_extra_info("ssl_object")
        sentinel = object()
        info = {
            "is_transport": isinstance(tr, asyncio.Transport),
            "ssl_object": isinstance(obj, ssl.SSLObject) and not obj.server_side,
            "peercert": tr.get_extra_info("peercert") == obj.getpeercert(),
            "subject": dict(x[0] for x in tr.get_extra_info("peercert")["subject"]),
            "cipher": tr.get_extra_info("cipher") == obj.cipher(),
            "compression": tr.get_extra_info("compression") == obj.compression(),
            "sslcontext": tr.get_extra_info("sslcontext") is cctx,
            "peername": tr.get_extra_info("peername") == ("127.0.0.1", port),
            "sockname": tr.get_extra_info("sockname")[0],
            "socket": tr.get_extra_info("socket").fileno() >= 0,
            "missing": tr.get_extra_info("no such key", sentinel) is sentinel,
            "missing_none": tr.get_extra_info("no such key"),
            "protocol": tr.get_protocol() is proto,
            "can_write_eof": tr.can_write_eof(),
            "reading": tr.is_reading(),
            "limits": tr.get_write_buffer_limits(),
            "size": tr.get_write_buffer_size(),
        }
        with pytest.raises(NotImplementedError):
            tr.write_eof()
        with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got str"):
            tr.write("text")
        tr.set_write_buffer_limits(high=1000)
        info["limits_after"] = tr.get_write_buffer_limits()
        with pytest.raises(ValueError, match=r"high \(1\) must be >= low \(2\) must be >= 0"):
            tr.set_write_buffer_limits(high=1, low=2)
        other = asyncio.Protocol()
        tr.set_protocol(other)
        info["set_protocol"] = tr.get_protocol() is other
        tr.set_protocol(proto)
        tr.close()
        await proto.lost
        info["closed_extra"] = tr.get_extra_info("peername")
        server.close()
        await server.wait_closed()
        return info

    info = run(loop, main())
    assert info == {
        "is_transport": True,
        "ssl_object": True,
        "peercert": True,
        "subject": {"commonName": "localhost"},
        "cipher": True,
        "compression": True,
        "sslcontext": True,
        "peername": True,
        "sockname": "127.0.0.1",
        "socket": True,
        "missing": True,
        "missing_none": None,
        "protocol": True,
        "can_write_eof": False,
        "reading": True,
        "limits": (128 * 1024, 512 * 1024),
        "size": 0,
        "limits_after": (250, 1000),
        "set_protocol": True,
        "closed_extra": None,
    }
    assert server_info == [(True, True, True)]


# --------------------------------------------------------------------------- flow control


def test_write_flow_control(loop_factory, certs):
    """A peer that stops reading makes the app protocol pause; draining resumes it."""
    loop = loop_factory()
    errors = collect_errors(loop)
    received = []
    server_transports = []

    class Sink(asyncio.Protocol):
        def connection_made(self, transport):
            server_transports.append(transport)
            transport.pause_reading()

        def data_received(self, data):
            received.append(len(data))

    async def main():
        server, port = await tls_server(loop, certs, Sink)
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
        )
        tr.set_write_buffer_limits(high=64 * 1024)
        chunk = b"x" * (256 * 1024)
        written = 0
        for _ in range(256):
            tr.write(chunk)
            written += len(chunk)
            await asyncio.sleep(0)
            if "pause_writing" in proto.events:
                break
        paused = "pause_writing" in proto.events
        size_when_paused = tr.get_write_buffer_size()
        server_transports[0].resume_reading()
        while sum(received) < written:
            await asyncio.sleep(0.01)
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()
        return paused, size_when_paused, written, proto.events

    paused, size_when_paused, written, events = run(loop, main())
    assert paused
    assert size_when_paused > 64 * 1024
    assert sum(received) == written
    assert events[:3] == ["made", "pause_writing", "resume_writing"]
    assert events[-1] == ("lost", None)
    assert errors == []


@pytest.mark.parametrize("size", [7, 2 * 1024 * 1024])
def test_pause_and_resume_reading(loop_factory, certs, size):
    """While the app does not read, nothing is delivered; once the SSL protocol holds more
    than its read high-water mark it pauses the raw transport; resuming delivers it all."""
    loop = loop_factory()
    payload = os.urandom(size)

    class Sender(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if data == b"go":
                self.transport.write(payload)

    async def main():
        server, port = await tls_server(loop, certs, Sender)
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
        )
        raw = tr._ssl_protocol._transport
        tr.pause_reading()
        states = [tr.is_reading()]
        tr.write(b"go")
        high = tr.get_read_buffer_limits()[1]
        if size > high:
            while tr.get_read_buffer_size() < high:
                await asyncio.sleep(0.01)
            raw_reading = raw.is_reading()
        else:
            await asyncio.sleep(0.2)
            raw_reading = raw.is_reading()
        while_paused = bytes(proto.data)
        tr.resume_reading()
        states.append(tr.is_reading())
        while len(proto.data) < size:
            await asyncio.sleep(0.01)
        states.append(raw.is_reading())
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()
        return states, raw_reading, while_paused, bytes(proto.data)

    states, raw_reading, while_paused, data = run(loop, main())
    assert states == [False, True, True]
    assert raw_reading == (size <= 256 * 1024)
    assert while_paused == b""
    assert data == payload


def test_our_data_after_peer_close_notify(loop_factory, certs):
    """The peer sends close_notify and keeps reading: what we still have to send reaches it,
    then our close_notify (asyncio's SSL shutdown flushes first)."""
    loop = loop_factory()
    errors = collect_errors(loop)
    sctx = server_context(certs)
    size = 8 * 1024 * 1024

    def peer(conn, p):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = sctx.wrap_bio(incoming, outgoing, server_side=True)

        def flush():
            if outgoing.pending:
                conn.sendall(outgoing.read())

        def fill():
            data = conn.recv(65536)
            if not data:
                raise ConnectionError("EOF before close_notify")
            incoming.write(data)

        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                fill()
        flush()
        obj.write(b"pong")
        flush()
        got = 0
        sent_close = False
        while True:
            try:
                got += len(obj.read(65536))
            except ssl.SSLWantReadError:
                if got and not sent_close:
                    # The client is sending: close_notify now (with nothing unread, as
                    # OpenSSL's shutdown reads on), and keep reading.
                    with pytest.raises(ssl.SSLWantReadError):
                        obj.unwrap()
                    flush()
                    sent_close = True
                fill()
            except ssl.SSLZeroReturnError:
                break
        obj.unwrap()  # the client's close_notify arrived
        return got

    async def main(port):
        tr, proto = await loop.create_connection(
            lambda: Recorder(loop),
            "127.0.0.1",
            port,
            ssl=client_context(certs),
            server_hostname="localhost",
        )
        while bytes(proto.data) != b"pong":
            await asyncio.sleep(0.01)
        tr.write(b"y" * size)
        return proto, await proto.lost

    with ThreadPeer(peer) as p:
        proto, exc = run(loop, main(p.port))
    assert p.error is None
    assert p.result == size
    assert exc is None
    assert proto.events == ["made", "data", "eof", ("lost", None)]
    assert errors == []


# --------------------------------------------------------------------------- start_tls


def test_start_tls_wrong_args(loop_factory, certs):
    loop = loop_factory()

    async def main():
        with pytest.raises(
            TypeError, match="sslcontext is expected to be an instance of ssl.SSLContext, got None"
        ):
            await loop.start_tls(None, None, None)
        with pytest.raises(TypeError, match="transport None is not supported by start_tls"):
            await loop.start_tls(None, None, server_context(certs))

    run(loop, main())


def test_start_tls_protocols(loop_factory, certs):
    """STARTTLS with protocols: plain text, then both ends upgrade the same connection."""
    loop = loop_factory()
    errors = collect_errors(loop)
    sctx = server_context(certs)
    server_log = []
    server_done = loop.create_future()

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            server_log.append(data)
            if data == b"STARTTLS\n":
                self.transport.pause_reading()
                self.transport.write(b"OK\n")
                loop.create_task(self.upgrade())
            elif data == b"ping":
                self.transport.write(b"pong")

        async def upgrade(self):
            plain = self.transport
            self.transport = await loop.start_tls(plain, self, sctx, server_side=True)
            server_log.append(("tls", self.transport.get_extra_info("ssl_object") is not None))
            # Only now may the client talk: data arriving before start_tls returns would be
            # answered on the plain transport.
            self.transport.write(b"ready")

        def eof_received(self):
            server_log.append("eof")

        def connection_lost(self, exc):
            server_done.set_result(exc)

    async def main():
        server = await loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ok = loop.create_future()

        def on_data(proto, data):
            if bytes(proto.data) == b"OK\n":
                ok.set_result(None)

        plain, proto = await loop.create_connection(
            lambda: Recorder(loop, on_data=on_data), "127.0.0.1", port
        )
        plain.write(b"STARTTLS\n")
        await ok
        proto.on_data = None
        proto.data.clear()
        tls = await loop.start_tls(plain, proto, client_context(certs), server_hostname="localhost")
        assert tls.get_protocol() is proto
        while bytes(proto.data) != b"ready":
            await asyncio.sleep(0.01)
        proto.data.clear()
        tls.write(b"ping")
        while bytes(proto.data) != b"pong":
            await asyncio.sleep(0.01)
        info = (
            isinstance(tls, asyncio.Transport),
            tls.get_extra_info("ssl_object").server_hostname,
            plain.get_extra_info("ssl_object"),
        )
        tls.close()
        exc = await proto.lost
        server_exc = await server_done
        server.close()
        await server.wait_closed()
        return info, exc, server_exc, proto.events

    info, exc, server_exc, events = run(loop, main())
    assert info == (True, "localhost", None)
    assert exc is None and server_exc is None
    # start_tls does not call connection_made again.
    assert events == ["made", "data", "eof", ("lost", None)]
    assert server_log == [b"STARTTLS\n", ("tls", True), b"ping", "eof"]
    assert errors == []


def test_start_tls_streams(loop_factory, certs):
    """STARTTLS through asyncio's streams (StreamWriter.start_tls goes through loop.start_tls)."""
    loop = loop_factory()
    sctx = server_context(certs)

    async def handler(reader, writer):
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"OK\n")
        await writer.drain()
        await writer.start_tls(sctx)
        line = await reader.readline()
        writer.write(line.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"OK\n"
        assert writer.get_extra_info("ssl_object") is None
        await writer.start_tls(client_context(certs), server_hostname="localhost")
        writer.write(b"hello over tls\n")
        line = await reader.readline()
        tls_on = writer.get_extra_info("ssl_object") is not None
        tail = await reader.read()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return line, tls_on, tail

    assert run(loop, main()) == (b"HELLO OVER TLS\n", True, b"")


def test_start_tls_handshake_failure(loop_factory, certs):
    """A start_tls whose handshake fails raises the verification error and closes."""
    loop = loop_factory()
    errors = collect_errors(loop)
    sctx = server_context(certs)

    class Server(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            loop.create_task(self.upgrade())

        async def upgrade(self):
            try:
                await loop.start_tls(self.transport, self, sctx, server_side=True)
            except (ssl.SSLError, ConnectionError):
                pass

    async def main():
        server = await loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        plain, proto = await loop.create_connection(lambda: Recorder(loop), "127.0.0.1", port)
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.start_tls(plain, proto, client_context(certs), server_hostname="nope")
        await asyncio.sleep(0.05)
        closing = plain.is_closing()
        server.close()
        await server.wait_closed()
        return closing

    assert run(loop, main()) is True
    assert errors == []


# --------------------------------------------------------------------------- the protocol itself


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ssl_handshake_timeout": 0}, "ssl_handshake_timeout should be a positive number, got 0"),
        ({"ssl_handshake_timeout": -1.5}, "should be a positive number, got -1.5"),
        ({"ssl_shutdown_timeout": 0}, "ssl_shutdown_timeout should be a positive number, got 0"),
        ({"server_side": True}, "Server side SSL needs a valid SSLContext"),
    ],
)
def test_ssl_protocol_argument_checks(loop_kind, loop_factory, kwargs, message):
    loop = loop_factory()
    cls = ssl_protocol_class(loop_kind)
    ctx = None if "server_side" in kwargs else ssl.create_default_context()
    with pytest.raises(ValueError, match=message):
        cls(loop, asyncio.Protocol(), ctx, None, **kwargs)


def test_ssl_protocol_defaults(loop_kind, loop_factory):
    loop = loop_factory()
    cls = ssl_protocol_class(loop_kind)
    proto = cls(loop, asyncio.Protocol(), None, None)
    tr = proto._app_transport
    try:
        ctx = tr.get_extra_info("sslcontext")
        assert isinstance(proto, asyncio.BufferedProtocol)
        assert isinstance(tr, asyncio.Transport)
        assert proto._get_app_transport() is tr
        assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname is False
        assert tr.get_extra_info("peername", "dflt") == "dflt"
        assert tr.get_write_buffer_limits() == (128 * 1024, 512 * 1024)
        assert tr.get_read_buffer_limits() == (64 * 1024, 256 * 1024)
        assert proto._state.name == "UNWRAPPED"
    finally:
        tr.close()


def test_ssl_protocol_works_on_any_loop(certs):
    """ferroloop's SSLProtocol runs unchanged on asyncio's own loop, as asyncio's does."""
    loop = asyncio.SelectorEventLoop()
    results = {}

    async def one(cls):
        server, port = await tls_server(loop, certs, Echo)
        waiter = loop.create_future()
        app = Recorder(loop)
        await loop.create_connection(
            lambda: cls(loop, app, client_context(certs), waiter, server_hostname="localhost"),
            "127.0.0.1",
            port,
        )
        await waiter
        app.transport.write(b"x" * 100_000)
        while len(app.data) < 100_000:
            await asyncio.sleep(0.01)
        app.transport.close()
        await app.lost
        server.close()
        await server.wait_closed()
        return app.events

    try:
        for cls in (asyncio.sslproto.SSLProtocol, ferroloop._tls.SSLProtocol):
            results[cls.__module__] = run(loop, one(cls))
    finally:
        loop.close()
    assert results["ferroloop._tls"] == results["asyncio.sslproto"]


def test_replaced_ssl_object_takes_every_later_read_and_write(loop_kind, loop_factory):
    """An SSL object assigned to `_sslobj` after construction (CPython's test_sslproto puts a
    mock there) is the one every later read and write goes to, not the one made at init."""
    from unittest import mock

    loop = loop_factory()
    cls = ssl_protocol_class(loop_kind)
    ssl_proto = cls(loop, asyncio.Protocol(), ssl.create_default_context(), None)
    sslobj = mock.Mock()
    sslobj.read.side_effect = ssl.SSLWantReadError
    sslobj.write.side_effect = len
    ssl_proto._sslobj = sslobj
    ssl_proto.connection_made(mock.Mock())
    try:
        loop.run_until_complete(asyncio.sleep(0))
        assert sslobj.do_handshake.called
        assert ssl_proto._state.name == "WRAPPED"
        buf = ssl_proto.get_buffer(-1)
        buf[:5] = b"hello"
        ssl_proto.buffer_updated(5)
        assert sslobj.read.called
        ssl_proto._app_transport.write(b"abc")
        assert [bytes(c.args[0]) for c in sslobj.write.call_args_list] == [b"abc"]
    finally:
        ssl_proto._app_transport.abort()
