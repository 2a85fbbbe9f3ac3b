"""SubprocessMixin: loop.subprocess_exec / loop.subprocess_shell and the subprocess transport.

Owns: the argument checks of subprocess_exec/subprocess_shell, ``_SubprocessTransport`` (an
``asyncio.SubprocessTransport``), the protocols that tie its pipe transports to it, and the
reaping of children (``_ChildWatch``).

This is a cold path (one Popen, a few transports, one exit per child), so it stays in Python;
the data paths of the child's stdin/stdout/stderr are the loop's own pipe transports, made with
``loop.connect_write_pipe`` / ``loop.connect_read_pipe``.

Reaping: a child is watched through ``os.pidfd_open(pid)`` registered with ``loop.add_reader``;
when the pidfd becomes readable the child is reaped with ``os.waitpid(pid, os.WNOHANG)`` and the
pidfd is closed. No thread runs per child. Only where the kernel has no pidfd_open (ENOSYS; or
EPERM from a seccomp filter that blocks unknown system calls), or ``os`` lacks it, a daemon
thread per child blocks in ``os.waitpid`` instead (as asyncio 3.11's default
ThreadedChildWatcher does for every child).

asyncio 3.11's child watchers: the loop does not need one. If asyncio's policy has a watcher
that is not one of the two that only wait for the pids given to them (ThreadedChildWatcher,
PidfdChildWatcher), that watcher was chosen by the program (SafeChildWatcher, FastChildWatcher,
MultiLoopChildWatcher, a custom one); it may reap every child of the process (FastChildWatcher
calls ``waitpid(-1)``), so the loop then hands its children to it exactly as asyncio's unix
loop does (``_UnixSelectorEventLoop._make_subprocess_transport``), including its "not
activated" check.
"""

from __future__ import annotations

import collections
import errno
import os
import subprocess
import sys
import threading
import warnings
from asyncio import base_events, events, protocols, transports

try:
    from asyncio import unix_events as _unix_events
except ImportError:  # pragma: no cover - not on Unix
    _unix_events = None


def _logger():
    # Looked up at each use, so tests that patch asyncio's logger see our messages.
    return base_events.logger


def _waitstatus_to_exitcode(status):
    """A wait status as a returncode (negative signal number for a signal); a status that
    cannot be decoded is returned as is (mirrors unix_events.waitstatus_to_exitcode)."""
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        return status


def _format_pipe(fd):
    # mirrors base_events._format_pipe
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)


# Watchers that only wait for the pids registered with them: the loop's own reaping replaces
# them without any visible difference.
_REPLACEABLE_WATCHERS = tuple(
    cls
    for cls in (
        getattr(_unix_events, "ThreadedChildWatcher", None),
        getattr(_unix_events, "PidfdChildWatcher", None),
    )
    if cls is not None
)


def _program_child_watcher():
    """The child watcher the program installed in asyncio's policy, which the loop must use;
    None when the loop reaps its children itself (see the module docstring)."""
    if sys.version_info >= (3, 14) or _unix_events is None:
        return None  # no child watchers any more
    try:
        with warnings.catch_warnings():
            # 3.12 and 3.13 deprecate get_child_watcher(); asyncio itself still calls it.
            warnings.simplefilter("ignore", DeprecationWarning)
            watcher = events.get_child_watcher()
    except (NotImplementedError, AttributeError):
        # A policy without child watchers (e.g. a third-party loop's policy).
        return None
    if watcher is None or type(watcher) in _REPLACEABLE_WATCHERS:
        return None
    return watcher


# --------------------------------------------------------------------------- reaping children


def _wait_blocking(pid):
    """``os.waitpid(pid, 0)`` as a returncode; None if the status was already taken."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return _waitstatus_to_exitcode(status)


class _ChildWatch:
    """Waits for one child to exit, reaps it, and calls ``on_exit(returncode)`` on the loop
    (directly from the loop's reader callback, or through call_soon_threadsafe from the
    fallback thread). The Popen object gets the returncode as soon as the child is reaped, so
    its own poll()/wait()/send_signal() neither wait for the reaped pid nor report 0 for it."""

    __slots__ = ("_loop", "_proc", "_pid", "_on_exit", "_pidfd", "_done")

    def __init__(self, loop, proc, on_exit):
        self._loop = loop
        self._proc = proc
        self._pid = proc.pid
        self._on_exit = on_exit
        self._pidfd = -1
        self._done = False
        try:
            pidfd_open = os.pidfd_open
        except AttributeError:
            pidfd_open = None
        if pidfd_open is not None:
            try:
                self._pidfd = pidfd_open(self._pid)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM):
                    raise
        if self._pidfd < 0:
            self._start_thread(report=True)
            return
        try:
            loop.add_reader(self._pidfd, self._pidfd_ready)
        except BaseException:
            os.close(self._pidfd)
            self._pidfd = -1
            raise
        _child_watches(loop)[self._pid] = self

    def _start_thread(self, *, report):
        target = self._thread_main if report else self._thread_orphan
        thread = threading.Thread(target=target, name=f"waitpid-{self._pid}", daemon=True)
        thread.start()

    def _status_already_taken(self):
        """The returncode of a child whose status someone else read (Popen.wait()/poll(), or a
        waitpid() elsewhere)."""
        returncode = self._proc.returncode
        if returncode is not None:
            # Read by the Popen object itself: its returncode is the real one.
            return returncode
        if self._pidfd >= 0:
            # mirrors unix_events.PidfdChildWatcher._do_wait
            message = "child process pid %d exit status already read:  will report returncode 255"
        else:
            # mirrors unix_events.ThreadedChildWatcher._do_waitpid
            message = "Unknown child process pid %d, will report returncode 255"
        _logger().warning(message, self._pid)
        return 255

    def _record(self, returncode):
        if self._proc.returncode is None:
            self._proc.returncode = returncode

    def _release_pidfd(self):
        pidfd = self._pidfd
        if pidfd < 0:
            return
        self._pidfd = -1
        watches = _child_watches(self._loop)
        if watches.get(self._pid) is self:
            del watches[self._pid]
        if not self._loop.is_closed():
            self._loop.remove_reader(pidfd)
        os.close(pidfd)

    def _pidfd_ready(self):
        if self._done:
            return
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            returncode = self._status_already_taken()
        else:
            if pid == 0:
                return  # not exited after all: keep watching
            returncode = _waitstatus_to_exitcode(status)
        self._done = True
        self._release_pidfd()
        self._record(returncode)
        self._on_exit(returncode)

    def _thread_main(self):
        returncode = _wait_blocking(self._pid)
        loop = self._loop
        if returncode is None:
            returncode = self._status_already_taken()
        else:
            self._record(returncode)
        if loop.is_closed():
            self._loop_gone()
            return
        try:
            loop.call_soon_threadsafe(self._reaped_by_thread, returncode)
        except RuntimeError:
            # The loop closed meanwhile.
            self._loop_gone()

    def _reaped_by_thread(self, returncode):
        if not self._done:
            self._done = True
            self._on_exit(returncode)

    def _thread_orphan(self):
        returncode = _wait_blocking(self._pid)
        if returncode is not None:
            self._record(returncode)
        self._loop_gone()

    def _loop_gone(self):
        # mirrors unix_events.ThreadedChildWatcher._do_waitpid on a closed loop
        _logger().warning("Loop %r that handles pid %r is closed", self._loop, self._pid)

    def orphan(self):
        """The loop is closing: no pidfd watch can outlive it, so a thread takes over the
        wait, reaps the child when it exits and reports nothing (as asyncio's threaded watcher
        does for a closed loop). No zombie and no open pidfd remain."""
        if self._done or self._pidfd < 0:
            return
        self._done = True
        self._release_pidfd()
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid != 0:
            self._record(_waitstatus_to_exitcode(status))
            return
        self._start_thread(report=False)


def _child_watches(loop):
    """pid -> _ChildWatch of the loop's pidfd watches (so closing the loop can hand them off)."""
    try:
        return loop._child_watches
    except AttributeError:
        watches = loop._child_watches = {}
        return watches


# --------------------------------------------------------------------------- pipe protocols


class _PipeProtocol(protocols.BaseProtocol):
    """Protocol of the child's stdin pipe transport: tells the subprocess transport when the
    pipe closes and forwards flow control to the subprocess protocol (mirrors
    base_subprocess.WriteSubprocessPipeProto)."""

    def __init__(self, proc, fd):
        self.proc = proc
        self.fd = fd
        self.pipe = None
        self.disconnected = False

    def __repr__(self):
        return f"<{self.__class__.__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_made(self, transport):
        self.pipe = transport

    def connection_lost(self, exc):
        self.disconnected = True
        self.proc._pipe_connection_lost(self.fd, exc)
        self.proc = None

    def pause_writing(self):
        self.proc._protocol.pause_writing()

    def resume_writing(self):
        self.proc._protocol.resume_writing()


class _ReadPipeProtocol(_PipeProtocol, protocols.Protocol):
    """Protocol of the child's stdout/stderr pipe transports (mirrors
    base_subprocess.ReadSubprocessPipeProto)."""

    def data_received(self, data):
        self.proc._pipe_data_received(self.fd, data)


# --------------------------------------------------------------------------- the transport


class _SubprocessTransport(transports.SubprocessTransport):
    """The transport of a child process (mirrors base_subprocess.BaseSubprocessTransport and
    unix_events._UnixSubprocessTransport).

    Protocol callbacks run in asyncio's order: connection_made once the pipes are connected
    (calls that arrive earlier are queued behind it), then pipe_data_received /
    pipe_connection_lost / process_exited as they happen, and connection_lost(None) only once
    the process exited and every pipe closed; ``_wait()`` futures complete after it."""

    def __init__(
        self,
        loop,
        protocol,
        args,
        shell,
        stdin,
        stdout,
        stderr,
        bufsize,
        waiter=None,
        extra=None,
        **kwargs,
    ):
        super().__init__(extra)
        self._closed = False
        self._protocol = protocol
        self._loop = loop
        self._proc = None
        self._pid = None
        self._returncode = None
        self._exit_waiters = []
        self._pending_calls = collections.deque()
        # fd -> pipe protocol (None until connected)
        self._pipes = {}
        self._finished = False

        if stdin == subprocess.PIPE:
            self._pipes[0] = None
        if stdout == subprocess.PIPE:
            self._pipes[1] = None
        if stderr == subprocess.PIPE:
            self._pipes[2] = None

        try:
            self._start(args, shell, stdin, stdout, stderr, bufsize, kwargs)
        except BaseException:
            self.close()
            raise

        self._pid = self._proc.pid
        self._extra["subprocess"] = self._proc

        if loop.get_debug():
            program = args if isinstance(args, (bytes, str)) else args[0]
            _logger().debug("process %r created: pid %s", program, self._pid)

        loop.create_task(self._connect_pipes(waiter))

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, kwargs):
        # On Linux asyncio 3.11 gives the child a plain pipe as stdin (its socketpair is for
        # AIX only): the stdin pipe transport sees the child close its end as a read event
        # on the write end. So does ferroloop.
        self._proc = subprocess.Popen(
            args,
            shell=shell,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            universal_newlines=False,
            bufsize=bufsize,
            **kwargs,
        )

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._closed:
            info.append("closed")
        if self._pid is not None:
            info.append(f"pid={self._pid}")
        if self._returncode is not None:
            info.append(f"returncode={self._returncode}")
        elif self._pid is not None:
            info.append("running")
        else:
            info.append("not started")

        stdin = self._pipes.get(0)
        if stdin is not None:
            info.append(f"stdin={stdin.pipe}")
        stdout = self._pipes.get(1)
        stderr = self._pipes.get(2)
        if stdout is not None and stderr is stdout:
            info.append(f"stdout=stderr={stdout.pipe}")
        else:
            if stdout is not None:
                info.append(f"stdout={stdout.pipe}")
            if stderr is not None:
                info.append(f"stderr={stderr.pipe}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if not self._closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self.close()

    # -- BaseTransport

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closed

    def close(self):
        """Close the pipe transports and kill the child if it still runs (mirrors
        base_subprocess.BaseSubprocessTransport.close)."""
        if self._closed:
            return
        self._closed = True

        for proto in self._pipes.values():
            if proto is None or proto.pipe is None:
                continue
            proto.pipe.close()

        if (
            self._proc is not None
            and self._returncode is None
            # poll(): the child may have exited without the transport being told yet.
            and self._proc.poll() is None
        ):
            if self._loop.get_debug():
                _logger().warning("Close running child process: kill %r", self)
            try:
                self._proc.kill()
            except ProcessLookupError:
                pass
            # _proc stays set: the pipes may still be connecting.

    # -- SubprocessTransport

    def get_pid(self):
        return self._pid

    def get_returncode(self):
        return self._returncode

    def get_pipe_transport(self, fd):
        if fd in self._pipes:
            proto = self._pipes[fd]
            return None if proto is None else proto.pipe
        return None

    def _check_proc(self):
        if self._proc is None:
            raise ProcessLookupError()

    def send_signal(self, signal):
        self._check_proc()
        self._proc.send_signal(signal)

    def terminate(self):
        self._check_proc()
        self._proc.terminate()

    def kill(self):
        self._check_proc()
        self._proc.kill()

    # -- machinery

    async def _connect_pipes(self, waiter):
        try:
            proc = self._proc
            loop = self._loop
            if proc.stdin is not None:
                _, pipe = await loop.connect_write_pipe(lambda: _PipeProtocol(self, 0), proc.stdin)
                self._pipes[0] = pipe
            if proc.stdout is not None:
                _, pipe = await loop.connect_read_pipe(
                    lambda: _ReadPipeProtocol(self, 1), proc.stdout
                )
                self._pipes[1] = pipe
            if proc.stderr is not None:
                _, pipe = await loop.connect_read_pipe(
                    lambda: _ReadPipeProtocol(self, 2), proc.stderr
                )
                self._pipes[2] = pipe

            loop.call_soon(self._protocol.connection_made, self)
            for callback, data in self._pending_calls:
                loop.call_soon(callback, *data)
            self._pending_calls = None
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._pipes_failed()
            if waiter is not None and not waiter.cancelled():
                waiter.set_exception(exc)
        else:
            if waiter is not None and not waiter.cancelled():
                waiter.set_result(None)

    def _pipes_failed(self):
        """A pipe could not be connected: subprocess_exec/shell raises, the caller never gets
        this transport. Its protocol never hears from it (connection_made was not called); the
        pipe files without a transport are closed and no longer wait to be disconnected, so
        close() + _wait() finish once the child exits. (asyncio 3.11 waits forever here.)"""
        files = {0: self._proc.stdin, 1: self._proc.stdout, 2: self._proc.stderr}
        for fd, proto in list(self._pipes.items()):
            if proto is None:
                del self._pipes[fd]
                if files[fd] is not None:
                    files[fd].close()
        self._protocol = protocols.SubprocessProtocol()
        self._pending_calls = None
        self._try_finish()

    def _call(self, callback, *data):
        # Before connection_made, protocol calls wait in _pending_calls.
        if self._pending_calls is not None:
            self._pending_calls.append((callback, data))
        else:
            self._loop.call_soon(callback, *data)

    def _pipe_connection_lost(self, fd, exc):
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _pipe_data_received(self, fd, data):
        self._call(self._protocol.pipe_data_received, fd, data)

    def _child_exited(self, returncode):
        """Called by the _ChildWatch when the child was reaped. Like asyncio's pidfd watcher
        path (PidfdChildWatcher._do_wait -> _child_watcher_callback), _process_exited runs two
        loop iterations later, so pipe data read in the same iteration is delivered first."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon(loop.call_soon, self._process_exited, returncode)

    def _process_exited(self, returncode):
        if returncode is None:
            raise AssertionError("returncode is None")
        if self._returncode is not None:
            raise AssertionError(self._returncode)
        if self._loop.get_debug():
            _logger().info("%r exited with return code %r", self, returncode)
        self._returncode = returncode
        if self._proc.returncode is None:
            self._proc.returncode = returncode
        self._call(self._protocol.process_exited)
        self._try_finish()

    async def _wait(self):
        """Wait until the process exits and every pipe is closed; return the returncode."""
        if self._returncode is not None:
            return self._returncode
        waiter = self._loop.create_future()
        self._exit_waiters.append(waiter)
        return await waiter

    def _try_finish(self):
        if self._finished or self._returncode is None:
            return
        if all(p is not None and p.disconnected for p in self._pipes.values()):
            self._finished = True
            self._call(self._call_connection_lost, None)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            for waiter in self._exit_waiters:
                if not waiter.cancelled():
                    waiter.set_result(self._returncode)
            self._exit_waiters = None
            self._loop = None
            self._proc = None
            self._protocol = None


# --------------------------------------------------------------------------- the loop's methods


def _check_stream_args(bufsize, text, encoding, errors):
    """The checks subprocess_shell and subprocess_exec share (base_events, same messages)."""
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class SubprocessMixin:
    __slots__ = ()

    async def subprocess_shell(
        self,
        protocol_factory,
        cmd,
        *,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=True,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Run ``cmd`` through the shell; return (transport, protocol).

        Argument checks and messages mirror base_events.BaseEventLoop.subprocess_shell."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if not shell:
            raise ValueError("shell must be True")
        _check_stream_args(bufsize, text, encoding, errors)

        # The command is logged in debug mode, not its arguments (as asyncio: they may hold
        # secrets).
        return await self._start_subprocess(
            protocol_factory,
            cmd,
            True,
            f"run shell command {cmd!r}",
            stdin,
            stdout,
            stderr,
            bufsize,
            kwargs,
        )

    async def subprocess_exec(
        self,
        protocol_factory,
        program,
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=False,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Run ``program`` with ``args``; return (transport, protocol).

        Argument checks and messages mirror base_events.BaseEventLoop.subprocess_exec."""
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if shell:
            raise ValueError("shell must be False")
        _check_stream_args(bufsize, text, encoding, errors)

        return await self._start_subprocess(
            protocol_factory,
            (program, *args),
            False,
            f"execute program {program!r}",
            stdin,
            stdout,
            stderr,
            bufsize,
            kwargs,
        )

    async def _start_subprocess(
        self, protocol_factory, popen_args, shell, what, stdin, stdout, stderr, bufsize, kwargs
    ):
        """What subprocess_shell and subprocess_exec share once their arguments are checked:
        the protocol, the transport, and asyncio's debug log lines."""
        protocol = protocol_factory()
        debug = self.get_debug()
        if debug:
            self._log_subprocess(what, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, popen_args, shell, stdin, stdout, stderr, bufsize, **kwargs
        )
        if debug and self.get_debug():
            _logger().info("%s: %r", what, transport)
        return transport, protocol

    def _log_subprocess(self, msg, stdin, stdout, stderr):
        # mirrors base_events.BaseEventLoop._log_subprocess
        info = [msg]
        if stdin is not None:
            info.append(f"stdin={_format_pipe(stdin)}")
        if stdout is not None and stderr == subprocess.STDOUT:
            info.append(f"stdout=stderr={_format_pipe(stdout)}")
        else:
            if stdout is not None:
                info.append(f"stdout={_format_pipe(stdout)}")
            if stderr is not None:
                info.append(f"stderr={_format_pipe(stderr)}")
        _logger().debug(" ".join(info))

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        """Start the child, watch for its exit, wait until its pipes are connected."""
        watcher = _program_child_watcher()
        if watcher is not None:
            return await self._make_watched_subprocess_transport(
                watcher, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, kwargs
            )
        waiter = self.create_future()
        transp = _SubprocessTransport(
            self,
            protocol,
            args,
            shell,
            stdin,
            stdout,
            stderr,
            bufsize,
            waiter=waiter,
            extra=extra,
            **kwargs,
        )
        try:
            _ChildWatch(self, transp._proc, transp._child_exited)
        except BaseException:
            # No watch (pidfd_open failed: EMFILE...): kill the child, reap it off the loop.
            proc = transp._proc
            transp.close()
            threading.Thread(target=proc.wait, name=f"waitpid-{proc.pid}", daemon=True).start()
            raise
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

    async def _make_watched_subprocess_transport(
        self, watcher, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, kwargs
    ):
        # mirrors unix_events._UnixSelectorEventLoop._make_subprocess_transport
        with watcher as active_watcher:
            if not active_watcher.is_active():
                raise RuntimeError(
                    "asyncio.get_child_watcher() is not activated, "
                    "subprocess support is not installed."
                )
            waiter = self.create_future()
            transp = _SubprocessTransport(
                self,
                protocol,
                args,
                shell,
                stdin,
                stdout,
                stderr,
                bufsize,
                waiter=waiter,
                extra=extra,
                **kwargs,
            )
            active_watcher.add_child_handler(transp.get_pid(), self._child_watcher_callback, transp)
            try:
                await waiter
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                transp.close()
                await transp._wait()
                raise
        return transp

    def _child_watcher_callback(self, pid, returncode, transp):
        # mirrors unix_events._UnixSelectorEventLoop._child_watcher_callback (may run in a
        # watcher's thread; _process_exited runs an iteration later)
        self.call_soon_threadsafe(self.call_soon, transp._process_exited, returncode)

    def _close_child_watches(self):
        """Called by Loop.close(): children still running are handed to threads that reap them
        (nothing is reported: the loop is closed), and their pidfds are closed."""
        watches = getattr(self, "_child_watches", None)
        if not watches:
            return
        for watch in list(watches.values()):
            watch.orphan()
        watches.clear()
