"""The pure RFC 7523 client-assertion verifier (``herald.crypto.assertions``), with keys made
here, an injected clock, and assertions built both by hand (every header and byte under the
test's control) and by PyJWT and joserfc (independent implementations)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws as jrfc_jws
from joserfc.jwk import OKPKey

from herald import limits
from herald.crypto.assertions import (
    ASSERTION_TYPE,
    KID_MAX,
    ParsedAssertion,
    VerifiedAssertion,
    parse_assertion,
    verify_assertion,
)
from herald.errors import InvalidClient

NOW = 1_800_000_000
BASE = "https://herald.test:8443"
TOKEN_ENDPOINT = BASE + "/oauth/token"
AUDIENCES = frozenset({BASE, TOKEN_ENDPOINT})
CLIENT = "app_0123456789abcdef0123"
KID = "hk_0123456789abcdef"
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
OTHER_KEY = Ed25519PrivateKey.generate()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims at NOW; a change to ``None`` removes the claim."""
    base: dict[str, Any] = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": BASE,
        "iat": NOW,
        "exp": NOW + 60,
        "jti": "jti-" + "a" * 22,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def compact(
    payload: dict[str, Any] | bytes,
    *,
    header: dict[str, Any] | None = None,
    key: Ed25519PrivateKey = KEY,
    signature: bytes | None = None,
) -> str:
    """A JWS made by hand: ``header`` replaces the default ``{"alg": "EdDSA", "kid": KID}``."""
    head = {"alg": "EdDSA", "kid": KID} if header is None else header
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = b64url(json.dumps(head).encode()) + "." + b64url(body)
    sig = key.sign(signing_input.encode()) if signature is None else signature
    return signing_input + "." + b64url(sig)


def verify(
    text: str, *, public: bytes = PUBLIC, now: float = NOW, **kwargs: Any
) -> VerifiedAssertion:
    return verify_assertion(
        parse_assertion(text), public, client_id=CLIENT, audiences=AUDIENCES, now=now, **kwargs
    )


def refused(text: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidClient) as info:
        verify(text, **kwargs)
    problem = info.value
    assert problem.status == 401
    assert problem.extra == {"error": "invalid_client"}
    assert problem.detail == "client authentication failed"  # opaque, whatever went wrong


# -- accepted ---------------------------------------------------------------------------------
def test_a_valid_assertion_verifies() -> None:
    verified = verify(compact(claims()))
    assert verified == VerifiedAssertion(CLIENT, "jti-" + "a" * 22, NOW + 60, NOW)
    assert ASSERTION_TYPE == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_pyjwt_assertion_verifies() -> None:
    text = jwt.encode(claims(), KEY, algorithm="EdDSA", headers={"kid": KID})
    assert verify(text).client_id == CLIENT


def test_joserfc_assertion_with_the_rfc_9864_algorithm_name_verifies() -> None:
    key = OKPKey.import_key(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc's notes on algorithm registries
        text = jrfc_jws.serialize_compact(
            {"alg": "Ed25519", "kid": KID},
            json.dumps(claims()).encode(),
            key,
            algorithms=["Ed25519"],
        )
    assert json.loads(base64.urlsafe_b64decode(text.split(".")[0] + "=="))["alg"] == "Ed25519"
    assert verify(text).client_id == CLIENT


@pytest.mark.parametrize(
    "change",
    [
        {"aud": TOKEN_ENDPOINT},
        {"aud": [TOKEN_ENDPOINT]},
        {"aud": ["https://elsewhere.example", BASE]},
        {"nbf": NOW},
        {"exp": NOW - limits.JWT_LEEWAY + 1},
        {"exp": NOW + limits.CLIENT_ASSERTION_LIFETIME_MAX + limits.JWT_LEEWAY},
        {"iat": NOW + limits.JWT_LEEWAY},
        {"exp": NOW + 60.5, "iat": NOW - 0.5},
        {"jti": "x" * limits.CLIENT_ASSERTION_JTI_MAX},
    ],
    ids=[
        "aud-token-endpoint",
        "aud-array",
        "aud-array-any",
        "nbf",
        "exp-within-leeway",
        "exp-at-max",
        "iat-within-leeway",
        "fractional-times",
        "jti-at-max",
    ],
)
def test_accepted_variants(change: dict[str, Any]) -> None:
    verify(compact(claims(**change)))


@pytest.mark.parametrize(
    "typ", ["JWT", "jwt", "client-authentication+jwt", "application/client-authentication+jwt"]
)
def test_accepted_types(typ: str) -> None:
    verify(compact(claims(), header={"alg": "EdDSA", "kid": KID, "typ": typ}))


def test_key_headers_are_ignored_never_trusted() -> None:
    """jku/x5u/jwk/x5c never choose the key: with ours it verifies, with theirs it does not."""
    theirs = OTHER_KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    header = {
        "alg": "EdDSA",
        "kid": KID,
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(theirs)},
        "x5c": ["MIIB"],
    }
    verify(compact(claims(), header=header))
    refused(compact(claims(), header=header, key=OTHER_KEY))


# -- refused: header and format -----------------------------------------------------------------
def _hs256(secret: bytes) -> str:
    head = b64url(json.dumps({"alg": "HS256", "kid": KID}).encode())
    body = b64url(json.dumps(claims()).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def _none() -> str:
    head = b64url(json.dumps({"alg": "none", "kid": KID}).encode())
    return f"{head}.{b64url(json.dumps(claims()).encode())}."


def _sig64(alg: str) -> str:
    return compact(claims(), header={"alg": alg, "kid": KID})


FORMAT_CASES: dict[str, Callable[[], str]] = {
    "alg-none": _none,
    "hs256-with-public-key": lambda: _hs256(PUBLIC),
    "hs256-with-public-pem": lambda: _hs256(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ),
    "rs256": lambda: _sig64("RS256"),
    "es256": lambda: _sig64("ES256"),
    "eddsa-lowercase": lambda: _sig64("eddsa"),
    "no-alg": lambda: compact(claims(), header={"kid": KID}),
    "no-kid": lambda: compact(claims(), header={"alg": "EdDSA"}),
    "empty-kid": lambda: compact(claims(), header={"alg": "EdDSA", "kid": ""}),
    "long-kid": lambda: compact(claims(), header={"alg": "EdDSA", "kid": "k" * (KID_MAX + 1)}),
    "kid-not-string": lambda: compact(claims(), header={"alg": "EdDSA", "kid": 7}),
    "crit": lambda: compact(
        claims(), header={"alg": "EdDSA", "kid": KID, "crit": ["exp"], "exp": 1}
    ),
    "typ-access-token": lambda: compact(
        claims(), header={"alg": "EdDSA", "kid": KID, "typ": "at+jwt"}
    ),
    "typ-not-string": lambda: compact(claims(), header={"alg": "EdDSA", "kid": KID, "typ": 1}),
    "header-not-object": lambda: b64url(b"[]") + "." + compact(claims()).split(".", 1)[1],
    "claims-not-object": lambda: compact(b'["iss"]'),
    "claims-not-json": lambda: compact(b"{iss"),
    "claims-nan": lambda: compact(b'{"iss": NaN}'),
    "claims-not-utf8": lambda: compact(b'{"iss": "\xff"}'),
    "duplicate-claim": lambda: compact(
        json.dumps(claims())[:-1].encode() + b', "iss": "' + CLIENT.encode() + b'"}'
    ),
    "two-segments": lambda: compact(claims()).rsplit(".", 1)[0],
    "five-segments": lambda: compact(claims()) + ".a.b",
    "padded": lambda: compact(claims()) + "==",
    "non-canonical-base64": lambda: (
        compact(claims())[:-1]
        + {"A": "B", "Q": "R", "g": "h", "w": "x"}.get(compact(claims())[-1], "B")
    ),
    "bad-base64-char": lambda: compact(claims()).replace(".", ".+", 1),
    "short-signature": lambda: compact(claims(), signature=b"\0" * 32),
    "empty": lambda: "",
    "non-ascii": lambda: compact(claims()) + "é",
    "too-long": lambda: compact(claims(pad="p" * limits.CLIENT_ASSERTION_MAX)),
}


@pytest.mark.parametrize("name", sorted(FORMAT_CASES))
def test_refused_formats(name: str) -> None:
    refused(FORMAT_CASES[name]())


# -- refused: signature and claims --------------------------------------------------------------
CLAIM_CASES: dict[str, dict[str, Any]] = {
    "iss-missing": {"iss": None},
    "sub-missing": {"sub": None},
    "iss-not-sub": {"sub": "app_other"},
    "iss-sub-other-client": {"iss": "app_other", "sub": "app_other"},
    "iss-not-string": {"iss": 1, "sub": 1},
    "aud-missing": {"aud": None},
    "aud-wrong": {"aud": "https://elsewhere.example"},
    "aud-revoke-endpoint": {"aud": BASE + "/oauth/revoke"},
    "aud-prefix": {"aud": BASE + "/"},
    "aud-empty-array": {"aud": []},
    "aud-array-of-others": {"aud": ["https://a.example", "https://b.example"]},
    "aud-array-non-string": {"aud": [BASE, 1]},
    "aud-array-too-long": {"aud": [BASE] + ["x"] * limits.CLIENT_ASSERTION_AUD_MAX},
    "aud-object": {"aud": {"x": BASE}},
    "exp-missing": {"exp": None},
    "exp-expired": {"exp": NOW - limits.JWT_LEEWAY},
    "exp-too-far": {"exp": NOW + limits.CLIENT_ASSERTION_LIFETIME_MAX + limits.JWT_LEEWAY + 1},
    "exp-string": {"exp": str(NOW + 60)},
    "exp-bool": {"exp": True},
    "exp-huge": {"exp": 10**400},
    "iat-missing": {"iat": None},
    "iat-future": {"iat": NOW + limits.JWT_LEEWAY + 1},
    "iat-string": {"iat": str(NOW)},
    "nbf-future": {"nbf": NOW + limits.JWT_LEEWAY + 1},
    "jti-missing": {"jti": None},
    "jti-empty": {"jti": ""},
    "jti-too-long": {"jti": "x" * (limits.CLIENT_ASSERTION_JTI_MAX + 1)},
    "jti-not-string": {"jti": 12345},
    "jti-control-char": {"jti": "abc\ndef"},
    "jti-non-ascii": {"jti": "jti-é"},
}


@pytest.mark.parametrize("name", sorted(CLAIM_CASES))
def test_refused_claims(name: str) -> None:
    refused(compact(claims(**CLAIM_CASES[name])))


def test_nbf_present_as_null_is_refused() -> None:
    payload = {**claims(), "nbf": None}
    refused(compact(payload))


def test_wrong_key_or_tampered_payload_is_refused() -> None:
    refused(compact(claims(), key=OTHER_KEY))
    good = compact(claims())
    head, _, sig = good.split(".")
    tampered = f"{head}.{b64url(json.dumps(claims(jti='other')).encode())}.{sig}"
    refused(tampered)
    refused(good, public=b"\0" * 31)  # not an Ed25519 public key at all


def test_assertion_issued_before_the_node_started_is_refused() -> None:
    text = compact(claims(iat=NOW - 5))
    verify(text, not_before=NOW - 5)
    refused(text, not_before=NOW - 4)


def test_parse_keeps_what_verification_needs() -> None:
    text = compact(claims())
    parsed = parse_assertion(text)
    assert isinstance(parsed, ParsedAssertion)
    assert parsed.kid == KID
    assert parsed.issuer == CLIENT
    assert parsed.signing_input == text.rsplit(".", 1)[0].encode()
    assert len(parsed.signature) == 64
    assert parse_assertion(compact(claims(iss=None))).issuer is None
