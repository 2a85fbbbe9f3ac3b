"""Signals (POSIX): SIGINT while idle, Ctrl-C under run(), add_signal_handler / remove.

Deliveries happen in child processes: the child prints "ready" (flushed) once its loop is
running; the parent waits for that line, gives the loop a moment to reach the poller, then
sends the signal. The child's stdout and exit code are compared across loops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FACTORIES = {
    "asyncio": "asyncio.SelectorEventLoop",
    "ferroloop": "ferroloop.new_event_loop",
}
RUNNERS = {"asyncio": "asyncio.run", "ferroloop": "ferroloop.run"}


def run_child(code: str, sig: int, *, settle: float = 0.2, timeout: float = 30):
    """Start ``code`` in a child; after it prints 'ready', send ``sig``. Returns
    (returncode, stdout lines after 'ready', stderr)."""
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    # A shell without job control starts background commands with SIGINT ignored, and a child
    # inherits that (Python then installs no KeyboardInterrupt handler): the child starts
    # from Python's usual handler whatever the test run was started from.
    prologue = "import signal as _s; _s.signal(_s.SIGINT, _s.default_int_handler)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", prologue + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = proc.stdout.readline()
        if first != "ready\n":
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"child not ready: {first!r} {out!r} {err}")
        time.sleep(settle)  # let the loop go idle in the poller
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out.splitlines(), err


def test_sigint_while_idle_in_run_forever(loop_kind):
    code = f"""
        import asyncio, ferroloop, time
        loop = {FACTORIES[loop_kind]}()
        loop.call_soon(lambda: print("ready", flush=True))
        loop.call_later(20, loop.stop)
        t0 = time.monotonic()
        try:
            loop.run_forever()
            print("stopped normally")
        except KeyboardInterrupt:
            print("KeyboardInterrupt", time.monotonic() - t0 < 10)
        print("running after:", loop.is_running())
        loop.close()
    """
    rc, out, err = run_child(code, signal.SIGINT)
    assert (rc, out) == (0, ["KeyboardInterrupt True", "running after: False"]), err


def test_sigint_while_idle_in_run_until_complete(loop_kind):
    code = f"""
        import asyncio, ferroloop
        loop = {FACTORIES[loop_kind]}()
        async def main():
            print("ready", flush=True)
            await asyncio.sleep(20)
        try:
            loop.run_until_complete(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        loop.close()
    """
    rc, out, err = run_child(code, signal.SIGINT)
    assert (rc, out) == (0, ["KeyboardInterrupt"]), err


MAIN_CANCELLED = """\
import asyncio, ferroloop, sys
async def main():
    print("ready", flush=True)
    try:
        await asyncio.sleep(20)
    except asyncio.CancelledError:
        print("main cancelled", flush=True)
        raise
"""


def test_run_sigint_cancels_main_then_keyboard_interrupt(loop_kind):
    code = MAIN_CANCELLED + textwrap.dedent(f"""\
        try:
            {RUNNERS[loop_kind]}(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
            sys.exit(7)
    """)
    rc, out, err = run_child(code, signal.SIGINT)
    assert (rc, out) == (7, ["main cancelled", "KeyboardInterrupt"]), err


def test_run_sigint_uncaught(loop_kind):
    code = MAIN_CANCELLED + f"{RUNNERS[loop_kind]}(main())\n"
    rc, out, err = run_child(code, signal.SIGINT)
    # An uncaught KeyboardInterrupt: the interpreter dies by SIGINT after the traceback.
    assert (rc, out) == (-signal.SIGINT, ["main cancelled"]), err
    assert err.rstrip().endswith("KeyboardInterrupt")


def test_run_sigint_main_swallows_cancel(loop_kind):
    """main() catches the cancellation and returns: on Python 3.11 run() returns its result."""
    code = f"""
        import asyncio, ferroloop
        async def main():
            print("ready", flush=True)
            try:
                await asyncio.sleep(20)
            except asyncio.CancelledError:
                print("swallowed", flush=True)
            return "result"
        try:
            print({RUNNERS[loop_kind]}(main()))
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
    """
    rc, out, err = run_child(code, signal.SIGINT)
    assert (rc, out) == (0, ["swallowed", "result"]), err


def test_add_signal_handler_delivered_while_sleeping(loop_kind):
    code = f"""
        import asyncio, ferroloop, signal, time
        loop = {FACTORIES[loop_kind]}()
        def on_usr1(*args):
            print("SIGUSR1", args, loop.is_running(), flush=True)
            loop.stop()
        loop.add_signal_handler(signal.SIGUSR1, on_usr1, "a", 1)
        loop.call_soon(lambda: print("ready", flush=True))
        loop.call_later(20, loop.stop)
        t0 = time.monotonic()
        loop.run_forever()
        print("woke early:", time.monotonic() - t0 < 10)
        print("removed:", loop.remove_signal_handler(signal.SIGUSR1))
        print("removed again:", loop.remove_signal_handler(signal.SIGUSR1))
        loop.close()
    """
    rc, out, err = run_child(code, signal.SIGUSR1)
    assert (rc, out) == (
        0,
        ["SIGUSR1 ('a', 1) True", "woke early: True", "removed: True", "removed again: False"],
    ), err


def test_signal_handler_in_coroutine_program(loop_kind):
    code = f"""
        import asyncio, ferroloop, signal
        async def main():
            loop = asyncio.get_running_loop()
            got = loop.create_future()
            loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
            print("ready", flush=True)
            print(await asyncio.wait_for(got, 20))
            loop.remove_signal_handler(signal.SIGUSR1)
            print(signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL)
        {RUNNERS[loop_kind]}(main())
    """
    rc, out, err = run_child(code, signal.SIGUSR1)
    assert (rc, out) == (0, ["usr1", "True"]), err


def test_closing_loop_removes_signal_handlers(loop_kind):
    code = f"""
        import asyncio, ferroloop, signal
        loop = {FACTORIES[loop_kind]}()
        loop.add_signal_handler(signal.SIGUSR1, print)
        loop.add_signal_handler(signal.SIGUSR2, print)
        loop.add_signal_handler(signal.SIGINT, print)
        loop.close()
        print(signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
              signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL,
              signal.getsignal(signal.SIGINT) is signal.default_int_handler,
              signal.set_wakeup_fd(-1))
    """
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert (proc.returncode, proc.stdout) == (0, "True True True -1\n"), proc.stderr


# -- argument checks (in this process; nothing is delivered) -----------------------------------


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    signal.set_wakeup_fd(-1)


def test_add_signal_handler_from_other_thread(loop, restore_signals):
    errors = []

    def in_thread():
        try:
            loop.add_signal_handler(signal.SIGUSR1, print)
        except BaseException as exc:  # noqa: BLE001
            errors.append((type(exc), str(exc)))

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert errors == [
        (RuntimeError, "set_wakeup_fd only works in main thread of the main interpreter")
    ]
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["SIGKILL", "SIGSTOP"])
def test_uncatchable_signal(loop, restore_signals, sig):
    with pytest.raises(RuntimeError) as exc:
        loop.add_signal_handler(sig, print)
    assert str(exc.value) == f"sig {int(sig)} cannot be caught"
    assert loop.remove_signal_handler(sig) is False


@pytest.mark.parametrize("sig", [0, -1, signal.NSIG, 1000])
def test_invalid_signal_number(loop, restore_signals, sig):
    with pytest.raises(ValueError) as exc:
        loop.add_signal_handler(sig, print)
    assert str(exc.value) == f"invalid signal number {sig}"
    with pytest.raises(ValueError) as exc:
        loop.remove_signal_handler(sig)
    assert str(exc.value) == f"invalid signal number {sig}"


@pytest.mark.parametrize("sig", ["x", 2.0, None], ids=["str", "float", "None"])
def test_signal_not_int(loop, restore_signals, sig):
    with pytest.raises(TypeError) as exc:
        loop.add_signal_handler(sig, print)
    assert str(exc.value) == f"sig must be an int, not {sig!r}"
    with pytest.raises(TypeError) as exc:
        loop.remove_signal_handler(sig)
    assert str(exc.value) == f"sig must be an int, not {sig!r}"


def test_signal_handler_coroutine_rejected(loop, restore_signals):
    async def coro():
        pass

    with pytest.raises(TypeError) as exc:
        loop.add_signal_handler(signal.SIGUSR1, coro)
    assert str(exc.value) == "coroutines cannot be used with add_signal_handler()"


def test_remove_signal_handler_return_values(loop, restore_signals):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, print)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN)
    loop.add_signal_handler(signal.SIGUSR1, print, "replaced")
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR2) is False
