"""add_reader / add_writer / remove_reader / remove_writer: same behaviour on both loops."""

from __future__ import annotations

import errno
import os
import socket

import pytest


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


class FileLike:
    """An object with a fileno() method (the way selectors accept file objects)."""

    def __init__(self, value):
        self.value = value

    def fileno(self):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def __repr__(self):
        return f"FileLike({self.value!r})"


def closed_fd_number() -> int:
    """An fd number that is not open in this process."""
    for fd in range(1000, 1100):
        try:
            os.fstat(fd)
        except OSError:
            return fd
    raise AssertionError("no free fd number found")


def test_reader_is_level_triggered(loop, pair):
    a, b = pair
    calls = []

    def on_readable():
        calls.append(a.recv(1))
        if len(calls) == 5:
            # Data consumed: the reader must not be called again, however long we wait.
            loop.call_later(0.05, loop.stop)

    loop.add_reader(a, on_readable)
    b.send(b"hello")
    loop.run_forever()
    assert calls == [b"h", b"e", b"l", b"l", b"o"]
    assert loop.remove_reader(a) is True


def test_reader_with_args_and_fd_int(loop, pair):
    a, b = pair
    got = []

    def on_readable(sock, tag):
        got.append((tag, sock.recv(100)))
        loop.stop()

    loop.add_reader(a.fileno(), on_readable, a, "tag")
    b.send(b"data")
    loop.run_forever()
    assert got == [("tag", b"data")]
    assert loop.remove_reader(a.fileno()) is True


def test_reader_waits_for_data(loop, pair):
    a, b = pair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.stop()

    loop.add_reader(a, on_readable)
    loop.call_later(0.02, b.send, b"late")
    loop.run_forever()
    assert got == [b"late"]
    loop.remove_reader(a)


def test_writer_called_while_writable(loop, pair):
    a, _b = pair
    calls = []

    def on_writable():
        calls.append(1)
        if len(calls) == 3:
            assert loop.remove_writer(a) is True
            loop.call_later(0.02, loop.stop)

    loop.add_writer(a, on_writable)
    loop.run_forever()
    assert len(calls) == 3


def test_replacing_reader(loop, pair):
    a, b = pair
    got = []

    loop.add_reader(a, lambda: got.append("old"))
    loop.add_reader(a, lambda: (got.append(("new", a.recv(10))), loop.stop()))
    b.send(b"x")
    loop.run_forever()
    assert got == [("new", b"x")]
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False


def test_remove_reader_writer_return_values(loop, pair):
    a, _b = pair
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    loop.add_reader(a, print)
    loop.add_writer(a, print)
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False
    assert loop.remove_reader(a.fileno()) is False


def test_reader_and_writer_on_same_fd(loop, pair):
    a, b = pair
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a)
        b.send(b"!")

    def on_readable():
        events.append(("r", a.recv(10)))
        loop.stop()

    loop.add_reader(a, on_readable)
    loop.add_writer(a, on_writable)
    loop.run_forever()
    assert events == ["w", ("r", b"!")]
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(a) is True


def test_removed_reader_not_called(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a, lambda: got.append("called"))
    assert loop.remove_reader(a) is True
    b.send(b"x")
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert got == []


def test_reader_removed_by_earlier_callback_same_iteration(loop, pair):
    a, b = pair
    got = []
    b.send(b"x")
    a.send(b"y")

    def on_a():
        got.append("a")
        loop.remove_reader(b)
        loop.remove_reader(a)
        loop.call_later(0.02, loop.stop)

    def on_b():
        got.append("b")
        loop.remove_reader(b)
        loop.remove_reader(a)
        loop.call_later(0.02, loop.stop)

    loop.add_reader(a, on_a)
    loop.add_reader(b, on_b)
    loop.run_forever()
    # Whichever ran first removed the other: a removed reader's pending callback is skipped.
    assert got in (["a"], ["b"])


def test_file_object_with_fileno(loop, pair):
    a, b = pair
    got = []
    wrapper = FileLike(a.fileno())

    def on_readable():
        got.append(a.recv(10))
        loop.stop()

    loop.add_reader(wrapper, on_readable)
    b.send(b"wrapped")
    loop.run_forever()
    assert got == [b"wrapped"]
    # The same fd by another spelling.
    assert loop.remove_reader(a) is True


def test_reader_exception_goes_to_handler(loop, pair):
    a, b = pair
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: (contexts.append(ctx), loop.stop()))

    def bad_reader():
        a.recv(10)
        raise ValueError("reader failed")

    loop.add_reader(a, bad_reader)
    b.send(b"x")
    loop.run_forever()
    loop.remove_reader(a)
    assert len(contexts) == 1
    assert contexts[0]["message"].startswith("Exception in callback test_reader_exception")
    assert "bad_reader()" in contexts[0]["message"]
    assert type(contexts[0]["exception"]) is ValueError


@pytest.mark.parametrize(
    "bad,message",
    [
        ("x", "Invalid file object: 'x'"),
        (None, "Invalid file object: None"),
        (3.5, "Invalid file object: 3.5"),
        (b"3", "Invalid file object: b'3'"),
        (FileLike("x"), "Invalid file object: FileLike('x')"),
        (FileLike(None), "Invalid file object: FileLike(None)"),
        (FileLike(ValueError("v")), "Invalid file object: FileLike(ValueError('v'))"),
        (FileLike(TypeError("t")), "Invalid file object: FileLike(TypeError('t'))"),
    ],
    ids=[
        "str",
        "None",
        "float",
        "bytes",
        "fileno-str-word",
        "fileno-None",
        "fileno-ValueError",
        "fileno-TypeError",
    ],
)
@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_invalid_file_object(loop, method, bad, message):
    args = (bad, print) if method.startswith("add") else (bad,)
    with pytest.raises(ValueError) as exc:
        getattr(loop, method)(*args)
    assert str(exc.value) == message


@pytest.mark.parametrize("bad", [-1, -100, FileLike(-1)], ids=["-1", "-100", "fileno--1"])
@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_negative_fd(loop, method, bad):
    args = (bad, print) if method.startswith("add") else (bad,)
    with pytest.raises(ValueError) as exc:
        getattr(loop, method)(*args)
    value = bad.value if isinstance(bad, FileLike) else bad
    assert str(exc.value) == f"Invalid file descriptor: {value}"


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_closed_fd_number_type(loop, method):
    fd = closed_fd_number()
    with pytest.raises(OSError) as exc:
        getattr(loop, method)(fd, print)
    assert type(exc.value) is OSError
    # Not registered after the failure.
    assert getattr(loop, method.replace("add", "remove"))(fd) is False


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_closed_fd_number_errno(loop, method):
    fd = closed_fd_number()
    with pytest.raises(OSError) as exc:
        getattr(loop, method)(FileLike(fd), print)
    assert exc.value.errno == errno.EBADF
    assert str(exc.value) == "[Errno 9] Bad file descriptor"


def test_fd_closed_after_socket_close(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    try:
        os.fstat(fd)
    except OSError:
        pass
    else:
        pytest.skip("fd number was reused")
    with pytest.raises(OSError) as exc:
        loop.add_reader(fd, print)
    assert type(exc.value) is OSError


@pytest.mark.parametrize("convert", [str, float], ids=["str", "float"])
def test_fileno_converted_with_int(loop, pair, convert):
    a, _b = pair
    wrapper = FileLike(convert(a.fileno()))
    loop.add_reader(wrapper, print)
    assert loop.remove_reader(a.fileno()) is True


@pytest.mark.parametrize(
    "error", [RuntimeError("rt"), OSError("os")], ids=["RuntimeError", "OSError"]
)
def test_fileno_other_errors_propagate(loop, error):
    with pytest.raises(type(error)) as exc:
        loop.add_reader(FileLike(error), print)
    assert exc.value is error


@pytest.mark.parametrize("big", [2**40, 2**70], ids=["2**40", "2**70"])
def test_fd_too_large(loop, big):
    with pytest.raises(OverflowError) as exc:
        loop.add_reader(big, print)
    assert str(exc.value) == "Python int too large to convert to C int"
    assert loop.remove_reader(big) is False


def test_io_on_closed_loop(loop, pair):
    a, _b = pair
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_reader(a, print)
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_writer(a, print)
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    # An invalid file object is reported first.
    with pytest.raises(ValueError, match="^Invalid file object: 'x'$"):
        loop.add_reader("x", print)


def test_close_drops_readers(loop_factory, pair):
    loop = loop_factory()
    a, b = pair
    loop.add_reader(a, print)
    loop.add_writer(b, print)
    loop.close()
    assert loop.remove_reader(a) is False


def test_reader_runs_while_callbacks_keep_the_loop_busy(loop, pair):
    """A call_soon chain that never lets the ready queue empty does not starve a reader: the
    data sent from inside the chain is seen within two turns (asyncio polls every turn,
    ferroloop at least every other busy turn)."""
    a, b = pair
    turns = []
    seen_at = []

    def chain():
        turns.append(None)
        if len(turns) == 5:
            b.send(b"x")
        if len(turns) < 50 and not seen_at:
            loop.call_soon(chain)
        else:
            loop.stop()

    def on_readable():
        seen_at.append(len(turns))
        a.recv(10)

    loop.add_reader(a.fileno(), on_readable)
    loop.call_soon(chain)
    loop.run_forever()
    loop.remove_reader(a.fileno())
    assert seen_at and 5 <= seen_at[0] <= 7, seen_at


def test_one_turn_runs_ready_io_callbacks(loop, pair):
    """`call_soon(loop.stop); run_forever()` runs one turn, which polls: a reader whose fd is
    already readable runs in it, also right after an earlier run that polled last."""
    a, b = pair
    calls = []
    loop.add_reader(a.fileno(), lambda: calls.append(a.recv(10)))
    for i in range(3):
        b.send(bytes([i]))
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert calls == [bytes([j]) for j in range(i + 1)]
    loop.remove_reader(a.fileno())
