"""CPython's own Task tests run against ferroloop's native ``ferroloop.Task``.

Owns tests/test_native_task.py.

The classes below subclass CPython 3.11's test_tasks mixins (never copies of them) the way
CPython instantiates them for its C implementation (``CTask_CFuture_Tests``,
``CTask_CFuture_SubclassTests``, ``CTask_PyFuture_Tests``, ``PyTask_CFuture_Tests``,
``CCurrentLoopTests``):

- ``TestFerroTask_FerroFuture``: ferroloop.Task with ferroloop.Future (+ SetMethodsTest);
- ``TestFerroTask_FerroFuture_Subclass``: the same through ``add_subclass_tests`` (Python
  subclasses of both);
- ``TestFerroTask_AsyncioFuture`` and ``TestAsyncioTask_FerroFuture``: the mixed pairings;
- ``TestFerroCurrentLoop``: BaseCurrentLoopTests with ferroloop.Task;
- the ``TestAsyncioC*`` classes: the oracle, the same mixins on asyncio's C classes.

Each unittest case is its own pytest test: every test that passes for an oracle class must pass
for its ferroloop twin. CPython's test module is imported as a module, never its classes by name
(pytest would collect an imported TestCase a second time).
"""

from __future__ import annotations

from asyncio import futures, tasks

import ferroloop
from test.test_asyncio import test_tasks
from test.test_asyncio import utils as test_utils

FerroTask = ferroloop.Task
FerroFuture = ferroloop.Future
CTask = tasks._CTask
CFuture = futures._CFuture


class TestFerroTask_FerroFuture(
    test_tasks.BaseTaskTests, test_tasks.SetMethodsTest, test_utils.TestCase
):
    Task = FerroTask
    Future = FerroFuture


@test_tasks.add_subclass_tests
class TestFerroTask_FerroFuture_Subclass(test_tasks.BaseTaskTests, test_utils.TestCase):
    Task = FerroTask
    Future = FerroFuture


class TestFerroTask_AsyncioFuture(test_tasks.BaseTaskTests, test_utils.TestCase):
    Task = FerroTask
    Future = CFuture


class TestAsyncioTask_FerroFuture(test_tasks.BaseTaskTests, test_utils.TestCase):
    Task = CTask
    Future = FerroFuture


class TestFerroCurrentLoop(test_tasks.BaseCurrentLoopTests, test_utils.TestCase):
    def new_task(self, coro):
        return FerroTask(coro, loop=self.loop)


class TestAsyncioCTask_CFuture(
    test_tasks.BaseTaskTests, test_tasks.SetMethodsTest, test_utils.TestCase
):
    Task = CTask
    Future = CFuture


@test_tasks.add_subclass_tests
class TestAsyncioCTask_CFuture_Subclass(test_tasks.BaseTaskTests, test_utils.TestCase):
    Task = CTask
    Future = CFuture


class TestAsyncioCCurrentLoop(test_tasks.BaseCurrentLoopTests, test_utils.TestCase):
    def new_task(self, coro):
        return CTask(coro, loop=self.loop)
