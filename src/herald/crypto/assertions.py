"""RFC 7523 client assertions (``private_key_jwt``): parsing and verification, no I/O.

An app authenticates at the token and revocation endpoints with a JWT it signed with one of
its Ed25519 request-signing keys (RFC 7523 §2.2, §3). This module is the pure part: it
parses the compact JWS (RFC 7515 §7.1) strictly, verifies the Ed25519 signature (RFC 8037)
with a public key the caller looked up, and checks the claims against an injected clock.
Looking up the app and its key, and claiming the ``jti``, is :mod:`herald.service.assertions`.

Following the JWT BCP (RFC 8725):

- the algorithm comes from our allow-list — ``EdDSA`` and its RFC 9864 name ``Ed25519`` —
  and is never chosen by the token: ``none``, HMAC, RSA and ECDSA are refused;
- the key is named by the header's ``kid`` and looked up among the app's own keys only;
  ``jku``, ``x5u``, ``jwk`` and ``x5c`` are ignored, never fetched or trusted;
- ``crit`` is refused (no extension is understood), duplicate JSON members are refused;
- ``iss``, ``sub``, ``aud``, ``exp``, ``iat`` and ``jti`` are required, times are checked
  with a small leeway, and ``exp`` may not lie far ahead.

Every failure is the same opaque :class:`~herald.errors.InvalidClient`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from herald import limits
from herald.errors import InvalidClient

__all__ = [
    "ALGORITHMS",
    "ASSERTION_TYPE",
    "KID_MAX",
    "ParsedAssertion",
    "VerifiedAssertion",
    "parse_assertion",
    "verify_assertion",
]

#: RFC 7523 §2.2: the ``client_assertion_type`` of a JWT client assertion.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Ed25519 JWS under its RFC 8037 name and its RFC 9864 name (see REFERENCES.md).
ALGORITHMS = frozenset({"EdDSA", "Ed25519"})
#: Longest ``kid``: app key ids are ``hk_`` + 16 hex digits; anything longer is not ours.
KID_MAX = 64
#: ``typ`` values accepted (case-insensitive, ``application/`` prefix allowed): none at all,
#: the generic ``JWT`` most libraries write, and the explicit type of RFC 7523bis.
_TYPES = frozenset({"jwt", "client-authentication+jwt"})
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
#: Larger NumericDates are not dates (and an int this large would not convert to a float).
_NUMERIC_DATE_MAX = 2**53
_ED25519_SIGNATURE_BYTES = 64
_ED25519_PUBLIC_BYTES = 32


@dataclass(frozen=True, slots=True)
class ParsedAssertion:
    """A structurally valid assertion whose signature and claims are not checked yet."""

    kid: str
    claims: Mapping[str, Any]
    signing_input: bytes  # ASCII(BASE64URL(header) || "." || BASE64URL(payload)), RFC 7515 §5.2
    signature: bytes

    @property
    def issuer(self) -> str | None:
        """The unverified ``iss`` (the client id it claims to be), if it is a string."""
        iss = self.claims.get("iss")
        return iss if isinstance(iss, str) else None


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    """What a verified assertion says: who signed it, its single-use id, expiry and issue."""

    client_id: str
    jti: str
    expires_at: float
    issued_at: float = 0.0


def _b64url(segment: bytes) -> bytes:
    # RFC 7515 §2: base64url without padding; only the canonical encoding is accepted, so
    # one assertion has exactly one spelling.
    if not set(segment) <= _B64URL or len(segment) % 4 == 1:
        raise InvalidClient
    try:
        raw = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the checks above
        raise InvalidClient from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment:
        raise InvalidClient
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §5.2 step 4 / RFC 7519 §7.2 step 4: duplicate member names are refused.
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError("duplicate member")
        out[name] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidClient from None
    if not isinstance(value, dict):
        raise InvalidClient
    return value


def _check_header(header: Mapping[str, Any]) -> str:
    alg = header.get("alg")
    # A JSON array or object is unhashable: testing it against the set would raise.
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise InvalidClient
    if "crit" in header:
        # RFC 7515 §4.1.11: extensions we do not understand must be refused; we know none.
        raise InvalidClient
    typ = header.get("typ")
    if typ is not None:
        if not isinstance(typ, str):
            raise InvalidClient
        typ = typ.lower().removeprefix("application/")
        if typ not in _TYPES:
            raise InvalidClient
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= KID_MAX:
        raise InvalidClient
    # jku, x5u, jwk, x5c: never read (RFC 8725 §3.10); the key comes from our store only.
    return kid


def parse_assertion(text: str) -> ParsedAssertion:
    """Parse a compact-serialised JWS client assertion without trusting any of it.

    Args:
        text: The ``client_assertion`` form value.

    Returns:
        The header's ``kid``, the (unverified) claims, the signing input and the signature.

    Raises:
        InvalidClient: too long, not three base64url segments, not JSON objects, an
            algorithm outside the allow-list, no ``kid``, ``crit``, or a bad signature size.
    """
    if not text or len(text) > limits.CLIENT_ASSERTION_MAX or not text.isascii():
        raise InvalidClient
    data = text.encode("ascii")
    parts = data.split(b".")
    if len(parts) != 3:  # RFC 7515 §7.1 (a JWE has five parts: not accepted)
        raise InvalidClient
    header_b64, payload_b64, signature_b64 = parts
    kid = _check_header(_json_object(_b64url(header_b64)))
    claims = _json_object(_b64url(payload_b64))
    signature = _b64url(signature_b64)
    if len(signature) != _ED25519_SIGNATURE_BYTES:
        raise InvalidClient
    return ParsedAssertion(kid, claims, header_b64 + b"." + payload_b64, signature)


def _numeric_date(value: Any) -> float:
    # RFC 7519 §2: a JSON number of seconds; booleans are not numbers here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClient
    # Integers beyond float range (and NaN/infinity, which strict JSON cannot even carry).
    if abs(value) > _NUMERIC_DATE_MAX or not math.isfinite(value):
        raise InvalidClient
    return float(value)


def _audience_ok(aud: Any, audiences: Collection[str]) -> bool:
    # RFC 7523 §3 item 3: aud identifies us; RFC 7519 §4.1.3: a string or an array of them.
    if isinstance(aud, str):
        return aud in audiences
    if not isinstance(aud, list) or not 0 < len(aud) <= limits.CLIENT_ASSERTION_AUD_MAX:
        return False
    if not all(isinstance(item, str) for item in aud):
        return False
    return any(item in audiences for item in aud)


def _check_signature(parsed: ParsedAssertion, public_key: bytes) -> None:
    if len(public_key) != _ED25519_PUBLIC_BYTES:
        raise InvalidClient
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            parsed.signature, parsed.signing_input
        )
    except (InvalidSignature, ValueError):
        raise InvalidClient from None


def verify_assertion(
    parsed: ParsedAssertion,
    public_key: bytes,
    *,
    client_id: str,
    audiences: Collection[str],
    now: float,
    not_before: float | None = None,
) -> VerifiedAssertion:
    """Verify the signature, then the claims of RFC 7523 §3.

    Args:
        parsed: From :func:`parse_assertion`.
        public_key: The raw Ed25519 public key named by ``parsed.kid``, looked up by the
            caller among the keys of ``client_id``.
        client_id: The client the assertion must be from (``iss`` and ``sub``).
        audiences: Accepted ``aud`` values (our issuer and endpoint URLs).
        now: The current time (seconds since the epoch).
        not_before: Assertions issued (``iat``) before this are refused: an embedded node's
            replay store forgot, on restart, the ``jti`` values it saw before.

    Returns:
        The client id, the ``jti`` (to be claimed once) and ``exp``.

    Raises:
        InvalidClient: for every failure.
    """
    _check_signature(parsed, public_key)
    claims, leeway = parsed.claims, limits.JWT_LEEWAY
    iss, sub, jti = claims.get("iss"), claims.get("sub"), claims.get("jti")
    # RFC 7523 §3 items 1-2: iss and sub are both the client id.
    if not (isinstance(iss, str) and isinstance(sub, str) and iss == sub == client_id):
        raise InvalidClient
    if not _audience_ok(claims.get("aud"), audiences):
        raise InvalidClient
    exp, iat = _numeric_date(claims.get("exp")), _numeric_date(claims.get("iat"))
    nbf = _numeric_date(claims["nbf"]) if "nbf" in claims else None
    # RFC 7523 §3 item 4: expired assertions are refused; and one-shot credentials do not
    # live long, so that remembering their jti stays cheap.
    if exp <= now - leeway or exp > now + limits.CLIENT_ASSERTION_LIFETIME_MAX + leeway:
        raise InvalidClient
    if iat > now + leeway or (nbf is not None and nbf > now + leeway):
        raise InvalidClient
    if not_before is not None and iat < not_before:
        raise InvalidClient
    # RFC 7523 §3 item 7: jti lets us refuse a replay; we require it.
    if (
        not isinstance(jti, str)
        or not 0 < len(jti) <= limits.CLIENT_ASSERTION_JTI_MAX
        or not jti.isascii()
        or not jti.isprintable()
    ):
        raise InvalidClient
    return VerifiedAssertion(client_id, jti, exp, iat)
