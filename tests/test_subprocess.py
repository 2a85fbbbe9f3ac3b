"""Subprocesses: loop.subprocess_exec/subprocess_shell, the subprocess transport, reaping.

Every test runs on asyncio's loop and on ferroloop's and asserts the same observable behaviour.
After each test no child process is left (``os.waitpid(-1, WNOHANG)`` raises
ChildProcessError) and the process has the same open fds as before.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from unittest import mock

import ferroloop
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX subprocesses")

PY = sys.executable
MIB = 1024 * 1024
# Guards every test against a hang (not a timing assertion).
GUARD = 120


def open_fds() -> set[int]:
    return set(os.listdir("/proc/self/fd"))


def assert_no_child():
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.fixture(autouse=True)
def no_leaks():
    """No fd and no child process may outlive a test (set up before, torn down after the
    loop fixtures)."""
    gc.collect()
    before = open_fds()
    yield
    gc.collect()
    assert_no_child()
    assert open_fds() == before


def run(loop_factory, coro, *, debug=False):
    """Run ``coro`` on a new loop of the parametrized kind; close the loop."""
    loop = loop_factory()
    loop.set_debug(debug)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, GUARD))
    finally:
        loop.close()


def py(code: str) -> list[str]:
    return [PY, "-c", code]


class RecordingProtocol(asyncio.SubprocessProtocol):
    """Records every protocol call (and checks none comes after connection_lost)."""

    def __init__(self):
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append(("connection_made",))

    def pipe_data_received(self, fd, data):
        self.events.append(("data", fd))
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_connection_lost", fd, exc))

    def process_exited(self):
        self.events.append(("process_exited", self.transport.get_returncode()))

    def connection_lost(self, exc):
        self.events.append(("connection_lost", exc))
        self.lost.set_result(None)


# --------------------------------------------------------------------------- argument checks

BAD_ARGS = [
    ({"universal_newlines": True}, "universal_newlines must be False"),
    ({"bufsize": 1}, "bufsize must be 0"),
    ({"bufsize": -1}, "bufsize must be 0"),
    ({"text": True}, "text must be False"),
    ({"encoding": "utf-8"}, "encoding must be None"),
    ({"errors": "strict"}, "errors must be None"),
]


@pytest.mark.parametrize(
    ("kwargs", "message"), [*BAD_ARGS, ({"shell": True}, "shell must be False")]
)
def test_subprocess_exec_rejects(loop_factory, kwargs, message):
    made = []

    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError) as info:
            await loop.subprocess_exec(lambda: made.append(1), PY, "-c", "pass", **kwargs)
        return str(info.value)

    assert run(loop_factory, main()) == message
    assert made == []  # the checks come before the protocol factory is called


@pytest.mark.parametrize(
    ("cmd", "kwargs", "message"),
    [
        *[("exit 0", kw, msg) for kw, msg in BAD_ARGS],
        ("exit 0", {"shell": False}, "shell must be True"),
        (["exit", "0"], {}, "cmd must be a string"),
        (None, {}, "cmd must be a string"),
    ],
)
def test_subprocess_shell_rejects(loop_factory, cmd, kwargs, message):
    made = []

    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(ValueError) as info:
            await loop.subprocess_shell(lambda: made.append(1), cmd, **kwargs)
        return str(info.value)

    assert run(loop_factory, main()) == message
    assert made == []


def test_create_subprocess_text_mode_fails(loop_factory):
    async def main():
        for kwargs in ({"text": True}, {"encoding": "utf-8"}, {"errors": "strict"}):
            with pytest.raises(ValueError):
                await asyncio.create_subprocess_exec(PY, **kwargs)
            with pytest.raises(ValueError):
                await asyncio.create_subprocess_shell(PY, **kwargs)

    run(loop_factory, main())


def test_popen_error_leaks_nothing(loop_factory):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("/nonexistent/ferroloop-test-program")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with mock.patch("subprocess.Popen", side_effect=ZeroDivisionError):
                with pytest.raises(ZeroDivisionError):
                    await asyncio.create_subprocess_exec(PY, "-c", "pass")
            gc.collect()
        assert caught == []

    run(loop_factory, main())


# --------------------------------------------------------------------------- exit status


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_code(loop_factory, code):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py(f"import sys; sys.exit({code})"), stdin=subprocess.DEVNULL
        )
        return proc.pid, await proc.wait(), proc.returncode

    pid, waited, returncode = run(loop_factory, main())
    assert pid > 0
    assert waited == returncode == code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1])
def test_killed_by_signal_is_negative(loop_factory, sig):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py(f"import os; os.kill(os.getpid(), {int(sig)})"), stdin=subprocess.DEVNULL
        )
        return await proc.wait()

    assert run(loop_factory, main()) == -sig


def test_shell(loop_factory):
    async def main():
        codes = []
        for cmd in ("exit 7", b"exit 3", "true"):
            proc = await asyncio.create_subprocess_shell(cmd, stdin=subprocess.DEVNULL)
            codes.append(await proc.wait())
        proc = await asyncio.create_subprocess_shell("exit 8", start_new_session=True)
        codes.append(await proc.wait())
        return codes

    assert run(loop_factory, main()) == [7, 3, 0, 8]


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("terminate", (), -signal.SIGTERM),
        ("kill", (), -signal.SIGKILL),
        ("send_signal", (signal.SIGUSR1,), -signal.SIGUSR1),
        ("send_signal", (signal.SIGHUP,), -signal.SIGHUP),
    ],
)
def test_signal_running_child_then_after_exit(loop_factory, method, args, expected):
    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol,
            *py("import time; time.sleep(3600)"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # SIGHUP/SIGUSR1 at their default action (kill the child) whatever pytest set.
            preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in args],
        )
        getattr(transport, method)(*args)
        returncode = await transport._wait()
        assert transport.get_returncode() == returncode
        errors = []
        for name, call_args in (
            ("send_signal", (signal.SIGTERM,)),
            ("terminate", ()),
            ("kill", ()),
        ):
            try:
                getattr(transport, name)(*call_args)
            except ProcessLookupError as exc:
                errors.append((name, type(exc), exc.args))
        transport.close()
        return returncode, errors

    returncode, errors = run(loop_factory, main())
    assert returncode == expected
    assert errors == [
        ("send_signal", ProcessLookupError, ()),
        ("terminate", ProcessLookupError, ()),
        ("kill", ProcessLookupError, ()),
    ]


def test_process_methods_after_exit(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec(*py("pass"), stdin=subprocess.DEVNULL)
        await proc.wait()
        raised = []
        for call in (proc.kill, proc.terminate, lambda: proc.send_signal(signal.SIGINT)):
            with pytest.raises(ProcessLookupError):
                call()
            raised.append(True)
        return raised

    assert run(loop_factory, main()) == [True, True, True]


# --------------------------------------------------------------------------- stdio modes


def test_devnull_everywhere(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            RecordingProtocol,
            *py("import sys; print(len(sys.stdin.read())); print('e', file=sys.stderr)"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pipes = [transport.get_pipe_transport(fd) for fd in (0, 1, 2, 3)]
        returncode = await transport._wait()
        transport.close()
        return pipes, returncode, protocol.events

    pipes, returncode, events = run(loop_factory, main())
    assert pipes == [None, None, None, None]
    assert returncode == 0
    assert events == [("connection_made",), ("process_exited", 0), ("connection_lost", None)]


@pytest.mark.parametrize("as_file", [False, True], ids=["fd", "fileobj"])
def test_stdio_to_fd_or_file_object(loop_factory, tmp_path, as_file):
    infile = tmp_path / "in"
    infile.write_bytes(b"hello input")
    out_path = tmp_path / "out"
    err_path = tmp_path / "err"
    code = (
        "import sys; d = sys.stdin.buffer.read(); "
        "sys.stdout.buffer.write(d.upper()); sys.stderr.write('to stderr')"
    )

    async def main():
        with open(infile, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            files = (fin, fout, ferr) if as_file else (fin.fileno(), fout.fileno(), ferr.fileno())
            proc = await asyncio.create_subprocess_exec(
                *py(code), stdin=files[0], stdout=files[1], stderr=files[2]
            )
            assert (proc.stdin, proc.stdout, proc.stderr) == (None, None, None)
            return await proc.wait()

    assert run(loop_factory, main()) == 0
    assert out_path.read_bytes() == b"HELLO INPUT"
    assert err_path.read_bytes() == b"to stderr"


def test_stderr_to_stdout_file(loop_factory, tmp_path):
    out_path = tmp_path / "out"

    async def main():
        with open(out_path, "wb") as fout:
            proc = await asyncio.create_subprocess_exec(
                *py("import sys; print('o', flush=True); print('e', file=sys.stderr)"),
                stdin=subprocess.DEVNULL,
                stdout=fout,
                stderr=subprocess.STDOUT,
            )
            return await proc.wait()

    assert run(loop_factory, main()) == 0
    assert out_path.read_bytes() == b"o\ne\n"


def test_stdout_and_stderr_pipes(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(4)"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return out, err, proc.returncode

    assert run(loop_factory, main()) == (b"out", b"err", 4)


def test_stderr_stdout_into_one_pipe(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            RecordingProtocol,
            *py("import sys; print('o', flush=True); print('e', file=sys.stderr, flush=True)"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        has = [transport.get_pipe_transport(fd) is not None for fd in (0, 1, 2)]
        await protocol.lost
        transport.close()
        return has, bytes(protocol.data[1]), bytes(protocol.data[2])

    assert run(loop_factory, main()) == ([False, True, False], b"o\ne\n", b"")


def test_pipe_transports_and_extra_info(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            RecordingProtocol, *py("import sys; sys.stdin.read()")
        )
        assert isinstance(transport, asyncio.SubprocessTransport)
        popen = transport.get_extra_info("subprocess")
        assert isinstance(popen, subprocess.Popen)
        assert popen.pid == transport.get_pid()
        assert transport.get_protocol() is protocol
        assert transport.get_returncode() is None
        assert not transport.is_closing()
        stdin = transport.get_pipe_transport(0)
        stdout = transport.get_pipe_transport(1)
        stderr = transport.get_pipe_transport(2)
        kinds = (
            isinstance(stdin, asyncio.WriteTransport),
            isinstance(stdout, asyncio.ReadTransport),
            isinstance(stderr, asyncio.ReadTransport),
            transport.get_pipe_transport(3),
            # On Linux the child's stdin is a plain pipe, as on asyncio 3.11 (its socketpair
            # for stdin is AIX-only).
            [
                stat.S_ISFIFO(os.fstat(p.get_extra_info("pipe").fileno()).st_mode)
                for p in (stdin, stdout, stderr)
            ],
        )
        stdin.close()
        returncode = await transport._wait()
        transport.close()
        return kinds, returncode, transport.is_closing()

    assert run(loop_factory, main()) == ((True, True, True, None, [True] * 3), 0, True)


# --------------------------------------------------------------------------- Popen options


def test_env_cwd_pass_fds(loop_factory, tmp_path):
    out_path = tmp_path / "out"
    rfd, wfd = os.pipe()
    code = (
        "import os, sys; "
        "print(os.environ.get('FERRO_SP'), 'PYTEST_CURRENT_TEST' in os.environ, os.getcwd()); "
        f"os.write({wfd}, b'through pass_fds'); "
        f"print(os.get_inheritable({wfd}))"
    )

    async def main():
        with open(out_path, "wb") as fout:
            proc = await asyncio.create_subprocess_exec(
                *py(code),
                stdin=subprocess.DEVNULL,
                stdout=fout,
                env={"FERRO_SP": "value", "PATH": os.environ.get("PATH", "")},
                cwd=str(tmp_path),
                pass_fds=(wfd,),
            )
            return await proc.wait()

    try:
        assert run(loop_factory, main()) == 0
        assert os.read(rfd, 100) == b"through pass_fds"
    finally:
        os.close(rfd)
        os.close(wfd)
    assert out_path.read_text().split("\n") == [f"value False {tmp_path}", "True", ""]


def test_start_new_session_and_preexec_fn(loop_factory, tmp_path):
    out_path = tmp_path / "out"
    code = "import os; print(os.getsid(0) == os.getpid(), oct(os.umask(0)))"

    async def main():
        with open(out_path, "wb") as fout:
            proc = await asyncio.create_subprocess_exec(
                *py(code),
                stdin=subprocess.DEVNULL,
                stdout=fout,
                start_new_session=True,
                preexec_fn=lambda: os.umask(0o027),
            )
            return await proc.wait()

    assert run(loop_factory, main()) == 0
    assert out_path.read_text() == "True 0o27\n"


def test_program_as_path_like(loop_factory, tmp_path):
    import pathlib

    async def main():
        proc = await asyncio.create_subprocess_exec(
            pathlib.Path(PY), "-c", "pass", pathlib.Path("."), stdin=subprocess.DEVNULL
        )
        return await proc.wait()

    assert run(loop_factory, main()) == 0


# --------------------------------------------------------------------------- data through pipes


def test_communicate_large_both_ways(loop_factory):
    payload = bytes(range(256)) * (6 * MIB // 256)  # 6 MiB
    code = (
        "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d); "
        "sys.stderr.buffer.write(d[::-1][: 3 * 1024 * 1024])"
    )

    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py(code), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await proc.communicate(payload)
        return out, err, proc.returncode

    out, err, returncode = run(loop_factory, main())
    assert returncode == 0
    assert out == payload
    assert err == payload[::-1][: 3 * MIB]


def test_large_output_only(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; sys.stdout.buffer.write(b'x' * (8 * 1024 * 1024))"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        data = await proc.stdout.read()
        return len(data), data.count(b"x"), await proc.wait()

    assert run(loop_factory, main()) == (8 * MIB, 8 * MIB, 0)


def test_stdin_writes_drain_and_close(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for chunk in (b"abc", b"def" * 100000, b"ghi"):
            proc.stdin.write(chunk)
            await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()
        data = await proc.stdout.read()
        return data, await proc.wait()

    data, returncode = run(loop_factory, main())
    assert returncode == 0
    assert data == (b"abc" + b"def" * 100000 + b"ghi")[::-1]


def test_communicate_empty_input_and_devnull_output(loop_factory):
    async def main():
        code = "import sys; print(len(sys.stdin.read()))"
        proc = await asyncio.create_subprocess_exec(
            *py(code), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        first = await proc.communicate(b"")
        proc = await asyncio.create_subprocess_exec(
            *py(code), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        second = await proc.communicate(b"abc")
        return first, second

    assert run(loop_factory, main()) == ((b"0\n", None), (None, b""))


def test_stdin_broken_pipe(loop_factory):
    rfd, wfd = os.pipe()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py(f"import os; os.read({rfd}, 1)"), stdin=subprocess.PIPE, pass_fds=(rfd,)
        )
        proc.stdin.write(b"x" * (4 * MIB))
        os.write(wfd, b"go")  # the child exits without reading its stdin
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            await proc.stdin.drain()
        return await proc.wait()

    try:
        logging.disable(logging.CRITICAL)
        assert run(loop_factory, main()) == 0
    finally:
        logging.disable(logging.NOTSET)
        os.close(rfd)
        os.close(wfd)


def test_communicate_ignores_broken_pipe(loop_factory):
    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)
        proc = await asyncio.create_subprocess_exec(*py("pass"), stdin=subprocess.PIPE)
        await proc.communicate(b"x" * (4 * MIB))
        return await proc.wait()

    assert run(loop_factory, main()) == 0


# --------------------------------------------------------------------------- protocol callbacks


def check_callback_order(events, pipe_fds, returncode):
    assert events[0] == ("connection_made",)
    assert events[-1] == ("connection_lost", None)
    names = [e[0] for e in events]
    assert names.count("connection_made") == 1
    assert names.count("connection_lost") == 1
    assert names.count("process_exited") == 1
    assert ("process_exited", returncode) in events
    lost = [e[1] for e in events if e[0] == "pipe_connection_lost"]
    assert sorted(lost) == sorted(pipe_fds)
    assert all(e[2] is None for e in events if e[0] == "pipe_connection_lost")
    for fd in pipe_fds:
        end = events.index(("pipe_connection_lost", fd, None))
        assert ("data", fd) not in events[end:]


def test_protocol_callback_order(loop_factory):
    code = (
        "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d); "
        "sys.stdout.flush(); sys.stderr.buffer.write(d.upper()); sys.exit(3)"
    )

    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(RecordingProtocol, *py(code))
        # connection_made has run by the time subprocess_exec returns.
        made_before = list(protocol.events)
        await asyncio.sleep(0)
        stdin = transport.get_pipe_transport(0)
        stdin.write(b"data" * 50000)
        stdin.close()
        waited = await transport._wait()
        assert protocol.lost.done()  # _wait() completes after connection_lost
        transport.close()
        return (
            made_before,
            protocol.events,
            bytes(protocol.data[1]),
            bytes(protocol.data[2]),
            waited,
        )

    made_before, events, out, err, waited = run(loop_factory, main())
    assert made_before == [("connection_made",)]
    check_callback_order(events, [0, 1, 2], 3)
    assert (out, err, waited) == (b"data" * 50000, b"DATA" * 50000, 3)


def test_connection_lost_waits_for_open_pipe(loop_factory):
    """The child exits while a grandchild keeps stdout open: connection_lost waits for the
    pipe to close, after process_exited."""
    rfd, wfd = os.pipe()
    grandchild = f"import os, sys; os.read({rfd}, 1); sys.stdout.write('late'); sys.stdout.flush()"
    code = (
        "import subprocess, sys; "
        f"subprocess.Popen([sys.executable, '-c', {grandchild!r}], pass_fds=({rfd},)); "
        "sys.exit(5)"
    )

    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            RecordingProtocol, *py(code), stdin=subprocess.DEVNULL, pass_fds=(rfd,)
        )
        while not any(e[0] == "process_exited" for e in protocol.events):
            await asyncio.sleep(0.01)
        exited_first = not protocol.lost.done()
        os.write(wfd, b"x")  # let the grandchild write and exit
        await protocol.lost
        transport.close()
        return exited_first, protocol.events, bytes(protocol.data[1])

    try:
        exited_first, events, out = run(loop_factory, main())
    finally:
        os.close(rfd)
        os.close(wfd)
    # The grandchild was reparented away from us: reap nothing of it, but let it finish.
    assert exited_first
    check_callback_order(events, [1, 2], 5)
    assert out == b"late"


# --------------------------------------------------------------------------- close, cancel


def test_close_kills_running_child(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            RecordingProtocol,
            *py("import time; time.sleep(3600)"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0)
        popen = transport.get_extra_info("subprocess")
        with mock.patch.object(popen, "kill", wraps=popen.kill) as kill:
            transport.close()
            transport.close()  # idempotent
            returncode = await transport._wait()
        return returncode, kill.call_count, transport.is_closing(), protocol.events

    returncode, kills, closing, events = run(loop_factory, main())
    assert returncode == -signal.SIGKILL
    assert kills == 1
    assert closing
    assert events == [
        ("connection_made",),
        ("process_exited", -signal.SIGKILL),
        ("connection_lost", None),
    ]


def test_close_kills_running_child_with_pipes(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            RecordingProtocol, *py("import time; time.sleep(3600)")
        )
        await asyncio.sleep(0)
        pipes = [transport.get_pipe_transport(fd) for fd in (0, 1, 2)]
        transport.close()
        closing = [p.is_closing() for p in pipes]
        returncode = await transport._wait()
        return returncode, closing, protocol.events

    returncode, closing, events = run(loop_factory, main())
    assert returncode == -signal.SIGKILL
    assert closing == [True, True, True]
    check_callback_order(events, [0, 1, 2], -signal.SIGKILL)


def test_close_does_not_kill_finished_child(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol,
            *py("import time; time.sleep(3600)"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        popen = transport.get_extra_info("subprocess")
        popen.kill()
        popen.wait()  # the Popen object reaps the child; the loop is not told yet
        popen.kill = mock.Mock()
        returncode = transport.get_returncode()
        transport.close()
        await transport._wait()
        return returncode, popen.kill.called

    logging.disable(logging.CRITICAL)  # asyncio may log "Unknown child process pid"
    try:
        assert run(loop_factory, main()) == (None, False)
    finally:
        logging.disable(logging.NOTSET)


def test_unclosed_transport_warns(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol,
            *py("pass"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await transport._wait()
        with pytest.warns(
            ResourceWarning, match=r"^unclosed transport <\w+ pid=\d+ returncode=0>$"
        ):
            del transport
            gc.collect()

    run(loop_factory, main())


def test_transport_repr(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol,
            *py("import sys; sys.stdin.read()"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid = transport.get_pid()
        running = repr(transport).split(" ", 1)[1]
        await transport._wait()
        exited = repr(transport).split(" ", 1)[1]
        transport.close()
        closed = repr(transport).split(" ", 1)[1]
        return pid, running, exited, closed

    pid, running, exited, closed = run(loop_factory, main())
    assert running == f"pid={pid} running>"
    assert exited == f"pid={pid} returncode=0>"
    assert closed == f"closed pid={pid} returncode=0>"


def test_cancel_subprocess_creation(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.subprocess_exec(
                asyncio.SubprocessProtocol,
                *py("import time; time.sleep(3600)"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        loop.call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task

    logging.disable(logging.CRITICAL)
    try:
        run(loop_factory, main())
    finally:
        logging.disable(logging.NOTSET)


def test_cancel_subprocess_creation_with_pipes(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            asyncio.create_subprocess_exec(*py("import time; time.sleep(3600)"))
        )
        loop.call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task

    logging.disable(logging.CRITICAL)
    try:
        run(loop_factory, main())
    finally:
        logging.disable(logging.NOTSET)


def test_cancel_communicate(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys, time; sys.stdout.write('x'); sys.stdout.flush(); time.sleep(3600)"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        task = asyncio.ensure_future(proc.communicate(b"input"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        still_running = proc.returncode is None
        proc.kill()
        return still_running, await proc.wait()

    assert run(loop_factory, main()) == (True, -signal.SIGKILL)


def test_cancel_wait(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import time; time.sleep(3600)"), stdin=subprocess.DEVNULL
        )
        task = asyncio.ensure_future(proc.wait())
        asyncio.get_running_loop().call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        proc.terminate()
        return await proc.wait()

    assert run(loop_factory, main()) == -signal.SIGTERM


# --------------------------------------------------------------------------- reaping


def test_many_children_reaped(loop_factory):
    async def main():
        procs = [
            await asyncio.create_subprocess_exec(
                *py(f"import sys; sys.exit({i})"), stdin=subprocess.DEVNULL
            )
            for i in range(20)
        ]
        return await asyncio.gather(*(p.wait() for p in procs))

    assert run(loop_factory, main()) == list(range(20))


def test_many_children_with_pipes(loop_factory):
    async def main():
        async def one(i):
            proc = await asyncio.create_subprocess_exec(*py(f"print({i})"), stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            return int(out), proc.returncode

        return await asyncio.gather(*(one(i) for i in range(20)))

    assert run(loop_factory, main()) == [(i, 0) for i in range(20)]


def _wait_until(predicate, what):
    deadline = time.monotonic() + GUARD
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def test_child_outliving_closed_loop_is_reaped(loop_factory, caplog):
    """The loop closes while the child runs: when the child exits later it is still reaped
    (no zombie), with asyncio's "Loop ... is closed" warning, and no pidfd stays open."""
    rfd, wfd = os.pipe()

    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol,
            *py(f"import os; os.read({rfd}, 1)"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(rfd,),
        )
        return transport

    caplog.set_level(logging.WARNING, logger="asyncio")
    transport = run(loop_factory, main())
    pid = transport.get_pid()
    assert os.path.exists(f"/proc/{pid}")
    os.write(wfd, b"x")
    _wait_until(lambda: not os.path.exists(f"/proc/{pid}"), "the child to be reaped")
    _wait_until(
        lambda: any(
            f"that handles pid {pid!r} is closed" in r.getMessage() for r in caplog.records
        ),
        "the warning",
    )
    transport.close()
    os.close(rfd)
    os.close(wfd)


def test_popen_wait_elsewhere_keeps_real_returncode_on_ferroloop(loop_kind, loop_factory):
    """Popen.wait() reaping the child first: ferroloop reports the status the Popen read."""
    if loop_kind == "asyncio":
        pytest.skip("asyncio's threaded watcher races the Popen here (255 or the real code)")

    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol,
            *py("import sys; sys.exit(9)"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        transport.get_extra_info("subprocess").wait()
        returncode = await transport._wait()
        transport.close()
        return returncode

    assert run(loop_factory, main()) == 9


def test_ferroloop_reaps_without_threads():
    """ferroloop watches each child with a pidfd: no thread per child."""
    if not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open")

    async def main():
        procs = [
            await asyncio.create_subprocess_exec(
                *py("import time; time.sleep(3600)"), stdin=subprocess.DEVNULL
            )
            for _ in range(3)
        ]
        threads = threading.active_count()
        for p in procs:
            p.kill()
        codes = [await p.wait() for p in procs]
        return threads, codes

    threads_before = threading.active_count()
    threads, codes = run(ferroloop.new_event_loop, main())
    assert threads == threads_before
    assert codes == [-signal.SIGKILL] * 3


def test_thread_fallback_without_pidfd(loop_factory, monkeypatch):
    """pidfd_open failing with ENOSYS (old kernel): ferroloop falls back to a waiting thread."""

    def no_pidfd(pid, flags=0):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd, raising=False)

    async def main():
        procs = [
            await asyncio.create_subprocess_exec(
                *py(f"import sys; sys.exit({i})"), stdin=subprocess.DEVNULL
            )
            for i in range(3)
        ]
        killed = await asyncio.create_subprocess_exec(
            *py("import time; time.sleep(3600)"), stdin=subprocess.DEVNULL
        )
        killed.kill()
        return [await p.wait() for p in procs] + [await killed.wait()]

    assert run(loop_factory, main()) == [0, 1, 2, -signal.SIGKILL]


# --------------------------------------------------------------------------- child watchers


@pytest.fixture
def policy(loop_kind):
    """asyncio's default policy for asyncio, ferroloop's for ferroloop; reset afterwards."""
    pol = (
        asyncio.DefaultEventLoopPolicy() if loop_kind == "asyncio" else ferroloop.EventLoopPolicy()
    )
    asyncio.set_event_loop_policy(pol)
    try:
        yield pol
    finally:
        watcher = pol._watcher
        pol.set_child_watcher(None)
        if watcher is not None:
            watcher.attach_loop(None)
            watcher.close()
        asyncio.set_event_loop_policy(None)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="child watchers are deprecated")
def test_get_child_watcher_keeps_working(loop_factory, policy):
    async def main():
        watcher = asyncio.get_child_watcher()
        proc = await asyncio.create_subprocess_exec(*py("import sys; sys.exit(2)"))
        return watcher is asyncio.get_child_watcher(), await proc.wait()

    assert run(loop_factory, main()) == (True, 2)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="child watchers are deprecated")
@pytest.mark.parametrize("watcher_name", ["SafeChildWatcher", "FastChildWatcher"])
def test_program_chosen_watcher(loop_factory, policy, watcher_name):
    """A watcher that reaps through SIGCHLD (Fast: every child) is used as asyncio does."""
    from asyncio import unix_events

    async def main():
        procs = [
            await asyncio.create_subprocess_exec(
                *py(f"import sys; sys.exit({i})"), stdin=subprocess.DEVNULL
            )
            for i in range(5)
        ]
        return [await p.wait() for p in procs]

    loop = loop_factory()
    loop.set_debug(False)
    asyncio.set_event_loop(loop)
    watcher = getattr(unix_events, watcher_name)()
    watcher.attach_loop(loop)
    policy.set_child_watcher(watcher)
    try:
        assert loop.run_until_complete(asyncio.wait_for(main(), GUARD)) == list(range(5))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="child watchers are deprecated")
def test_inactive_watcher_refuses(loop_factory, policy):
    watcher = mock.create_autospec(
        asyncio.AbstractChildWatcher,
        **{"__enter__.return_value.is_active.return_value": False},
    )

    async def main():
        asyncio.set_child_watcher(watcher)
        with pytest.raises(RuntimeError) as info:
            await asyncio.create_subprocess_exec(PY, "-c", "pass")
        return str(info.value)

    assert run(loop_factory, main()) == (
        "asyncio.get_child_watcher() is not activated, subprocess support is not installed."
    )
    assert watcher.mock_calls == [
        mock.call.__enter__(),
        mock.call.__enter__().is_active(),
        mock.call.__exit__(RuntimeError, mock.ANY, mock.ANY),
    ]


# --------------------------------------------------------------------------- debug mode


def test_debug_logging(loop_factory, caplog):
    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.subprocess_exec(
            asyncio.SubprocessProtocol,
            *py("pass"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        await transport._wait()
        transport.close()
        return transport.get_pid()

    caplog.set_level(logging.DEBUG, logger="asyncio")
    pid = run(loop_factory, main(), debug=True)
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert f"execute program {PY!r} stdin=-3 stdout=stderr=-3" in messages
    assert f"process {PY!r} created: pid {pid}" in messages
    assert any(m.startswith(f"execute program {PY!r}: <") for m in messages)
    # (the transport is formatted when the record is read: it is closed by then)
    assert any(
        m.endswith(f"closed pid={pid} returncode=0> exited with return code 0") for m in messages
    )
