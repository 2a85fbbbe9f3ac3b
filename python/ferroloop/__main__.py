"""``python -m ferroloop SCRIPT [ARGS...]`` / ``python -m ferroloop -m MODULE [ARGS...]``.

Runs an unchanged asyncio program with ferroloop installed as asyncio's event loop policy, so
its own asyncio.run() / new_event_loop() calls get ferroloop loops. The program sees the argv,
sys.path[0], exit code, stdout and stderr it would see when run directly: an uncaught
exception's traceback starts at the program's own frames.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

USAGE = "usage: python -m ferroloop SCRIPT [ARGS...] | python -m ferroloop -m MODULE [ARGS...]"


def _strip_runner_frames(tb):
    """Skip the traceback entries of this module and runpy, as if run directly."""
    ours = {os.path.abspath(__file__), os.path.abspath(runpy.__file__), "<frozen runpy>"}
    while tb is not None and (
        tb.tb_frame.f_code.co_filename in ours
        or os.path.abspath(tb.tb_frame.f_code.co_filename) in ours
    ):
        tb = tb.tb_next
    return tb


def _run_script_file(script: str) -> None:
    """Run a script file as the interpreter runs `python script.py`: as module __main__, with
    an absolute __file__ while sys.argv[0] stays the path as given."""
    import builtins
    import importlib.machinery
    import types

    path = os.path.abspath(script)
    main_module = types.ModuleType("__main__")
    main_module.__file__ = path
    main_module.__builtins__ = builtins
    main_module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main_module.__spec__ = None
    main_module.__cached__ = None
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    sys.modules["__main__"] = main_module
    exec(code, main_module.__dict__)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        sys.exit(2 if not argv else 0)

    import ferroloop

    ferroloop.install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            sys.exit(2)
        module = argv[1]
        sys.argv = [module, *argv[2:]]
        sys.path.insert(0, os.getcwd())
        run = lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        sys.argv = [script, *argv[1:]]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        if os.path.isfile(script):
            run = lambda: _run_script_file(script)
        else:  # a directory or zip file with __main__.py
            run = lambda: runpy.run_path(script, run_name="__main__")
    try:
        run()
    except SystemExit:
        raise
    except BaseException as exc:
        # The default hook prints exc.__traceback__, so strip the runner's frames there.
        exc.__traceback__ = _strip_runner_frames(exc.__traceback__)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        sys.stdout.flush()
        if isinstance(exc, KeyboardInterrupt):
            # As the interpreter does for an uncaught KeyboardInterrupt: die by SIGINT.
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
