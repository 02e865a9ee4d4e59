"""Small, dependency-free helpers that turn fuzzer bytes into parser inputs.

Deliberately not ``atheris.FuzzedDataProvider``: the targets must run without atheris (the
test suite replays corpora through them), and inputs split on a visible separator keep the
seed files readable and editable by hand.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

__all__ = ["SEPARATOR", "b64url", "compact_jws", "fields", "latin1", "mode", "text"]

#: Separates the fields of one fuzz input (a NUL never occurs in the headers, tokens and
#: JSON documents the targets parse, so seeds stay readable).
SEPARATOR = b"\x00"


def mode(data: bytes, count: int) -> tuple[int, bytes]:
    """Split off the first byte as a selector in ``range(count)``; return it and the rest."""
    if not data:
        return 0, b""
    return data[0] % count, data[1:]


def fields(data: bytes, count: int) -> list[bytes]:
    """Exactly ``count`` fields separated by :data:`SEPARATOR` (missing ones are empty).

    The last field keeps any further separators, so every byte string is reachable in it.
    """
    parts = data.split(SEPARATOR, count - 1)
    return parts + [b""] * (count - len(parts))


def text(raw: bytes) -> str:
    """UTF-8 text as a JSON parser or a WebSocket text frame would give it (invalid -> U+FFFD)."""
    return raw.decode("utf-8", "replace")


def latin1(raw: bytes) -> str:
    """An HTTP header value as the ASGI server hands it over: every byte one code point."""
    return raw.decode("latin-1")


def b64url(raw: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2), to build JWS segments around fuzzed JSON."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def compact_jws(data: bytes, sign: Callable[[bytes], bytes]) -> str:
    """A JWT-shaped string from fuzz bytes, by the first byte's mode.

    Mode 0: the bytes as header text; mode 1: fuzzed header, claims and signature
    segments; mode 2: fuzzed header and claims signed with ``sign`` (a key the target
    trusts), so that the checks behind a valid signature are fuzzed too.
    """
    selected, rest = mode(data, 3)
    if selected == 0:
        return latin1(rest)
    if selected == 1:
        header, claims, signature = fields(rest, 3)
        return f"{b64url(header)}.{b64url(claims)}.{b64url(signature)}"
    header, claims = fields(rest, 2)
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode('ascii')))}"
