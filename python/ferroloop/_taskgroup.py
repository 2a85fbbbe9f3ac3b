"""ferroloop.TaskGroup: asyncio.TaskGroup (Python 3.11's asyncio.taskgroups) whose per-task work
runs in Rust (`_TaskGroupCore`: create_task, the done callback, abort). This module holds the two
coroutines of the async context manager, which mirror TaskGroup.__aenter__/__aexit__."""

from asyncio import exceptions

from ._ferroloop import _TaskGroupCore

__all__ = ["TaskGroup"]


class TaskGroup(_TaskGroupCore):
    """Asynchronous context manager for a group of tasks, as asyncio.TaskGroup: every task
    created with ``create_task`` is awaited on exit; the first error other than CancelledError
    cancels the others, and the errors are raised together as an ExceptionGroup."""

    __slots__ = ()

    async def __aenter__(self):
        return self._enter()

    async def __aexit__(self, et, exc, tb):
        # Mirrors asyncio.taskgroups.TaskGroup.__aexit__.
        self._exiting = True
        if exc is not None and self._is_base_error(exc) and self._base_error is None:
            self._base_error = exc
        cancelled = exc if et is exceptions.CancelledError else None
        if self._parent_cancel_requested and self._parent_task.uncancel() == 0:
            # The cancellation came from this group (a task failed): not the caller's.
            cancelled = None
        if et is not None and not self._aborting:
            self._abort()
        while self._tasks:
            if self._on_completed_fut is None:
                self._on_completed_fut = self._loop.create_future()
            try:
                await self._on_completed_fut
            except exceptions.CancelledError as err:
                if not self._aborting:
                    cancelled = err
                    self._abort()
            self._on_completed_fut = None
        if self._base_error is not None:
            raise self._base_error
        if cancelled and not self._errors:
            raise cancelled
        if et is not None and et is not exceptions.CancelledError:
            self._errors.append(exc)
        if self._errors:
            try:
                raise BaseExceptionGroup("unhandled errors in a TaskGroup", self._errors) from None
            finally:
                self._errors = None
