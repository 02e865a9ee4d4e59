"""RFC 9421 ``Signature-Input``/``Signature`` headers through the request verifier's steps.

Input: ``mode byte`` then ``Signature-Input NUL Signature NUL header lines``. Mode 0 takes
both headers from the input; mode 1 takes ``Signature-Input`` from the input and pairs it
with a fixed, well-formed ``Signature`` so the fuzzer's effort goes into the parameters.
Each step of :func:`herald.service.signatures.verify_request` that needs no database runs
on what the previous step produced: parse, freshness, signature base, and the Ed25519 and
HMAC checks.

Allowed refusals: ``SignatureMissing``, ``SignatureInvalid``, ``RequestExpired``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fuzzing._input import fields, latin1, mode
from herald.core.signatures import (
    ParsedSignature,
    check_freshness,
    parse_signature,
    signature_base,
)
from herald.errors import RequestExpired, SignatureInvalid, SignatureMissing

REFUSALS = (SignatureMissing, SignatureInvalid, RequestExpired)

NOW = 1_800_000_000
WINDOW = 300
BASE_URL = "https://herald.test"
_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
_HMAC_SECRET = bytes(32)
_FIXED_SIGNATURE = "sig=:" + base64.b64encode(bytes(64)).decode("ascii") + ":"
_DERIVED = {
    "@method": "POST",
    "@target-uri": BASE_URL + "/v1/messages",
    "@authority": "herald.test",
    "@scheme": "https",
    "@path": "/v1/messages",
    "@query": "?",
    "@request-target": "/v1/messages",
}


def _headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in latin1(raw).split("\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _verify(sig: ParsedSignature, base: bytes) -> None:
    # The crypto step of herald.service.signatures._verify_crypto, with fixed keys.
    if sig.alg == "ed25519":
        try:
            _KEY.verify(sig.signature, base)
        except (InvalidSignature, ValueError):
            raise SignatureInvalid("the signature does not verify") from None
        return
    expected = hmac.new(_HMAC_SECRET, base, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, sig.signature):
        raise SignatureInvalid("the signature does not verify")


def test_one_input(data: bytes) -> None:
    """Parse, check and verify one pair of signature headers."""
    selected, rest = mode(data, 2)
    signature_input, signature, header_lines = fields(rest, 3)
    sig_text = latin1(signature) if selected == 0 else _FIXED_SIGNATURE
    try:
        sig = parse_signature(latin1(signature_input), sig_text)
    except REFUSALS:
        return
    # Every later step runs even when an earlier one refused, so the fuzzer reaches them
    # without having to hit the replay window first.
    with contextlib.suppress(RequestExpired):
        check_freshness(sig, now=NOW, window=WINDOW, not_before=NOW - WINDOW)
    headers = _headers(header_lines)
    try:
        base = signature_base(
            sig.components, lambda name: _DERIVED.get(name, headers.get(name)), sig.params
        )
        _verify(sig, base)
    except SignatureInvalid:
        return
