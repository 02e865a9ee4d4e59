"""Bearer JWTs (access, subscriber and operator tokens) through :class:`TokenService`.

Input: ``mode byte`` then:

* mode 0: the whole ``Authorization`` token text;
* mode 1: ``header JSON NUL claims JSON NUL signature``, each base64url-encoded into a
  compact JWS (so the fuzzer reaches the JSON and header checks, not only base64);
* mode 2: ``header JSON NUL claims JSON``, signed with the service's real key, so the claim
  checks behind the signature (types, times, audience, ``cnf``, scopes, topics) are fuzzed.

Every verifier, :meth:`TokenService.kind_of` and :meth:`TokenService.names_unknown_kid`
run on each token. Allowed refusal: ``InvalidToken``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fuzzing._input import compact_jws
from herald.crypto.signing import PURPOSE_TOKEN, LoadedSigningKey, jwk_thumbprint
from herald.crypto.tokens import (
    AccessClaims,
    OperatorClaims,
    SubscriberClaims,
    TokenService,
)
from herald.errors import InvalidToken

REFUSALS = (InvalidToken,)

NOW = 1_800_000_000
ISSUER = "https://herald.test"
_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
_PUBLIC_RAW = _PRIVATE.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
KID = jwk_thumbprint(_PUBLIC_RAW)
SERVICE = TokenService(
    issuer=ISSUER,
    keys=[
        LoadedSigningKey(
            KID, PURPOSE_TOKEN, _PRIVATE, _PUBLIC_RAW, datetime.fromtimestamp(NOW - 3600, UTC)
        )
    ],
    clock=lambda: float(NOW),
    new_jti=lambda: "jti",
)


def test_one_input(data: bytes) -> None:
    """Verify one token as each kind, and classify it."""
    token = compact_jws(data, _PRIVATE.sign)
    for verify, kind in (
        (SERVICE.verify_access, AccessClaims),
        (SERVICE.verify_subscriber, SubscriberClaims),
        (SERVICE.verify_operator, OperatorClaims),
    ):
        try:
            claims = verify(token)
        except InvalidToken:
            continue
        if not isinstance(claims, kind):
            raise TypeError(f"{verify.__name__} returned {type(claims).__name__}")
    if SERVICE.kind_of(token) not in {None, "access", "subscriber", "operator"}:
        raise ValueError("kind_of answered an unknown kind")
    SERVICE.names_unknown_kid(token)
