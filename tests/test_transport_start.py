"""A socket transport's start and its extra info, as asyncio's: connection_made queued by the
constructor (its errors reported as a callback's, reading started even so, the protocol it
was made with called), and get_extra_info values for a server's accepted connection whether
asked for at once, late, or only after the connection was closed."""

from __future__ import annotations

import asyncio
import contextvars
import socket

import pytest

VAR = contextvars.ContextVar("VAR", default="unset")


def run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, 30))


class Accepted(asyncio.Protocol):
    """The server side: records the transport, the data and connection_lost."""

    instances: list[Accepted] = []

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.transport = None
        self.data = bytearray()
        self.got_data = loop.create_future()
        self.lost = loop.create_future()
        self.extra_when_lost = None
        self.ask_when_lost = False
        type(self).instances.append(self)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        if not self.got_data.done():
            self.got_data.set_result(None)

    def connection_lost(self, exc):
        if self.ask_when_lost:
            self.extra_when_lost = self.transport.get_extra_info("sockname")
        self.lost.set_result(exc)


async def accept_one(loop, factory=Accepted):
    """A server, one blocking client connected to it, and the accepted side's protocol."""
    Accepted.instances = []
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    for _ in range(1000):
        if Accepted.instances and Accepted.instances[-1].transport is not None:
            break
        await asyncio.sleep(0.005)
    return server, client, Accepted.instances[-1]


def test_accepted_extra_info(loop):
    async def main():
        server, client, proto = await accept_one(loop)
        t = proto.transport
        peername, sockname = client.getsockname(), client.getpeername()
        assert t.get_extra_info("peername") == peername
        assert t.get_extra_info("sockname") == sockname
        ts = t.get_extra_info("socket")
        assert ts is t.get_extra_info("socket")
        assert ts.fileno() == t._sock_fd
        assert ts.getsockname() == sockname
        assert t.get_extra_info("nope") is None
        assert t.get_extra_info("nope", 42) == 42
        assert list(t._extra) == ["peername", "socket", "sockname"]
        t.close()
        await proto.lost
        client.close()
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("ask", ["never", "in_connection_lost"])
def test_accepted_extra_info_after_close(loop, ask):
    """Values asked for only once the socket is closed are the ones of the open socket."""

    async def main():
        server, client, proto = await accept_one(loop)
        proto.ask_when_lost = ask == "in_connection_lost"
        t = proto.transport
        peername, sockname = client.getsockname(), client.getpeername()
        client.close()
        await proto.lost
        assert t.is_closing()
        if ask == "in_connection_lost":
            assert proto.extra_when_lost == sockname
        assert t.get_extra_info("sockname") == sockname
        assert t.get_extra_info("peername") == peername
        assert t.get_extra_info("socket").fileno() == -1
        assert set(t._extra) == {"peername", "sockname", "socket"}
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_accepted_extra_from_private_attributes(loop):
    """`_extra` and `_sock` read first (libraries do) give the complete info."""

    async def main():
        server, client, proto = await accept_one(loop)
        t = proto.transport
        assert t._sock.getsockname() == client.getpeername()
        extra = t._extra
        assert extra["sockname"] == client.getpeername()
        assert extra["peername"] == client.getsockname()
        t.abort()
        await proto.lost
        client.close()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_client_extra_info(loop):
    """A client connection's extra info (not deferred), keys in asyncio's order."""

    async def main():
        with socket.socket() as ls:
            ls.bind(("127.0.0.1", 0))
            ls.listen(1)
            t, p = await loop.create_connection(asyncio.Protocol, *ls.getsockname())
            peer, _ = ls.accept()
            assert list(t._extra) == ["socket", "sockname", "peername"]
            assert t.get_extra_info("peername") == ls.getsockname()
            assert t.get_extra_info("sockname") == peer.getpeername()
            t.close()
            peer.close()
            await asyncio.sleep(0.01)

    run(loop, main())


def test_write_is_a_class_method_replaceable_per_instance(loop):
    async def main():
        server, client, proto = await accept_one(loop)
        t = proto.transport
        assert "write" not in vars(t)
        t.write(b"abc")
        assert client.recv(3) == b"abc"
        sent = []
        t.write = sent.append
        t.write(b"xyz")
        assert sent == [b"xyz"]
        del t.write
        t.write(b"def")
        assert client.recv(3) == b"def"
        t.close()
        await proto.lost
        client.close()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_connection_made_error_is_reported_and_reading_starts(loop):
    contexts = []

    class Failing(Accepted):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise ZeroDivisionError("made")

    async def main():
        loop.set_exception_handler(lambda lp, ctx: contexts.append((ctx, repr(ctx["handle"]))))
        server, client, proto = await accept_one(loop, Failing)
        client.sendall(b"hello")
        await proto.got_data
        assert bytes(proto.data) == b"hello"
        proto.transport.close()
        await proto.lost
        client.close()
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert len(contexts) == 1
    ctx, handle_repr = contexts[0]
    assert ctx["message"].startswith("Exception in callback ")
    assert "Failing.connection_made(<" in ctx["message"]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert "Failing.connection_made(<" in handle_repr


def test_connection_made_goes_to_the_protocol_given_at_construction(loop):
    """set_protocol before the queued connection_made ran: the first protocol is called."""
    made = []

    class First(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(("first", transport))

    class Second(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(("second", transport))

        def data_received(self, data):
            made.append(("data", data))

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        t = loop._make_socket_transport(a, First())
        t.set_protocol(Second())
        assert made == []
        b.sendall(b"x")
        for _ in range(1000):
            if len(made) >= 2:
                break
            await asyncio.sleep(0.005)
        assert made == [("first", t), ("data", b"x")]
        t.close()
        b.close()
        await asyncio.sleep(0.01)

    run(loop, main())


def test_connection_made_runs_in_the_creation_context(loop):
    """connection_made sees the context the transport was made in, and its changes stay in
    its own copy."""
    seen = []

    class P(asyncio.Protocol):
        def connection_made(self, transport):
            seen.append(VAR.get())
            VAR.set("changed by connection_made")

    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        VAR.set("creator")
        t = loop._make_socket_transport(a, P())
        VAR.set("after")
        await asyncio.sleep(0.01)
        assert seen == ["creator"]
        assert VAR.get() == "after"
        t.close()
        b.close()
        await asyncio.sleep(0.01)

    run(loop, main())
