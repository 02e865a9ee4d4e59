"""RFC 7523 client assertions (``private_key_jwt``): parse, then verify against a fixed key.

Input: ``mode byte`` then, as for ``bearer_tokens``: mode 0 the raw ``client_assertion``;
mode 1 ``header NUL claims NUL signature`` base64url-encoded into a JWS; mode 2 ``header NUL
claims`` signed with the app key, so the claim checks behind the signature are fuzzed.

Allowed refusal: ``InvalidClient``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fuzzing._input import compact_jws
from herald.crypto.assertions import parse_assertion, verify_assertion
from herald.errors import InvalidClient

REFUSALS = (InvalidClient,)

NOW = 1_800_000_000
BASE = "https://herald.test"
CLIENT = "app_0123"
AUDIENCES = frozenset({BASE, BASE + "/oauth/token", BASE + "/oauth/revoke"})
_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
_PUBLIC_RAW = _PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_one_input(data: bytes) -> None:
    """Parse and verify one client assertion."""
    try:
        parsed = parse_assertion(compact_jws(data, _PRIVATE.sign))
        parsed.issuer  # noqa: B018 - the property reads untrusted claims too
        verified = verify_assertion(
            parsed,
            _PUBLIC_RAW,
            client_id=CLIENT,
            audiences=AUDIENCES,
            now=NOW,
            not_before=NOW - 3600,
        )
    except InvalidClient:
        return
    if verified.client_id != CLIENT:
        raise ValueError("an assertion verified for another client")
