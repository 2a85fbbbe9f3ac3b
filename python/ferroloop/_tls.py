"""TlsMixin: TLS over ferroloop's transports (start_tls and the SSL protocol that ``ssl=`` uses).

Mixed into ``ferroloop.Loop``; record processing and buffering run in Rust
(``ferroloop._ferroloop``).
"""

from __future__ import annotations


class TlsMixin:
    __slots__ = ()
