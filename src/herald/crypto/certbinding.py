"""Certificate-bound access tokens (RFC 8705 §3), as pure functions.

A token issued over a TLS connection on which the client presented a certificate carries
``cnf: {"x5t#S256": <thumbprint>}`` (RFC 8705 §3.1, the confirmation method of RFC 7800
§3.1); a resource server accepts it only over a connection presenting that same
certificate. Nothing here does I/O: the server hands in the DER bytes of the peer
certificate it got from the TLS layer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from herald.errors import InvalidToken

__all__ = [
    "CNF_CLAIM",
    "X5T_S256",
    "binding_holds",
    "cnf_claim",
    "is_thumbprint",
    "parse_cnf",
    "thumbprint",
]

#: The JWT claim holding the confirmation method (RFC 7800 §3.1).
CNF_CLAIM = "cnf"
#: RFC 8705 §3.1: the confirmation member for an X.509 certificate SHA-256 thumbprint.
X5T_S256 = "x5t#S256"

# base64url without padding of a 32-byte digest: 43 characters, and the last one carries
# only 4 significant bits (RFC 4648 §5), so it must be one of the 16 letters below.
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]", re.ASCII)


def thumbprint(der: bytes) -> str:
    """The RFC 8705 §3.1 thumbprint of a certificate.

    Args:
        der: The certificate's DER encoding (as sent in the TLS handshake).

    Returns:
        base64url (no padding) of SHA-256 over ``der``: 43 characters.
    """
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_thumbprint(value: object) -> bool:
    """Whether ``value`` is a well-formed ``x5t#S256`` value (canonical base64url, 32 bytes)."""
    return isinstance(value, str) and _THUMBPRINT.fullmatch(value) is not None


def cnf_claim(bound_to: str) -> dict[str, str]:
    """The ``cnf`` claim value binding a token to the certificate with thumbprint ``bound_to``.

    Raises:
        ValueError: ``bound_to`` is not a thumbprint (a programming error, never input).
    """
    if not is_thumbprint(bound_to):
        raise ValueError("not an x5t#S256 thumbprint")
    return {X5T_S256: bound_to}


def parse_cnf(value: object) -> str:
    """The thumbprint of a verified token's ``cnf`` claim.

    Only the one confirmation method Herald issues is accepted: an object with exactly the
    member ``x5t#S256`` holding a well-formed thumbprint. Anything else (another method such
    as ``jkt``, extra members, a malformed value) would be a binding this server cannot
    check, so the token is refused rather than treated as unbound (fail closed).

    Raises:
        InvalidToken: The claim is not exactly ``{"x5t#S256": <thumbprint>}``.
    """
    if not isinstance(value, dict) or set(value) != {X5T_S256}:
        raise InvalidToken
    bound_to = value[X5T_S256]
    if not is_thumbprint(bound_to):
        raise InvalidToken
    return str(bound_to)


def binding_holds(bound_to: str | None, presented: str | None) -> bool:
    """Whether a token may be used over a connection (RFC 8705 §3).

    Args:
        bound_to: The token's ``x5t#S256`` thumbprint; ``None`` for an unbound token.
        presented: The thumbprint of the certificate the connection presented, if any.

    Returns:
        ``True`` for an unbound token, or for a bound one whose thumbprint equals the
        presented certificate's (compared in constant time); ``False`` otherwise.
    """
    if bound_to is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(bound_to.encode("ascii"), presented.encode("ascii"))
