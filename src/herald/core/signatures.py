"""HTTP Message Signatures (RFC 9421) and Content-Digest (RFC 9530): the pure parts.

Parsing of the ``Signature-Input``/``Signature``/``Content-Digest`` structured fields (RFC
8941, via ``http_sf``), the checks that need no key (required parameters, algorithm
allow-list, nonce strength, freshness, digest), and the signature base (RFC 9421 §2.5). No
I/O, no clock: ``now`` is passed in. Key lookup and the cryptographic check live in the
server adapter; signing for clients is :func:`signature_params` + :func:`signature_base`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import http_sf
from http_sf.innerlist import ser_innerlist

from herald.errors import (
    DigestMismatch,
    RequestExpired,
    SignatureInvalid,
    SignatureMissing,
)

__all__ = [
    "ALGORITHMS",
    "DIGEST_ALGORITHMS",
    "MAX_FIELD_LENGTH",
    "NONCE_MIN_BYTES",
    "ParsedSignature",
    "check_content_digest",
    "check_freshness",
    "content_digest",
    "parse_signature",
    "signature_base",
    "signature_params",
]

#: RFC 9421 §3.3 algorithm names we accept; the key's configured algorithm must match.
ALGORITHMS = frozenset({"ed25519", "hmac-sha256"})
#: RFC 9530 digests we check; anything else in the header is ignored (but one must match).
DIGEST_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
#: Signature-related header values longer than this are refused unparsed.
MAX_FIELD_LENGTH = 4096
#: OWASP ASVS 5.0 V11.5.1: a nonce carries at least 128 bits from a CSPRNG.
NONCE_MIN_BYTES = 16
_MAX_COMPONENTS = 16
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_COMPONENT = re.compile(r"@?[a-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    """One signature from the request, syntactically valid but not yet verified."""

    label: str
    components: tuple[str, ...]
    created: int
    expires: int | None
    nonce: str
    keyid: str
    alg: str
    params: str  # the serialized ``@signature-params`` value
    signature: bytes


def _parse_dict(value: str, what: str) -> dict[str, Any]:
    if len(value) > MAX_FIELD_LENGTH:
        raise SignatureInvalid(f"{what} is longer than {MAX_FIELD_LENGTH} characters")
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (http_sf.StructuredFieldError, UnicodeEncodeError, ValueError, TypeError):
        raise SignatureInvalid(f"{what} is not a valid structured field (RFC 8941)") from None
    if not isinstance(parsed, dict):  # pragma: no cover - tltype guarantees a dict
        raise SignatureInvalid(f"{what} is not a dictionary")
    return parsed


def _string_param(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or isinstance(value, http_sf.Token) or not value:
        raise SignatureInvalid(f"signature parameter {name!r} is required (a string)")
    return value


def _int_param(params: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = params.get(name)
    if value is None and not required:
        return None
    if type(value) is not int:
        raise SignatureInvalid(f"signature parameter {name!r} is required (an integer)")
    return value


def parse_signature(signature_input: str | None, signature: str | None) -> ParsedSignature:
    """Parse the first signature of a request (RFC 9421 §4.1–4.2).

    Raises:
        SignatureMissing: when either header is absent.
        SignatureInvalid: for any syntax or parameter problem.
    """
    if not signature_input or not signature:
        raise SignatureMissing("this request must carry Signature-Input and Signature headers")
    inputs = _parse_dict(signature_input, "Signature-Input")
    signatures = _parse_dict(signature, "Signature")
    if not inputs:
        raise SignatureMissing("Signature-Input names no signature")
    label = next(iter(inputs))
    member = inputs[label]
    if not (isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], list)):
        raise SignatureInvalid("Signature-Input members must be inner lists")
    items, params = member
    if len(items) > _MAX_COMPONENTS:
        raise SignatureInvalid(f"at most {_MAX_COMPONENTS} covered components")
    components: list[str] = []
    for item in items:
        name, item_params = item
        if (
            not isinstance(name, str)
            or isinstance(name, http_sf.Token)
            or item_params
            or not _COMPONENT.fullmatch(name)
        ):
            raise SignatureInvalid("covered components must be plain lower-case names")
        if name in components:
            raise SignatureInvalid(f"component {name!r} is covered twice")
        components.append(name)
    alg = _string_param(params, "alg")
    if alg not in ALGORITHMS:
        raise SignatureInvalid(f"alg must be one of {', '.join(sorted(ALGORITHMS))}")
    nonce = _string_param(params, "nonce")
    if len(nonce) > 128 or not _B64URL.fullmatch(nonce) or _nonce_bytes(nonce) < NONCE_MIN_BYTES:
        raise SignatureInvalid(f"nonce must be base64url of ≥ {NONCE_MIN_BYTES} random bytes")
    created = _int_param(params, "created", required=True)
    assert created is not None  # noqa: S101 - required=True guarantees it
    value = signatures.get(label)
    if value is None or not isinstance(value, tuple) or not isinstance(value[0], bytes):
        raise SignatureInvalid(f"Signature has no byte sequence for label {label!r}")
    return ParsedSignature(
        label=label,
        components=tuple(components),
        created=created,
        expires=_int_param(params, "expires", required=False),
        nonce=nonce,
        keyid=_string_param(params, "keyid"),
        alg=alg,
        params=ser_innerlist((items, params)),
        signature=value[0],
    )


def _nonce_bytes(nonce: str) -> int:
    try:
        return len(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4)))
    except (binascii.Error, ValueError):
        return 0


def check_freshness(
    sig: ParsedSignature, *, now: float, window: int, not_before: float | None = None
) -> None:
    """``created`` within ±``window`` of ``now`` and ``expires`` not passed (RFC 9421 §3.2).

    ``not_before`` lets an embedded node refuse requests signed before it started, since its
    in-memory nonce store forgot what it saw earlier.
    """
    if sig.created > now + window:
        raise RequestExpired("the signature's created time is in the future; check the clock")
    if sig.created < now - window:
        raise RequestExpired(f"the signature is older than {window} s; sign the request again")
    if sig.expires is not None and (sig.expires <= now or sig.expires < sig.created):
        raise RequestExpired("the signature has expired")
    if not_before is not None and sig.created < not_before:
        raise RequestExpired("the request was signed before the server started; sign it again")


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` value (RFC 9530 §2) with SHA-256."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def check_content_digest(header: str | None, body: bytes) -> None:
    """Every supported digest in ``header`` must match ``body``; at least one must be there.

    Raises:
        DigestMismatch: missing, malformed, no supported algorithm, or a mismatch.
    """
    if not header:
        raise DigestMismatch("Content-Digest is required (sha-256 of the exact body bytes)")
    if len(header) > MAX_FIELD_LENGTH:
        raise DigestMismatch("Content-Digest is too long")
    try:
        parsed = http_sf.parse(header.encode("ascii"), tltype="dictionary")
    except (http_sf.StructuredFieldError, UnicodeEncodeError, ValueError, TypeError):
        raise DigestMismatch("Content-Digest is not a valid structured field") from None
    checked = 0
    assert isinstance(parsed, dict)  # noqa: S101 - tltype guarantees a dict
    for name, member in parsed.items():
        digest = DIGEST_ALGORITHMS.get(name)
        if digest is None:
            continue
        value = member[0] if isinstance(member, tuple) else None
        if not isinstance(value, bytes) or not hmac.compare_digest(value, digest(body).digest()):
            raise DigestMismatch(f"Content-Digest {name} does not match the body")
        checked += 1
    if not checked:
        raise DigestMismatch("Content-Digest must include sha-256 (or sha-512)")


def signature_base(
    sig_components: Sequence[str], value_of: Callable[[str], str | None], params: str
) -> bytes:
    """The signature base of RFC 9421 §2.5.

    ``value_of(name)`` returns a component's value (derived ``@…`` or a header field,
    already combined per §2.1), or None when the message lacks it.

    Raises:
        SignatureInvalid: when a covered component is missing or not ASCII.
    """
    lines = []
    for name in sig_components:
        value = value_of(name)
        if value is None:
            raise SignatureInvalid(f"covered component {name!r} is not in the request")
        if not value.isprintable():
            # A CR/LF inside a value could make two messages share one base (§2.5).
            raise SignatureInvalid(f"covered component {name!r} has control characters")
        lines.append(f'"{name}": {value}')
    lines.append(f'"@signature-params": {params}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError:
        raise SignatureInvalid("covered components must be ASCII") from None


def signature_params(
    components: Sequence[str],
    *,
    created: int,
    nonce: str,
    keyid: str,
    alg: str,
    expires: int | None = None,
) -> str:
    """Serialize ``(components);created=…;keyid=…;nonce=…;alg=…`` (RFC 9421 §2.3)."""
    params: dict[str, Any] = {"created": created}
    if expires is not None:
        params["expires"] = expires
    params.update({"keyid": keyid, "nonce": nonce, "alg": alg})
    return ser_innerlist(([(c, {}) for c in components], params))
