"""ferroloop.Loop: the event loop class users get.

The machinery (run loop, ready queue, timers, I/O readiness, handles, call_soon/call_later/call_at,
create_future/create_task) is the Rust class ``LoopCore``. This module adds the cold paths that
are orchestration over Python objects: run_until_complete, the exception handler protocol,
executors, async-generator finalization and signal handlers. Networking, TLS and subprocesses
come from the mixins (_sockops, _network, _tls, _subprocess).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import selectors
import threading
import traceback
import warnings
import weakref
from asyncio import base_events, coroutines, events, futures, tasks, unix_events

from ._ferroloop import LoopCore, _specialize_loop_methods
from ._network import NetworkMixin
from ._sockops import SockOpsMixin
from ._subprocess import SubprocessMixin
from ._tls import TlsMixin

__all__ = ["Loop"]


def _logger():
    # Looked up at each use, so tests that patch asyncio.base_events.logger see our messages.
    return base_events.logger


def _sighandler_noop(signum, frame):
    """Installed as the Python-level handler of signals the loop handles: the real work happens
    when the wakeup fd tells the loop (as asyncio's unix_events does)."""


class Loop(
    LoopCore, SockOpsMixin, NetworkMixin, SubprocessMixin, TlsMixin, asyncio.AbstractEventLoop
):
    """An asyncio event loop implemented in Rust."""

    @property
    def _selector(self):
        """A read-only, `selectors`-like view of what the loop watches (readiness itself is
        Rust's epoll poller); None once the loop is closed, as on asyncio's selector loops.
        CPython's tests and a few libraries call ``loop._selector.get_key(fd)``."""
        if self.is_closed():
            return None
        return _SelectorView(self)

    def __init__(self, *, native_tasks=True):
        self._set_native_tasks(bool(native_tasks))
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._signal_handlers = {}
        self.set_debug(coroutines._is_debug_mode())

    def __repr__(self):
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    # -- running and closing -------------------------------------------------------------------

    def run_until_complete(self, future):
        """Run until the future is done; return its result or raise its exception.

        Mirrors ``BaseEventLoop.run_until_complete``, including the registration of asyncio's
        own ``_run_until_complete_cb`` (tools look for it to find the root task).
        """
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # The caller never sees this task: if the coroutine raised, the exception reaches
            # the caller below, so "Task exception was never retrieved" must not be logged.
            future._log_destroy_pending = False
        future.add_done_callback(base_events._run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                future.exception()
            raise
        finally:
            future.remove_done_callback(base_events._run_until_complete_cb)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        """Close the loop: pending callbacks are dropped, the default executor is shut down
        without waiting, signal handlers are removed. A running loop cannot be closed."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self._signal_handlers:
            if unix_events.sys.is_finalizing():
                warnings.warn(
                    f"Closing the loop {self!r} on interpreter shutdown stage, "
                    "skipping signal handlers removal",
                    ResourceWarning,
                    source=self,
                )
                self._signal_handlers.clear()
            else:
                for sig in list(self._signal_handlers):
                    self.remove_signal_handler(sig)
        if self.get_debug():
            _logger().debug("Close %r", self)
        self._close_child_watches()
        self._close_core()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # -- exception handling --------------------------------------------------------------------

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Log the context's message, exception and other keys (as asyncio's does)."""
        message = context.get("message") or "Unhandled exception in event loop"
        exception = context.get("exception")
        exc_info = (type(exception), exception, exception.__traceback__) if exception else False
        current = self._current_handle
        if "source_traceback" not in context and current is not None:
            handle_tb = current._source_traceback
            if handle_tb:
                context["handle_traceback"] = handle_tb
        lines = [message]
        for key in sorted(context):
            if key in ("message", "exception"):
                continue
            value = context[key]
            if key == "source_traceback":
                stack = "".join(traceback.format_list(value)).rstrip()
                value = "Object created at (most recent call last):\n" + stack
            elif key == "handle_traceback":
                stack = "".join(traceback.format_list(value)).rstrip()
                value = "Handle created at (most recent call last):\n" + stack
            else:
                value = repr(value)
            lines.append(f"{key}: {value}")
        _logger().error("\n".join(lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Call the handler set by set_exception_handler (as ``handler(loop, context)``), or
        the default one; an error inside a handler is logged, never raised (except SystemExit
        and KeyboardInterrupt)."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                _logger().error("Exception in default exception handler", exc_info=True)
            return
        try:
            self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                _logger().error(
                    "Exception in default exception handler while handling an unexpected "
                    "error in custom exception handler",
                    exc_info=True,
                )

    # -- executors -----------------------------------------------------------------------------

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, "run_in_executor")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def _check_callback(self, callback, method):
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self):
        """Shut the default executor down, waiting for its threads, without blocking the loop."""
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is None:
            return
        done = self.create_future()

        def shut_down():
            try:
                executor.shutdown(wait=True)
            except Exception as exc:
                if not self.is_closed():
                    self.call_soon_threadsafe(_set_exception_unless_done, done, exc)
            else:
                if not self.is_closed():
                    self.call_soon_threadsafe(_set_result_unless_done, done, None)

        thread = threading.Thread(target=shut_down)
        thread.start()
        try:
            await done
        finally:
            thread.join()

    # -- async generators ----------------------------------------------------------------------

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                "loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    async def shutdown_asyncgens(self):
        """Close every async generator still alive (aclose), reporting their errors."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        agens = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[ag.aclose() for ag in agens], return_exceptions=True)
        for result, agen in zip(results, agens, strict=True):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": "an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- signals -------------------------------------------------------------------------------

    # Signal handling mirrors unix_events._UnixSelectorEventLoop. The `signal` and `sys`
    # modules are the ones asyncio.unix_events sees (normally the real ones), so that code
    # patching asyncio's (CPython's test_unix_events does) patches ferroloop's too. The
    # handlers are asyncio's own Handle objects, as asyncio stores them.

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in unix_events.signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args):
        """Run ``callback(*args)`` on the loop when signal ``sig`` arrives (main thread only)."""
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        sig_module = unix_events.signal
        try:
            # Raises ValueError outside the main thread.
            sig_module.set_wakeup_fd(self._wakeup_write_fd())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        handle = events.Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle
        try:
            sig_module.signal(sig, _sighandler_noop)
            sig_module.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._reset_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise

    def remove_signal_handler(self, sig):
        """Remove the handler for ``sig``; True if there was one."""
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        sig_module = unix_events.signal
        if sig == sig_module.SIGINT:
            handler = sig_module.default_int_handler
        else:
            handler = sig_module.SIG_DFL
        try:
            sig_module.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise
        if not self._signal_handlers:
            self._reset_wakeup_fd()
        return True

    def _reset_wakeup_fd(self):
        try:
            unix_events.signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            _logger().info("set_wakeup_fd(-1) failed: %s", exc)

    def _handle_signal(self, sig):
        """The handler's side of a signal (unix_events._handle_signal): queue its callback."""
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return  # removed meanwhile
        if handle._cancelled:
            self.remove_signal_handler(sig)
        else:
            self.call_soon_threadsafe(handle._run)

    def _process_signals(self, signums):
        """Called by the run loop with the signal numbers read from the wakeup fd."""
        for sig in signums:
            self._handle_signal(sig)


# Loop's own descriptors of LoopCore's methods (call_soon, create_future, create_task, ...):
# CPython specialises a method call only when the instance is exactly of the descriptor's
# class, and a loop is a Loop, not a LoopCore.
_specialize_loop_methods(Loop)


class _SelectorView:
    """``loop._selector``: get_key() as `selectors.BaseSelector.get_key` answers it."""

    __slots__ = ("_loop",)

    def __init__(self, loop):
        self._loop = loop

    def get_key(self, fileobj):
        fd = selectors._fileobj_to_fd(fileobj)
        state = self._loop._io_key(fd)
        if state is None:
            raise KeyError(f"{fileobj!r} is not registered")
        events, reader, writer = state
        return selectors.SelectorKey(fileobj, fd, events, (reader, writer))


def _set_result_unless_done(fut, result):
    if not fut.done():
        fut.set_result(result)


def _set_exception_unless_done(fut, exc):
    if not fut.done():
        fut.set_exception(exc)
