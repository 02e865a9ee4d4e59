"""App request-signing public keys uploaded as PEM (``POST /v1/admin/apps/{id}/keys``).

Input: the PEM text. Whatever is accepted must be exactly 32 raw bytes of an Ed25519 key.

Allowed refusal: ``BadRequest``.
"""

from __future__ import annotations

from herald.errors import BadRequest
from herald.service.signatures import parse_ed25519_public_key

REFUSALS = (BadRequest,)


def test_one_input(data: bytes) -> None:
    """Load one uploaded public key."""
    try:
        raw = parse_ed25519_public_key(data)
    except BadRequest:
        return
    if len(raw) != 32:
        raise AssertionError("an accepted Ed25519 key is not 32 bytes")
