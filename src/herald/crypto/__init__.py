"""Cryptographic recipes of Herald, built on primitives from ``cryptography``.

Submodules are imported explicitly (for example :mod:`herald.crypto.tls`); this package
re-exports nothing so that importing it stays cheap and side-effect free.
"""

from __future__ import annotations

__all__: list[str] = []
