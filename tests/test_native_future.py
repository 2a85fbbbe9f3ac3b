"""CPython's own Future tests run against ferroloop's native ``ferroloop.Future``.

Owns tests/test_native_future.py.

The test classes below subclass CPython 3.11's test mixins (never copies of them) exactly the
way CPython instantiates them for its C implementation (``CFutureTests``, ``CSubFutureTests``,
``CFutureDoneCallbackTests``, ``CSubFutureDoneCallbackTests``, ``CFutureInheritanceTests`` in
test.test_asyncio.test_futures; ``CFutureTests`` in test.test_asyncio.test_futures2):

- ``TestFerroloop*``: the class under test is ``ferroloop.Future``, or a trivial Python subclass.
- ``TestAsyncioC*``: the oracle, the same mixins on asyncio's C Future (``_CFuture``), run in
  this module under the same conditions.

Every unittest case is its own pytest test, so the conformance rule reads off the report: each
test passing for an oracle class must pass for its ferroloop twin (same mixin, same test name).
The mixins run on CPython's fake ``TestLoop`` (test.test_asyncio.utils), which tests Future
semantics apart from ferroloop's loop; the ``*OnFerroloopLoop`` classes run the Future and
done-callback mixins again with ``new_test_loop`` giving a ferroloop loop, where a native Future
may take paths of its own (oracle: asyncio's C Future on the same ferroloop loop).

The test classes are defined here and the CPython modules are imported as modules, never their
classes by name: pytest collects every ``unittest.TestCase`` in this module's namespace, so an
imported ``CFutureTests`` would run a second time.

If ``ferroloop.Future`` is missing, collecting this module fails: a missing native Future is a
failure here, not a skip.
"""

from __future__ import annotations

import asyncio
import unittest
from asyncio import futures, tasks

import ferroloop
from test.test_asyncio import test_futures, test_futures2
from test.test_asyncio import utils as test_utils

FerroFuture = ferroloop.Future
CFuture = getattr(futures, "_CFuture", None)
CTask = getattr(tasks, "_CTask", None)
# test_futures2.FutureTests calls ``cls(coroutine)``: it tests a Task (CPython runs it with
# _CTask and _PyTask). ferroloop has no native Task yet; the ferroloop twin runs once it does.
FerroTask = getattr(ferroloop, "Task", None)

requires_c_future = unittest.skipUnless(CFuture is not None, "requires the C _asyncio module")
requires_c_task = unittest.skipUnless(CTask is not None, "requires the C _asyncio module")


def tearDownModule():
    # As CPython's test modules do: the tests make asyncio create its default policy.
    asyncio.set_event_loop_policy(None)


class FerroSubFuture(FerroFuture):
    pass


if CFuture is not None:

    class CSubFuture(CFuture):
        pass


# test_futures.BaseFutureTests: cls is the Future class; CPython adds one C-only test,
# CFutureTests.test_future_del_segfault, which applies to any native Future.


class TestFerroloopFuture(test_futures.BaseFutureTests, test_utils.TestCase):
    cls = FerroFuture
    test_future_del_segfault = test_futures.CFutureTests.test_future_del_segfault


class TestFerroloopSubFuture(test_futures.BaseFutureTests, test_utils.TestCase):
    cls = FerroSubFuture


@requires_c_future
class TestAsyncioCFuture(test_futures.BaseFutureTests, test_utils.TestCase):
    cls = CFuture
    test_future_del_segfault = test_futures.CFutureTests.test_future_del_segfault


@requires_c_future
class TestAsyncioCSubFuture(test_futures.BaseFutureTests, test_utils.TestCase):
    cls = CSubFuture if CFuture is not None else None


# test_futures.BaseFutureDoneCallbackTests: _new_future() makes a future on self.loop.


class TestFerroloopFutureDoneCallback(
    test_futures.BaseFutureDoneCallbackTests, test_utils.TestCase
):
    def _new_future(self):
        return FerroFuture(loop=self.loop)


class TestFerroloopSubFutureDoneCallback(
    test_futures.BaseFutureDoneCallbackTests, test_utils.TestCase
):
    def _new_future(self):
        return FerroSubFuture(loop=self.loop)


@requires_c_future
class TestAsyncioCFutureDoneCallback(test_futures.BaseFutureDoneCallbackTests, test_utils.TestCase):
    def _new_future(self):
        return CFuture(loop=self.loop)


@requires_c_future
class TestAsyncioCSubFutureDoneCallback(
    test_futures.BaseFutureDoneCallbackTests, test_utils.TestCase
):
    def _new_future(self):
        return CSubFuture(loop=self.loop)


# test_futures.BaseFutureInheritanceTests: _get_future_cls() is the class to subclass.


class TestFerroloopFutureInheritance(test_futures.BaseFutureInheritanceTests, test_utils.TestCase):
    def _get_future_cls(self):
        return FerroFuture


@requires_c_future
class TestAsyncioCFutureInheritance(test_futures.BaseFutureInheritanceTests, test_utils.TestCase):
    def _get_future_cls(self):
        return CFuture


# test_futures2.FutureTests (IsolatedAsyncioTestCase): despite its name, cls(coroutine) is a
# Task; with cls = Future (C or ferroloop) it can only fail with "Future() takes no positional
# arguments". Run where CPython runs it: asyncio's C Task, and ferroloop's native Task if any.


@unittest.skipUnless(FerroTask is not None, "ferroloop has no native Task (ferroloop.Task)")
class TestFerroloopTaskFuture2(test_futures2.FutureTests, unittest.IsolatedAsyncioTestCase):
    cls = FerroTask


@requires_c_task
class TestAsyncioCTaskFuture2(test_futures2.FutureTests, unittest.IsolatedAsyncioTestCase):
    cls = CTask


# The same mixins with self.loop a ferroloop loop instead of CPython's TestLoop.


class OnFerroloopLoop:
    """Mixin placed before the CPython mixin: test_utils.TestCase.new_test_loop on ferroloop."""

    def new_test_loop(self, gen=None):
        assert gen is None, "these mixins never pass a time generator"
        loop = ferroloop.new_event_loop()
        self.set_event_loop(loop)
        return loop


class TestFerroloopFutureOnFerroloopLoop(
    OnFerroloopLoop, test_futures.BaseFutureTests, test_utils.TestCase
):
    cls = FerroFuture
    test_future_del_segfault = test_futures.CFutureTests.test_future_del_segfault


class TestFerroloopFutureDoneCallbackOnFerroloopLoop(
    OnFerroloopLoop, test_futures.BaseFutureDoneCallbackTests, test_utils.TestCase
):
    def _new_future(self):
        return FerroFuture(loop=self.loop)


@requires_c_future
class TestAsyncioCFutureOnFerroloopLoop(
    OnFerroloopLoop, test_futures.BaseFutureTests, test_utils.TestCase
):
    cls = CFuture
    test_future_del_segfault = test_futures.CFutureTests.test_future_del_segfault


@requires_c_future
class TestAsyncioCFutureDoneCallbackOnFerroloopLoop(
    OnFerroloopLoop, test_futures.BaseFutureDoneCallbackTests, test_utils.TestCase
):
    def _new_future(self):
        return CFuture(loop=self.loop)
