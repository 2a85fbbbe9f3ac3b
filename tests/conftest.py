"""Shared fixtures for ferroloop's own test suite.

asyncio is the oracle: behaviour tests take the ``loop_factory`` (or ``loop``) fixture, which is
parametrized over asyncio's stock loop (``asyncio.SelectorEventLoop``, id "asyncio") and
ferroloop's (``ferroloop.new_event_loop``, id "ferroloop"), and assert the same observable
behaviour on both.

A known ferroloop bug is marked on the ferroloop parameter only with
``@pytest.mark.ferroloop_xfail(reason="ferroloop bug: ...")``, which becomes a strict xfail.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import ferroloop
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOOP_FACTORIES = {
    "asyncio": asyncio.SelectorEventLoop,
    "ferroloop": ferroloop.new_event_loop,
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "ferroloop_xfail(reason): strict xfail for the ferroloop parameter only (a known bug)",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = item.get_closest_marker("ferroloop_xfail")
        if marker is None:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is None:
            continue
        if "ferroloop" in callspec.id.split("-"):
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


class LoopMaker:
    """Calls the loop factory and remembers the loops, closing any left open at teardown."""

    def __init__(self, kind: str):
        self.kind = kind
        self.factory = LOOP_FACTORIES[kind]
        self.loops: list[asyncio.AbstractEventLoop] = []

    def __call__(self) -> asyncio.AbstractEventLoop:
        loop = self.factory()
        self.loops.append(loop)
        return loop

    def close_all(self) -> None:
        for loop in self.loops:
            if not loop.is_closed():
                if loop.is_running():
                    loop.stop()
                else:
                    loop.close()
        self.loops.clear()


@pytest.fixture(params=["asyncio", "ferroloop"])
def loop_kind(request) -> str:
    return request.param


@pytest.fixture
def loop_factory(loop_kind):
    """A callable making new (unset, not running) event loops of the parametrized kind."""
    maker = LoopMaker(loop_kind)
    try:
        yield maker
    finally:
        maker.close_all()
        asyncio.set_event_loop(None)


@pytest.fixture
def loop(loop_factory):
    """A fresh event loop of the parametrized kind, closed after the test."""
    lp = loop_factory()
    yield lp
    if not lp.is_closed():
        lp.close()


def run_python(args, *, input=None, timeout=60, cwd=None, env=None):
    """Run the venv's Python in a subprocess; return CompletedProcess with text output."""
    full_env = dict(os.environ)
    full_env.pop("PYTHONASYNCIODEBUG", None)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=full_env,
        check=False,
    )


@pytest.fixture
def python_runner():
    return run_python
