"""Hypothesis properties of herald.crypto.assertions: the client-assertion parser and verifier
refuse garbage with the one opaque ``InvalidClient`` and never fail any other way, and a
correctly signed assertion with valid claims always verifies."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from herald import limits
from herald.crypto.assertions import parse_assertion, verify_assertion
from herald.errors import InvalidClient

NOW = 1_800_000_000
BASE = "https://herald.test"
CLIENT = "app_0123"
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed(header: Any, claims: Any) -> str:
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(KEY.sign(signing_input.encode()))


def outcome(text: str) -> str:
    """``"ok"`` or ``"refused"``; any other exception fails the property."""
    refusal: InvalidClient | None = None
    try:
        parsed = parse_assertion(text)
        verify_assertion(parsed, PUBLIC, client_id=CLIENT, audiences={BASE}, now=NOW)
    except InvalidClient as exc:
        refusal = exc
    if refusal is None:
        return "ok"
    assert refusal.status == 401
    assert refusal.extra == {"error": "invalid_client"}
    return "refused"


# --- strategies -------------------------------------------------------------------------
JOSE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ é\x00"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
claim_values = st.one_of(
    json_values,
    st.just(CLIENT),
    st.just(BASE),
    st.integers(min_value=NOW - 400, max_value=NOW + 400),
    st.lists(st.sampled_from([BASE, "https://x.example", 7]), max_size=10),
)
claim_sets = st.dictionaries(
    st.sampled_from(["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "other"]),
    claim_values,
    max_size=8,
)
headers = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["EdDSA", "Ed25519", "none", "HS256", "ES256"])},
        optional={
            "kid": st.one_of(st.text(max_size=70), st.integers()),
            "typ": st.one_of(st.sampled_from(["JWT", "at+jwt"]), json_values),
            "crit": json_values,
            "jwk": json_values,
        },
    ),
)


@settings(max_examples=300)
@given(st.text(alphabet=JOSE_ALPHABET, max_size=300))
def test_random_text_is_refused(text: str) -> None:
    assert outcome(text) == "refused"


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=5))
def test_random_base64url_segments_are_refused(segments: list[bytes]) -> None:
    assert outcome(".".join(b64url(s) for s in segments)) == "refused"


@settings(max_examples=500)
@given(headers, claim_sets)
def test_signed_garbage_never_fails_unexpectedly(header: Any, claims: Any) -> None:
    """Correctly signed, arbitrary header and claims: verified or refused, nothing else."""
    result = outcome(signed(header, claims))
    if result == "ok":
        # Only what passed every rule can verify.
        assert header["alg"] in {"EdDSA", "Ed25519"}
        assert claims["iss"] == claims["sub"] == CLIENT
        assert claims["exp"] > NOW - limits.JWT_LEEWAY
        assert isinstance(claims["jti"], str)
        assert claims["jti"]


@settings(max_examples=200)
@given(
    alg=st.sampled_from(["EdDSA", "Ed25519"]),
    lifetime=st.integers(min_value=1, max_value=limits.CLIENT_ASSERTION_LIFETIME_MAX),
    skew=st.integers(min_value=-limits.JWT_LEEWAY, max_value=limits.JWT_LEEWAY),
    jti=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
        min_size=1,
        max_size=limits.CLIENT_ASSERTION_JTI_MAX,
    ),
    aud=st.sampled_from([BASE, [BASE], ["https://x.example", BASE]]),
)
def test_valid_assertions_always_verify(
    alg: str, lifetime: int, skew: int, jti: str, aud: Any
) -> None:
    iat = NOW + skew
    claims = {"iss": CLIENT, "sub": CLIENT, "aud": aud, "iat": iat, "exp": iat + lifetime}
    claims["jti"] = jti
    assert outcome(signed({"alg": alg, "kid": "hk_1"}, claims)) == "ok"
