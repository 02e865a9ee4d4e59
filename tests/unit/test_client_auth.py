"""The SDK's client authentication at the OAuth endpoints: ``client_secret_basic`` or
``private_key_jwt`` (RFC 7523), against httpx.MockTransport; the assertions it makes are
checked with PyJWT and with Herald's own verifier."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from herald.client import AsyncPublisher, HeraldClientError, Publisher, RequestSigner
from herald.crypto.assertions import ASSERTION_TYPE, parse_assertion, verify_assertion

BASE = "https://herald.test"
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
TOKEN_BODY = {"access_token": "tok", "token_type": "Bearer", "expires_in": 600, "scope": "x"}


class OAuth:
    """A MockTransport handler for /oauth/token and /oauth/revoke; optionally 503 first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            self.failures -= 1
            return httpx.Response(503)
        if request.url.path == "/oauth/revoke":
            return httpx.Response(200, json={})
        return httpx.Response(200, json=TOKEN_BODY)

    def forms(self) -> list[dict[str, list[str]]]:
        return [parse_qs(r.content.decode()) for r in self.requests]


async def no_sleep(_: float) -> None:
    return None


def make(
    api: OAuth, secret: str | None, signer: RequestSigner | None, **kwargs: Any
) -> AsyncPublisher:
    return AsyncPublisher(
        BASE,
        "app-1",
        secret,
        transport=httpx.MockTransport(api),
        signer=signer,
        sleep=no_sleep,
        **kwargs,
    )


def verified(text: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(text, KEY.public_key(), algorithms=["EdDSA"], audience=BASE)
    verify_assertion(
        parse_assertion(text), PUBLIC, client_id="app-1", audiences={BASE}, now=time.time()
    )
    return claims


async def test_without_a_secret_the_signing_key_authenticates() -> None:
    api = OAuth(failures=1)
    async with make(api, None, RequestSigner("hk_1", KEY)) as pub:
        assert await pub.token() == "tok"
        await pub.revoke_token()
    assert len(api.requests) == 3  # a 503, its retry, the revocation
    jtis = []
    for request, form in zip(api.requests, api.forms(), strict=True):
        assert "authorization" not in request.headers
        assert "signature" in request.headers  # RFC 9421-signed as always
        assert form["client_assertion_type"] == [ASSERTION_TYPE]
        header = jwt.get_unverified_header(form["client_assertion"][0])
        assert header["alg"] == "EdDSA"
        assert header["kid"] == "hk_1"
        claims = verified(form["client_assertion"][0])
        assert claims["iss"] == claims["sub"] == "app-1"
        assert claims["exp"] - claims["iat"] == 60
        assert len(claims["jti"]) >= 32  # 192 random bits, base64url
        jtis.append(claims["jti"])
    assert len(set(jtis)) == 3  # a fresh assertion for every attempt, retries included
    assert api.forms()[2]["token"] == ["tok"]


async def test_a_secret_means_basic_unless_told_otherwise() -> None:
    api = OAuth()
    async with make(api, "s3cret", RequestSigner("hk_1", KEY)) as pub:
        await pub.token()
    assert api.requests[0].headers["authorization"].startswith("Basic ")
    assert "client_assertion" not in api.forms()[0]

    api = OAuth()
    async with make(
        api, "s3cret", RequestSigner("hk_1", KEY), client_auth="private_key_jwt"
    ) as pub:
        await pub.token()
    assert "authorization" not in api.requests[0].headers
    verified(api.forms()[0]["client_assertion"][0])


@pytest.mark.parametrize(
    ("secret", "signer", "client_auth"),
    [
        (None, None, None),
        (None, RequestSigner("hk_h", b"0123456789abcdef0123"), None),
        ("s3cret", None, "private_key_jwt"),
        (None, RequestSigner("hk_1", KEY), "client_secret_basic"),
        ("s3cret", RequestSigner("hk_1", KEY), "client_secret_jwt"),
    ],
    ids=["nothing", "hmac-key", "no-key", "no-secret", "unknown-method"],
)
def test_missing_credentials_are_refused_up_front(
    secret: str | None, signer: RequestSigner | None, client_auth: Any
) -> None:
    with pytest.raises(HeraldClientError):
        make(OAuth(), secret, signer, client_auth=client_auth)


def test_hmac_signer_cannot_make_assertions() -> None:
    signer = RequestSigner("hk_h", b"0123456789abcdef0123")
    assert not signer.can_assert
    with pytest.raises(HeraldClientError):
        signer.client_assertion("app-1", BASE)


def test_sync_publisher_passes_client_auth() -> None:
    api = OAuth()
    with Publisher(
        BASE,
        "app-1",
        None,
        transport=httpx.MockTransport(api),
        signer=RequestSigner("hk_1", KEY),
    ) as pub:
        assert pub.token() == "tok"
    verified(api.forms()[0]["client_assertion"][0])
