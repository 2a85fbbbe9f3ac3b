"""bench/httpclient.py — owns the HTTP load client for the suite's HTTP server rows.

A keep-alive HTTP/1.1 client: C connections, each sending `GET /` and waiting for the whole
response before sending the next (no pipelining). It first sends --warmup requests (untimed),
then --requests timed ones, checks every response (status 200, Content-Length, body) and prints
one JSON line: {"ok": <correct timed responses>, "elapsed": <seconds>, "loop": <client loop>}.

It runs in its own process on uvloop if that imports (a fast client, the same for every loop
under test), else on stock asyncio. Usage:
    python bench/httpclient.py --port P --requests N [--warmup W] [--conns C] [--body TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ferroloop-bench\r\n\r\n"


class Load:
    """Shared request budget of one phase (warm-up or timed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, total: int) -> None:
        self.left = total  # requests not yet sent
        self.pending = total  # responses not yet received
        self.ok = 0
        self.done = loop.create_future()

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def answered(self, good: bool) -> None:
        self.pending -= 1
        self.ok += good
        if self.pending == 0 and not self.done.done():
            self.done.set_result(None)


class Client(asyncio.Protocol):
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.buf = bytearray()
        self.need = -1  # total bytes of the current response once its headers are parsed
        self.good = False
        self.load: Load | None = None
        self.lost = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def run(self, load: Load) -> None:
        self.load = load
        if load.take():
            self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).decode("latin-1").lower()
                length = 0
                for line in head.split("\r\n")[1:]:
                    key, _, value = line.partition(":")
                    if key.strip() == "content-length":
                        length = int(value)
                self.good = head.startswith("http/1.1 200")
                self.need = end + 4 + length
            if len(self.buf) < self.need:
                return
            body = bytes(self.buf[self.need - len(self.body) : self.need])
            del self.buf[: self.need]
            self.need = -1
            load = self.load
            load.answered(self.good and body == self.body)
            if load.take():
                self.transport.write(REQUEST)

    def connection_lost(self, exc) -> None:
        self.lost = exc or ConnectionError("server closed the connection")
        if self.load is not None and not self.load.done.done():
            self.load.done.set_exception(self.lost)


async def main(args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    body = args.body.encode()
    clients = []
    for _ in range(args.conns):
        _, proto = await loop.create_connection(lambda: Client(body), args.host, args.port)
        clients.append(proto)
    warm = Load(loop, args.warmup)
    for c in clients:
        c.run(warm)
    await asyncio.wait_for(warm.done, args.timeout)
    load = Load(loop, args.requests)
    t0 = time.perf_counter()
    for c in clients:
        c.run(load)
    await asyncio.wait_for(load.done, args.timeout)
    elapsed = time.perf_counter() - t0
    for c in clients:
        c.transport.close()
    return {"ok": load.ok, "elapsed": elapsed}


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--conns", type=int, default=10)
    p.add_argument("--body", default="Hello, World!")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    try:
        import uvloop

        factory, name = uvloop.new_event_loop, "uvloop"
    except ImportError:
        factory, name = asyncio.new_event_loop, "asyncio"
    with asyncio.Runner(loop_factory=factory) as runner:
        res = runner.run(main(args))
    res["loop"] = name
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
