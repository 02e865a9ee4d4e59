"""Sealed at-rest blobs (AES-256-GCM, format version 1) opened by :class:`Sealer`.

Input: ``mode byte`` then:

* mode 0: ``blob NUL aad``, opened by a sealer holding key versions 1 and 2, and by
  :func:`open_sealed` with the version-2 key;
* mode 1: ``plaintext NUL edits``: the plaintext is sealed, then each pair of edit bytes
  ``(position, xor)`` alters the blob; the blob must open to the plaintext exactly when no
  byte changed, and be refused otherwise (tamper detection, not only "no crash").

Allowed refusal: ``DecryptionFailed``.
"""

from __future__ import annotations

import itertools

from fuzzing._input import fields, mode
from herald.crypto.aead import Sealer, aad_for, open_sealed, peek_key_version
from herald.errors import DecryptionFailed

REFUSALS = (DecryptionFailed,)

_KEYS = {1: bytes(range(32)), 2: bytes(range(32, 64))}
_counter = itertools.count()


def _randbytes(n: int) -> bytes:
    # Deterministic nonces: the target must replay the same way every time.
    return next(_counter).to_bytes(n, "big")


SEALER = Sealer(_KEYS, 2, _randbytes)
AAD = aad_for(tenant_id="t_1", record_id="msg_1", field="content")


def _open_any(blob: bytes, aad: bytes) -> None:
    try:
        peek_key_version(blob)
        SEALER.open(blob, aad)
    except DecryptionFailed:
        pass
    try:
        open_sealed(_KEYS[2], blob, aad)
    except DecryptionFailed:
        return


def _tamper(plaintext: bytes, edits: bytes) -> None:
    sealed = SEALER.seal(plaintext, AAD)
    blob = bytearray(sealed)
    for position, xor in zip(edits[::2], edits[1::2], strict=False):
        blob[position % len(blob)] ^= xor
    try:
        opened = SEALER.open(bytes(blob), AAD)
    except DecryptionFailed:
        if bytes(blob) == sealed:
            raise AssertionError("an untouched blob was refused") from None
        return
    if bytes(blob) != sealed:
        raise AssertionError("a tampered blob opened")
    if opened != plaintext:
        raise AssertionError("a sealed blob did not open to its plaintext")


def test_one_input(data: bytes) -> None:
    """Open a fuzzed blob, or check that a tampered one is refused."""
    selected, rest = mode(data, 2)
    first, second = fields(rest, 2)
    if selected == 0:
        _open_any(first, second)
        return
    _tamper(first, second)
