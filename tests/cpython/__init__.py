"""CPython conformance harness: runs the stdlib's ``test.test_asyncio`` on ferroloop.

Owns tests/cpython/ (runner.py, explicit_loop.py, table.py). Nothing here copies CPython's
test code: the test modules are imported from the interpreter's own ``test`` package.
"""
