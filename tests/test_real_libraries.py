"""Real libraries on ferroloop, over loopback only: aiohttp (server and client, websockets),
uvicorn (in-process and through its ``--loop ferroloop:new_event_loop`` command line), httpx and
anyio. Each runs on asyncio's loop too, as the oracle."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time

import aiohttp
import anyio
import httpx
import pytest
import uvicorn
from aiohttp import web

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(loop, coro, timeout=60):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def make_aiohttp_app():
    async def hello(request):
        return web.Response(text=f"hello {request.match_info.get('name', 'world')}")

    async def echo_json(request):
        data = await request.json()
        return web.json_response({"got": data, "loop": type(asyncio.get_running_loop()).__name__})

    async def big(request):
        return web.Response(body=b"B" * 3_000_000)

    async def stream(request):
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(50):
            await response.write(b"chunk %d\n" % i)
        await response.write_eof()
        return response

    async def websocket(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data.upper())
        return ws

    app = web.Application()
    app.add_routes(
        [
            web.get("/", hello),
            web.get("/hello/{name}", hello),
            web.post("/json", echo_json),
            web.get("/big", big),
            web.get("/stream", stream),
            web.get("/ws", websocket),
        ]
    )
    return app


async def start_aiohttp():
    runner = web.AppRunner(make_aiohttp_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, port


def test_aiohttp_server_and_client(loop):
    async def main():
        runner, port = await start_aiohttp()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/") as r:
                    assert r.status == 200
                    assert await r.text() == "hello world"
                results = await asyncio.gather(
                    *(session.get(f"{base}/hello/{i}") for i in range(30))
                )
                for i, r in enumerate(results):
                    assert await r.text() == f"hello {i}"
                    r.release()
                async with session.post(base + "/json", json={"a": [1, 2, 3]}) as r:
                    body = await r.json()
                    assert body["got"] == {"a": [1, 2, 3]}
                    assert body["loop"] == type(loop).__name__
                async with session.get(base + "/big") as r:
                    assert await r.read() == b"B" * 3_000_000
                async with session.get(base + "/stream") as r:
                    lines = (await r.text()).splitlines()
                    assert lines == [f"chunk {i}" for i in range(50)]
                async with session.ws_connect(base + "/ws") as ws:
                    for word in ("abc", "ferro", "loop"):
                        await ws.send_str(word)
                        msg = await ws.receive()
                        assert msg.data == word.upper()
                async with session.get(base + "/missing") as r:
                    assert r.status == 404
        finally:
            await runner.cleanup()

    run(loop, main())


def test_aiohttp_client_connection_refused(loop):
    async def main():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorError):
                await session.get(f"http://127.0.0.1:{port}/")

    run(loop, main())


def test_httpx_against_aiohttp(loop):
    async def main():
        runner, port = await start_aiohttp()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                r = await client.get("/hello/httpx")
                assert r.text == "hello httpx"
                r = await client.post("/json", json={"x": 1})
                assert r.json()["got"] == {"x": 1}
        finally:
            await runner.cleanup()

    run(loop, main())


def test_uvicorn_in_process(loop):
    from tests.apps.asgi_app import app

    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/loop") as r:
                    body = await r.json()
                assert body["loop"].endswith(type(loop).__qualname__)
                payload = os.urandom(500_000)
                async with session.post(f"http://127.0.0.1:{port}/echo", data=payload) as r:
                    assert await r.read() == payload
                async with session.get(f"http://127.0.0.1:{port}/stream") as r:
                    assert (await r.text()).splitlines() == [str(i) for i in range(100)]
        finally:
            server.should_exit = True
            await serving
            sock.close()

    run(loop, main())


def http_get(port, path, timeout=10.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_uvicorn_command_line_loop_option():
    """`uvicorn app --loop ferroloop:new_event_loop` serves from ferroloop's loop."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PYTHONASYNCIODEBUG", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.apps.asgi_app:app",
            "--loop",
            "ferroloop:new_event_loop",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                head, body = http_get(port, "/loop")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body)["loop"] == "ferroloop._loop.Loop"
        head, body = http_get(port, "/stream")
        assert re.sub(rb"\r\n[0-9a-f]+\r\n", b"", b"\r\n" + body).startswith(b"0\n1\n")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert b"Uvicorn running on" in out, out.decode(errors="replace")


def test_anyio_on_the_loop(loop_kind):
    import ferroloop

    factory = {"asyncio": asyncio.SelectorEventLoop, "ferroloop": ferroloop.new_event_loop}[
        loop_kind
    ]

    async def main():
        results = []
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)

        async def serve(stream):
            async with stream:
                data = await stream.receive()
                await stream.send(data[::-1])

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, serve)
            for i in range(5):
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    await client.send(b"abc%d" % i)
                    results.append(await client.receive())
            with anyio.move_on_after(0.05) as scope:
                await anyio.sleep(10)
            assert scope.cancelled_caught
            assert await anyio.to_thread.run_sync(lambda: 6 * 7) == 42
            tg.cancel_scope.cancel()
        await listener.aclose()
        return results, type(asyncio.get_running_loop()).__name__

    results, loop_name = anyio.run(
        main, backend="asyncio", backend_options={"loop_factory": factory}
    )
    assert results == [b"%dcba" % i for i in range(5)]
    assert loop_name == {"asyncio": "_UnixSelectorEventLoop", "ferroloop": "Loop"}[loop_kind]
