"""Entry points: ``python -m ferroloop``, ferroloop.run, install(), EventLoopPolicy, Runner."""

from __future__ import annotations

import asyncio
import re
import signal
import textwrap

import ferroloop
import pytest
from conftest import run_python

SCRIPT_OK = """\
import asyncio, os, sys

async def work(i):
    await asyncio.sleep(0.001 * (3 - i))
    return i * i

async def main():
    return await asyncio.gather(*(work(i) for i in range(3)))

print("argv", sys.argv[1:])
print("name", __name__)
print("path0", sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
print("result", asyncio.run(main()))
print("to stderr", file=sys.stderr)
"""

SCRIPT_EXIT3 = """\
import asyncio, sys

async def main():
    await asyncio.sleep(0)
    print("in main")
    sys.exit(3)

asyncio.run(main())
print("not reached")
"""

SCRIPT_RAISE_TOP = """\
import asyncio

async def main():
    await asyncio.sleep(0)
    return 1

print(asyncio.run(main()))
def fail(x):
    raise ValueError(f"top level {x}")
fail(5)
"""

SCRIPT_RAISE_IN_CORO = """\
import asyncio

async def inner():
    await asyncio.sleep(0)
    raise KeyError("in coroutine")

async def main():
    await inner()

asyncio.run(main())
"""

SCRIPT_LOOP_TYPE = """\
import asyncio, ferroloop

async def main():
    loop = asyncio.get_running_loop()
    print(type(loop).__name__, isinstance(loop, ferroloop.Loop))
    print(isinstance(asyncio.get_event_loop_policy(), ferroloop.EventLoopPolicy))
    loop2 = asyncio.new_event_loop()
    print(isinstance(loop2, ferroloop.Loop))
    loop2.close()

asyncio.run(main())
"""

SCRIPT_FILE = """\
import sys
print(__file__)
print(sys.argv[0])
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _both(tmp_path, script_arg, args=()):
    direct = run_python([script_arg, *args], cwd=tmp_path)
    via = run_python(["-m", "ferroloop", script_arg, *args], cwd=tmp_path)
    return direct, via


def _normalize_loop_frame(stderr: str) -> str:
    """The one frame that is the loop's own implementation (asyncio's base_events.py or
    ferroloop's _loop.py run_until_complete) necessarily differs: replace it."""
    return re.sub(
        r'  File "[^"]*(asyncio/base_events\.py|ferroloop/_loop\.py)", line \d+, '
        r"in run_until_complete\n",
        "  File LOOP, in run_until_complete\n",
        stderr,
    )


@pytest.mark.parametrize("args", [(), ("a", "--flag", "x y")], ids=["no-args", "args"])
def test_script_ok_same_output(tmp_path, args):
    script = _write(tmp_path, "prog.py", SCRIPT_OK)
    direct, via = _both(tmp_path, str(script), args)
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == (f"argv {list(args)}\nname __main__\npath0 True\nresult [0, 1, 4]\n")
    assert (via.returncode, via.stdout, via.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )


def test_script_exit_code(tmp_path):
    script = _write(tmp_path, "exit3.py", SCRIPT_EXIT3)
    direct, via = _both(tmp_path, str(script))
    assert (direct.returncode, direct.stdout, direct.stderr) == (3, "in main\n", "")
    assert (via.returncode, via.stdout, via.stderr) == (3, "in main\n", "")


def test_uncaught_exception_same_traceback(tmp_path):
    script = _write(tmp_path, "fail.py", SCRIPT_RAISE_TOP)
    direct, via = _both(tmp_path, str(script))
    assert direct.returncode == 1
    assert direct.stdout == "1\n"
    assert direct.stderr.endswith("ValueError: top level 5\n")
    assert (via.returncode, via.stdout, via.stderr) == (
        direct.returncode,
        direct.stdout,
        direct.stderr,
    )


def test_uncaught_exception_exit_code_and_last_line(tmp_path):
    script = _write(tmp_path, "fail.py", SCRIPT_RAISE_TOP)
    direct, via = _both(tmp_path, str(script))
    assert (direct.returncode, direct.stdout) == (1, "1\n")
    assert (via.returncode, via.stdout) == (1, "1\n")
    assert (
        direct.stderr.splitlines()[-1] == via.stderr.splitlines()[-1] == ("ValueError: top level 5")
    )
    assert via.stderr.startswith("Traceback (most recent call last):\n")


def test_exception_in_coroutine_same_traceback(tmp_path):
    script = _write(tmp_path, "coro_fail.py", SCRIPT_RAISE_IN_CORO)
    direct, via = _both(tmp_path, str(script))
    assert direct.returncode == 1
    assert direct.stderr.endswith("KeyError: 'in coroutine'\n")
    assert via.returncode == 1
    assert _normalize_loop_frame(via.stderr) == _normalize_loop_frame(direct.stderr)


def test_relative_script_path_file(tmp_path):
    _write(tmp_path, "rel.py", SCRIPT_FILE)
    direct, via = _both(tmp_path, "rel.py", ("x",))
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == f"{tmp_path / 'rel.py'}\nrel.py\n"
    assert (via.returncode, via.stdout, via.stderr) == (0, direct.stdout, "")


def test_relative_script_path_runs(tmp_path):
    _write(tmp_path, "prog.py", SCRIPT_OK)
    direct, via = _both(tmp_path, "prog.py", ("1",))
    assert direct.returncode == 0, direct.stderr
    assert (via.returncode, via.stdout, via.stderr) == (0, direct.stdout, direct.stderr)


def test_keyboard_interrupt_exit_status(tmp_path):
    script = _write(tmp_path, "kbd.py", "print('start', flush=True)\nraise KeyboardInterrupt\n")
    direct, via = _both(tmp_path, str(script))
    assert direct.returncode == -signal.SIGINT
    assert (via.returncode, via.stdout) == (direct.returncode, direct.stdout)
    assert via.stderr.splitlines()[-1] == direct.stderr.splitlines()[-1] == "KeyboardInterrupt"


def test_script_sees_ferroloop(tmp_path):
    script = _write(tmp_path, "looptype.py", SCRIPT_LOOP_TYPE)
    direct, via = _both(tmp_path, str(script))
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout.splitlines()[0].endswith(" False")
    assert via.returncode == 0, via.stderr
    assert via.stdout == "Loop True\nTrue\nTrue\n"


def test_dash_m_module(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text(
        textwrap.dedent(
            """\
            import asyncio, sys, ferroloop

            async def main():
                loop = asyncio.get_running_loop()
                await asyncio.sleep(0)
                return isinstance(loop, ferroloop.Loop)

            print("argv", sys.argv[1:], __name__)
            uses_ferroloop = asyncio.run(main())
            print("exit", len(sys.argv) - 1)
            sys.exit(len(sys.argv) - 1 if uses_ferroloop else 100)
            """
        )
    )
    via = run_python(["-m", "ferroloop", "-m", "mypkg.tool", "a", "b"], cwd=tmp_path)
    direct = run_python(["-m", "mypkg.tool", "a", "b"], cwd=tmp_path)
    assert direct.returncode == 100, direct.stderr  # plain asyncio loop
    assert via.returncode == 2, via.stderr
    assert via.stdout == direct.stdout == "argv ['a', 'b'] __main__\nexit 2\n"
    assert via.stderr == direct.stderr == ""


def test_dash_m_module_argv0(tmp_path):
    (tmp_path / "argvmod.py").write_text("import sys\nprint(sys.argv)\n")
    via = run_python(["-m", "ferroloop", "-m", "argvmod", "q"], cwd=tmp_path)
    direct = run_python(["-m", "argvmod", "q"], cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr
    assert (via.returncode, via.stdout, via.stderr) == (0, direct.stdout, "")


def test_usage_without_arguments():
    proc = run_python(["-m", "ferroloop"])
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: python -m ferroloop")


# -- in-process entry points -------------------------------------------------------------------


def test_runner_with_loop_factory():
    async def main():
        await asyncio.sleep(0)
        return asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=ferroloop.new_event_loop) as runner:
        loop = runner.run(main())
        assert isinstance(loop, ferroloop.Loop)
        assert runner.get_loop() is loop
        assert runner.run(asyncio.sleep(0, "again")) == "again"
    assert loop.is_closed()


def test_runner_debug_flag():
    async def main():
        return asyncio.get_running_loop().get_debug()

    with asyncio.Runner(debug=True, loop_factory=ferroloop.new_event_loop) as runner:
        assert runner.run(main()) is True


def test_ferroloop_run():
    async def main(x):
        await asyncio.sleep(0.001)
        return x, type(asyncio.get_running_loop()).__name__

    assert ferroloop.run(main(5)) == (5, "Loop")

    async def debug():
        return asyncio.get_running_loop().get_debug()

    assert ferroloop.run(debug(), debug=True) is True


def test_ferroloop_run_propagates_exception():
    async def main():
        raise OSError("from main")

    with pytest.raises(OSError, match="^from main$"):
        ferroloop.run(main())


@pytest.mark.parametrize("runner", ["asyncio", "ferroloop"])
def test_run_inside_running_loop(runner):
    run = {"asyncio": asyncio.run, "ferroloop": ferroloop.run}[runner]

    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            run(coro)
        except RuntimeError as exc:
            return str(exc)
        finally:
            coro.close()

    loop = asyncio.SelectorEventLoop() if runner == "asyncio" else ferroloop.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == (
            "asyncio.run() cannot be called from a running event loop"
        )
    finally:
        loop.close()


@pytest.fixture
def saved_policy():
    old = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(old)


def test_install(saved_policy):
    ferroloop.install()
    policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, ferroloop.EventLoopPolicy)

    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main()) is ferroloop.Loop
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()


def test_policy_restored(saved_policy):
    ferroloop.install()
    asyncio.set_event_loop_policy(None)
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, ferroloop.Loop)
    finally:
        loop.close()


def test_event_loop_policy_class(saved_policy):
    policy = ferroloop.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    loop = policy.new_event_loop()
    try:
        assert isinstance(loop, ferroloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_import_changes_nothing():
    proc = run_python(
        [
            "-c",
            (
                "import asyncio, ferroloop\n"
                "loop = asyncio.new_event_loop()\n"
                "print(isinstance(loop, ferroloop.Loop))\n"
                "loop.close()\n"
            ),
        ]
    )
    assert (proc.returncode, proc.stdout) == (0, "False\n"), proc.stderr
