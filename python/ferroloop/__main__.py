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
    ours = {os.path.abspath(__file__), os.path.abspath(runpy.__file__)}
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) in ours:
        tb = tb.tb_next
    return tb


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
        run = lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)  # noqa: E731
    else:
        script = argv[0]
        sys.argv = [script, *argv[1:]]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        run = lambda: runpy.run_path(script, run_name="__main__")  # noqa: E731
    try:
        run()
    except SystemExit:
        raise
    except BaseException as exc:
        sys.excepthook(type(exc), exc, _strip_runner_frames(exc.__traceback__))
        sys.stdout.flush()
        if isinstance(exc, KeyboardInterrupt):
            # As the interpreter does for an uncaught KeyboardInterrupt: die by SIGINT.
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
