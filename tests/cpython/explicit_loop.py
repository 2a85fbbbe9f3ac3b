"""Explicit-loop substitution for the CPython conformance harness.

Owns tests/cpython/explicit_loop.py.

Some ``test.test_asyncio`` modules never ask the policy for a loop: their test classes build
one themselves (``asyncio.SelectorEventLoop(selectors.EpollSelector())`` in
``create_event_loop``, or ``asyncio.SelectorEventLoop()`` in ``new_loop``). Installing
ferroloop's policy does not reach those, so for ``--loop ferroloop`` the runner swaps each such
class in the module for a subclass that overrides the hook to build a ferroloop loop.

The subclass keeps the original ``__module__``/``__qualname__``, so test ids are identical on
both loops and results compare one to one. The stock module has one class per selector (epoll,
poll, select, kqueue) running the same tests; on ferroloop they would all run the same loop, so
only the canonical one (the platform's default selector) runs and the others are reported as
skipped with a reason starting with ``HARNESS_SKIP_PREFIX``.
"""

from __future__ import annotations

import types
import unittest
from collections.abc import Callable

# Modules whose loop-building test classes must be rewritten to reach ferroloop.
EXPLICIT_LOOP_MODULES = (
    "test.test_asyncio.test_events",
    "test.test_asyncio.test_sock_lowlevel",
    "test.test_asyncio.test_sendfile",
    "test.test_asyncio.test_server",
    "test.test_asyncio.test_buffered_proto",
    "test.test_asyncio.test_sslproto",
    "test.test_asyncio.test_unix_events",
)

# The hooks through which these classes build their loop.
LOOP_HOOKS = ("create_event_loop", "new_loop")

# Which selector-specific class runs on ferroloop, best first (the Linux default is epoll).
CANONICAL_ORDER = ("EPoll", "Kqueue", "Poll", "Select")

HARNESS_SKIP_PREFIX = "ferroloop-harness:"


def _builds_loop_in_setup(cls: type) -> bool:
    """``setUp`` itself calls ``asyncio.SelectorEventLoop()`` (test_unix_events does)."""
    setup = vars(cls).get("setUp")
    code = getattr(setup, "__code__", None)
    return code is not None and "SelectorEventLoop" in code.co_names


def _loop_classes(module: types.ModuleType) -> dict[str, type]:
    """Test classes of ``module`` that build their loop themselves (a hook or setUp)."""
    found = {}
    for name, obj in vars(module).items():
        if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)):
            continue
        if obj.__module__ != module.__name__:
            continue
        if "Proactor" in name:  # Windows-only, skipped by the module itself elsewhere.
            continue
        if any(hook in vars(obj) for hook in LOOP_HOOKS) or _builds_loop_in_setup(obj):
            found[name] = obj
    return found


def _canonical(names: list[str]) -> str:
    for prefix in CANONICAL_ORDER:
        for name in sorted(names):
            if name.startswith(prefix):
                return name
    return min(names)


def _family(name: str) -> str:
    """Strip the selector prefix: ``EPollEventLoopTests`` -> ``EventLoopTests``."""
    for prefix in CANONICAL_ORDER:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _setup_with_loop(setup, new_loop):
    """The class's setUp, run with ``asyncio.SelectorEventLoop`` building a ferroloop loop."""

    def patched_setup(self):
        import asyncio

        original = asyncio.SelectorEventLoop
        asyncio.SelectorEventLoop = lambda selector=None: new_loop()
        try:
            setup(self)
        finally:
            asyncio.SelectorEventLoop = original

    return patched_setup


def substitute(module: types.ModuleType, new_loop: Callable[[], object]) -> list[str]:
    """Replace the module's loop-building classes by ferroloop subclasses, in place.

    Returns a description of what was replaced (for the run's log). Classes of one family
    (same name once the selector prefix is removed) share one canonical class that runs; the
    rest are marked skipped.
    """
    classes = _loop_classes(module)
    families: dict[str, list[str]] = {}
    for name in classes:
        families.setdefault(_family(name), []).append(name)
    done = []
    for names in families.values():
        keep = _canonical(names)
        for name in names:
            original = classes[name]
            namespace = {
                "__module__": original.__module__,
                "__qualname__": original.__qualname__,
                "__doc__": original.__doc__,
            }
            for hook in LOOP_HOOKS:
                if hasattr(original, hook):
                    namespace[hook] = lambda self: new_loop()
            if _builds_loop_in_setup(original):
                namespace["setUp"] = _setup_with_loop(original.setUp, new_loop)
            if name != keep:
                namespace["__unittest_skip__"] = True
                namespace["__unittest_skip_why__"] = (
                    f"{HARNESS_SKIP_PREFIX} duplicate of {keep} (same tests, one ferroloop loop)"
                )
            setattr(module, name, type(name, (original,), namespace))
            done.append(f"{name} -> ferroloop" if name == keep else f"{name} -> skipped dup")
    return done
