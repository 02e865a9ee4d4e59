"""Bearer tokens that must be refused, and what the refusal must (not) reveal or store.

Two levels:

* through real HTTPS against the ``server`` fixture: forged, tampered, confused and foreign
  tokens on ``POST /v1/messages`` are 401 ``invalid-token`` and store nothing; tenant and
  scope boundaries answer 404/403 without leaking anything;
* on :class:`herald.crypto.tokens.TokenService` directly, with keys generated here and an
  injected clock, for what cannot be forged without the server's private key (expiry,
  ``nbf``, audience, issuer, ``typ``, required claims, size cap).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from herald.core.scopes import ScopeSet
from herald.core.topics import TopicPattern
from herald.crypto.signing import LoadedSigningKey, jwk_thumbprint
from herald.crypto.tokens import TokenService
from herald.errors import InvalidToken

if TYPE_CHECKING:  # the fixture's types, for readers and type checkers only
    from tests.api.conftest import App, Server

PROBLEM_PREFIX = "urn:herald:problem:"
WWW_AUTHENTICATE = 'Bearer error="invalid_token"'


# -- JOSE helpers (written here, independent of Herald and of PyJWT's safety checks) ---------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = token.split(".")
    return (
        json.loads(b64url_decode(header)),
        json.loads(b64url_decode(payload)),
        b64url_decode(signature),
    )


def ed25519_token(
    private: Ed25519PrivateKey, header: dict[str, Any], claims: dict[str, Any]
) -> str:
    signing_input = b64url_json(header) + "." + b64url_json(claims)
    return signing_input + "." + b64url(private.sign(signing_input.encode("ascii")))


def hs256_token(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = b64url_json(header) + "." + b64url_json(claims)
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def public_jwk(private: Ed25519PrivateKey) -> dict[str, str]:
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}


def new_uuid7() -> str:
    """A random, well-formed UUIDv7 (RFC 9562 §5.7) that names no stored message."""
    value = (
        (int(time.time() * 1000) << 80)
        | (0x7 << 76)
        | (secrets.randbits(12) << 64)
        | (0b10 << 62)
        | secrets.randbits(62)
    )
    return str(uuid.UUID(int=value))


def unique_topic(prefix: str = "refused") -> str:
    return f"{prefix}.{secrets.token_hex(6)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body = response.json()
    assert body["type"] == PROBLEM_PREFIX + slug, body
    assert body["status"] == status
    return body


# -- HTTP helpers ----------------------------------------------------------------------------
def publish(server: Server, headers: dict[str, str], topic: str | None = None) -> httpx.Response:
    body = {"topic": topic or unique_topic(), "title": "hello", "body": "refused?"}
    with server.client() as client:
        return client.post("/v1/messages", json=body, headers=headers)


def assert_refused_and_nothing_stored(server: Server, headers: dict[str, str]) -> None:
    before = server.db_count("messages"), server.db_count("deliveries")
    response = publish(server, headers)
    body = assert_problem(response, 401, "invalid-token")
    assert response.headers.get("www-authenticate") == WWW_AUTHENTICATE
    assert "id" not in body
    assert (server.db_count("messages"), server.db_count("deliveries")) == before


def valid_token_parts(server: Server) -> tuple[str, dict[str, Any], dict[str, Any], bytes]:
    token = server.token()
    header, claims, signature = split(token)
    return token, header, claims, signature


def subscriber_token(
    server: Server, app: App | None = None, topics: list[str] | None = None
) -> str:
    with server.client() as client:
        response = client.post(
            "/v1/subscriber-tokens",
            json={"recipient": "user-42", "topics": topics or ["orders.>"]},
            headers=bearer(server.token(app)),
        )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


# -- the control: a valid token is accepted --------------------------------------------------
def test_valid_token_publishes(server: Server) -> None:
    before = server.db_count("messages")
    response = publish(server, bearer(server.token()))
    assert response.status_code == 202, response.text
    assert server.db_count("messages") == before + 1


def test_bearer_scheme_is_case_insensitive(server: Server) -> None:
    # RFC 9110 §11.1: auth schemes are case-insensitive.
    response = publish(server, {"Authorization": "bearer " + server.token()})
    assert response.status_code == 202, response.text


# -- forged and malformed tokens over HTTPS --------------------------------------------------
def test_missing_authorization_is_refused(server: Server) -> None:
    assert_refused_and_nothing_stored(server, {})


@pytest.mark.parametrize(
    "value",
    [
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer ...",
        "Bearer eyJhbGciOiJFZERTQSJ9",
        "Bearer " + "A" * 9000,
        "Basic " + base64.b64encode(b"user:pass").decode(),
        "Token abc",
        "Bearer",
    ],
)
def test_garbage_tokens_are_refused(server: Server, value: str) -> None:
    assert_refused_and_nothing_stored(server, {"Authorization": value})


def test_access_token_of_the_wrong_scheme_is_refused(server: Server) -> None:
    assert_refused_and_nothing_stored(server, {"Authorization": "Basic " + server.token()})


def test_token_in_query_string_is_not_accepted(server: Server) -> None:
    before = server.db_count("messages")
    with server.client() as client:
        response = client.post(
            "/v1/messages",
            params={"access_token": server.token()},
            json={"topic": unique_topic(), "title": "x"},
        )
    assert_problem(response, 401, "invalid-token")
    assert server.db_count("messages") == before


@pytest.mark.parametrize("position", [0, 31, -1])
def test_flipped_signature_byte_is_refused(server: Server, position: int) -> None:
    token, _, _, signature = valid_token_parts(server)
    tampered = bytearray(signature)
    tampered[position] ^= 0x01
    forged = token.rsplit(".", 1)[0] + "." + b64url(bytes(tampered))
    assert forged != token
    assert_refused_and_nothing_stored(server, bearer(forged))


def test_truncated_or_missing_signature_is_refused(server: Server) -> None:
    token = server.token()
    signing_input, signature = token.rsplit(".", 1)
    assert_refused_and_nothing_stored(server, bearer(signing_input + "." + signature[:-4]))
    assert_refused_and_nothing_stored(server, bearer(signing_input + "."))
    assert_refused_and_nothing_stored(server, bearer(signing_input))


def test_modified_claims_with_original_signature_are_refused(server: Server) -> None:
    # A narrow token whose payload is swapped for one with more scope keeps its signature.
    token = server.token(server.narrow)
    header, claims, signature = split(token)
    claims["scope"] = "publish:> subscribe:> messages:read admin"
    forged = b64url_json(header) + "." + b64url_json(claims) + "." + b64url(signature)
    assert_refused_and_nothing_stored(server, bearer(forged))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(server: Server, alg: str) -> None:
    _, header, claims, _ = valid_token_parts(server)
    forged_header = {**header, "alg": alg}
    unsigned = b64url_json(forged_header) + "." + b64url_json(claims) + "."
    assert_refused_and_nothing_stored(server, bearer(unsigned))


def _server_public_key_encodings(server: Server, kid: str) -> list[bytes]:
    with server.client() as client:
        keys = client.get("/.well-known/jwks.json").json()["keys"]
    jwk = next(k for k in keys if k["kid"] == kid)
    raw = b64url_decode(jwk["x"])
    public = Ed25519PublicKey.from_public_bytes(raw)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    openssh = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return [
        raw,
        pem,
        pem.rstrip(b"\n"),
        der,
        openssh,
        jwk["x"].encode(),
        json.dumps(jwk).encode(),
        json.dumps(jwk, separators=(",", ":")).encode(),
    ]


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_key_confusion_with_server_public_key_is_refused(server: Server, alg: str) -> None:
    _, header, claims, _ = valid_token_parts(server)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for secret in _server_public_key_encodings(server, header["kid"]):
        forged_header = {**header, "alg": alg}
        signing_input = b64url_json(forged_header) + "." + b64url_json(claims)
        mac = hmac.new(secret, signing_input.encode("ascii"), digest).digest()
        assert_refused_and_nothing_stored(server, bearer(signing_input + "." + b64url(mac)))


def test_attacker_key_with_unknown_kid_is_refused(server: Server) -> None:
    _, header, claims, _ = valid_token_parts(server)
    attacker = Ed25519PrivateKey.generate()
    kid = jwk_thumbprint(b64url_decode(public_jwk(attacker)["x"]))
    forged = ed25519_token(attacker, {**header, "kid": kid}, claims)
    assert_refused_and_nothing_stored(server, bearer(forged))


def test_attacker_key_with_the_server_kid_is_refused(server: Server) -> None:
    _, header, claims, _ = valid_token_parts(server)
    forged = ed25519_token(Ed25519PrivateKey.generate(), header, claims)
    assert_refused_and_nothing_stored(server, bearer(forged))


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "../../../../../../dev/null",
        "' OR 1=1 --",
        "x' UNION SELECT kid FROM signing_keys --",
        "",
        "\u0000",
        "k" * 4000,
        None,
        0,
        ["kid"],
        {"$ne": ""},
    ],
)
def test_hostile_kid_is_refused(server: Server, kid: Any) -> None:
    _, header, claims, _ = valid_token_parts(server)
    forged_header = {key: value for key, value in header.items() if key != "kid"}
    if kid is not None:
        forged_header["kid"] = kid
    forged = ed25519_token(Ed25519PrivateKey.generate(), forged_header, claims)
    assert_refused_and_nothing_stored(server, bearer(forged))


@pytest.mark.parametrize("keep_server_kid", [False, True])
def test_embedded_jwk_header_is_not_trusted(server: Server, keep_server_kid: bool) -> None:
    _, header, claims, _ = valid_token_parts(server)
    attacker = Ed25519PrivateKey.generate()
    jwk = public_jwk(attacker)
    forged_header = {**header, "jwk": jwk}
    if not keep_server_kid:
        forged_header["kid"] = jwk_thumbprint(b64url_decode(jwk["x"]))
    assert_refused_and_nothing_stored(
        server, bearer(ed25519_token(attacker, forged_header, claims))
    )


@pytest.mark.parametrize("member", ["jku", "x5u"])
@pytest.mark.parametrize("keep_server_kid", [False, True])
def test_key_url_headers_are_not_followed(
    server: Server, member: str, keep_server_kid: bool
) -> None:
    _, header, claims, _ = valid_token_parts(server)
    attacker = Ed25519PrivateKey.generate()
    forged_header = {**header, member: "https://attacker.invalid/jwks.json"}
    if not keep_server_kid:
        forged_header["kid"] = "attacker-key"
    assert_refused_and_nothing_stored(
        server, bearer(ed25519_token(attacker, forged_header, claims))
    )


def test_x5c_header_is_not_trusted(server: Server) -> None:
    _, header, claims, _ = valid_token_parts(server)
    attacker = Ed25519PrivateKey.generate()
    forged_header = {**header, "x5c": [b64url(b"not a certificate")]}
    assert_refused_and_nothing_stored(
        server, bearer(ed25519_token(attacker, forged_header, claims))
    )


# -- tokens of the wrong kind ----------------------------------------------------------------
def test_subscriber_token_cannot_publish(server: Server) -> None:
    token = subscriber_token(server)
    assert jwt.get_unverified_header(token)["typ"] == "herald-sub+jwt"
    assert_refused_and_nothing_stored(server, bearer(token))


def test_subscriber_token_cannot_read_or_mint(server: Server) -> None:
    token = subscriber_token(server)
    with server.client() as client:
        read = client.get(f"/v1/messages/{new_uuid7()}", headers=bearer(token))
        mint = client.post(
            "/v1/subscriber-tokens",
            json={"recipient": "user-42", "topics": ["orders.>"]},
            headers=bearer(token),
        )
        history = client.get("/v1/topics/orders.x/messages", headers=bearer(token))
    for response in (read, mint, history):
        assert_problem(response, 401, "invalid-token")
        assert response.headers.get("www-authenticate") == WWW_AUTHENTICATE


def test_access_token_cannot_get_a_stream_ticket(server: Server) -> None:
    with server.client() as client:
        refused = client.post("/v1/stream-tickets", headers=bearer(server.token()))
        accepted = client.post("/v1/stream-tickets", headers=bearer(subscriber_token(server)))
    assert_problem(refused, 401, "invalid-token")
    assert accepted.status_code == 201, accepted.text


def test_subscriber_token_with_retyped_header_is_refused(server: Server) -> None:
    # Changing typ to at+jwt breaks the signature; the audience would be wrong anyway.
    header, claims, signature = split(subscriber_token(server))
    forged = b64url_json({**header, "typ": "at+jwt"}) + "." + b64url_json(claims) + "."
    assert_refused_and_nothing_stored(server, bearer(forged + b64url(signature)))


# -- tenant isolation ------------------------------------------------------------------------
def _normalised(response: httpx.Response, message_id: str) -> dict[str, Any]:
    body = response.json()
    body.pop("instance", None)
    return json.loads(json.dumps(body).replace(message_id, "<id>"))


def test_other_tenant_cannot_tell_a_message_exists(server: Server) -> None:
    topic = unique_topic("orders")
    with server.client() as client:
        published = client.post(
            "/v1/messages",
            json={"topic": topic, "title": "secret title", "body": "secret body"},
            headers=bearer(server.token()),
        )
        assert published.status_code == 202, published.text
        message_id = published.json()["id"]
        missing_id = new_uuid7()

        own = client.get(f"/v1/messages/{message_id}", headers=bearer(server.token()))
        other_token = bearer(server.token(server.other))
        foreign = client.get(f"/v1/messages/{message_id}", headers=other_token)
        missing = client.get(f"/v1/messages/{missing_id}", headers=other_token)

    assert own.status_code == 200, own.text
    assert own.json()["title"] == "secret title"
    assert_problem(foreign, 404, "not-found")
    assert_problem(missing, 404, "not-found")
    assert _normalised(foreign, message_id) == _normalised(missing, missing_id)
    assert "secret" not in foreign.text
    assert topic not in foreign.text
    for name in ("content-type", "cache-control", "www-authenticate"):
        assert foreign.headers.get(name) == missing.headers.get(name)


def test_other_tenant_history_does_not_show_the_message(server: Server) -> None:
    topic = unique_topic("orders")
    with server.client() as client:
        published = client.post(
            "/v1/messages", json={"topic": topic, "title": "t"}, headers=bearer(server.token())
        )
        assert published.status_code == 202, published.text
        history = client.get(
            f"/v1/topics/{topic}/messages", headers=bearer(server.token(server.other))
        )
        cursor = client.get(
            f"/v1/topics/{topic}/messages",
            params={"since": published.json()["id"]},
            headers=bearer(server.token(server.other)),
        )
    assert history.status_code == 200, history.text
    assert history.json()["messages"] == []
    # A foreign message id is no cursor for this tenant.
    assert_problem(cursor, 400, "invalid-cursor")


def test_out_of_scope_read_looks_like_a_missing_message(server: Server) -> None:
    # narrow (same tenant) has no messages:read and no scope reaching billing.*.
    with server.client() as client:
        published = client.post(
            "/v1/messages",
            json={"topic": unique_topic("billing"), "title": "t"},
            headers=bearer(server.token()),
        )
        assert published.status_code == 202, published.text
        message_id, missing_id = published.json()["id"], new_uuid7()
        narrow = bearer(server.token(server.narrow))
        hidden = client.get(f"/v1/messages/{message_id}", headers=narrow)
        missing = client.get(f"/v1/messages/{missing_id}", headers=narrow)
    assert_problem(hidden, 404, "not-found")
    assert _normalised(hidden, message_id) == _normalised(missing, missing_id)


# -- scope boundaries ------------------------------------------------------------------------
@pytest.mark.parametrize("topic", ["billing.x", "orders", "ordersx.y", "billing.orders.x"])
def test_narrow_app_cannot_publish_outside_its_scope(server: Server, topic: str) -> None:
    before = server.db_count("messages"), server.db_count("deliveries")
    response = publish(server, bearer(server.token(server.narrow)), topic=topic)
    assert_problem(response, 403, "forbidden")
    assert (server.db_count("messages"), server.db_count("deliveries")) == before


def test_narrow_app_can_publish_inside_its_scope(server: Server) -> None:
    before = server.db_count("messages")
    response = publish(server, bearer(server.token(server.narrow)), topic=unique_topic("orders"))
    assert response.status_code == 202, response.text
    assert server.db_count("messages") == before + 1


@pytest.mark.parametrize(
    "topics", [["billing.>"], [">"], ["*.x"], ["orders.>", "billing.x"], ["*"]]
)
def test_narrow_app_cannot_mint_subscriber_token_outside_its_scope(
    server: Server, topics: list[str]
) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/subscriber-tokens",
            json={"recipient": "user-42", "topics": topics},
            headers=bearer(server.token(server.narrow)),
        )
    body = assert_problem(response, 403, "forbidden")
    assert "token" not in body


def test_narrow_app_can_mint_subscriber_token_inside_its_scope(server: Server) -> None:
    token = subscriber_token(server, server.narrow, ["orders.eu.*"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["topics"] == ["orders.eu.*"]
    assert claims["aud"] == server.url + "/v1/stream"


# == TokenService, directly ==================================================================
ISSUER = "https://herald.test"
LEEWAY = 30  # herald.limits.JWT_LEEWAY (DESIGN §4 allows at most 60 s)
_DROP = object()  # an override that removes the claim


def make_key(created: int = 0) -> LoadedSigningKey:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return LoadedSigningKey(
        jwk_thumbprint(raw),
        "token",
        private,
        raw,
        datetime.fromtimestamp(1_700_000_000 + created, UTC),
    )


@dataclass
class Clock:
    """The injected clock; starts at the real time (PyJWT reads the wall clock itself)."""

    now: float

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> LoadedSigningKey:
    return make_key()


@pytest.fixture
def clock() -> Clock:
    return Clock(float(int(time.time())))


@pytest.fixture
def service(key: LoadedSigningKey, clock: Clock) -> TokenService:
    return TokenService(issuer=ISSUER, keys=[key], clock=clock, new_jti=lambda: uuid.uuid4().hex)


SCOPES = ScopeSet.parse("publish:orders.> subscribe:orders.> messages:read")


def _claims(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **overrides}
    return {k: v for k, v in merged.items() if v is not _DROP}


def access_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": ISSUER,
        "sub": "app_1",
        "client_id": "app_1",
        "tenant": "tnt_1",
        "scope": str(SCOPES),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "jti-1",
    }
    return _claims(base, overrides)


def subscriber_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": ISSUER + "/v1/stream",
        "sub": "user-42",
        "client_id": "app_1",
        "tenant": "tnt_1",
        "topics": ["orders.>"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "jti-2",
    }
    return _claims(base, overrides)


def sign(
    key: LoadedSigningKey, claims: dict[str, Any], typ: str | None = "at+jwt", **header: Any
) -> str:
    full = {"alg": "EdDSA", "kid": key.kid, **header}
    if typ is not None:
        full["typ"] = typ
    return ed25519_token(key.private_key, full, claims)


def test_service_round_trip(service: TokenService, clock: Clock) -> None:
    token, expires_in = service.issue_access(
        tenant_id="tnt_1", client_id="app_1", scopes=SCOPES, ttl=600
    )
    claims = service.verify_access(token)
    assert expires_in == 600
    assert claims.tenant_id == "tnt_1"
    assert claims.client_id == "app_1"
    assert str(claims.scopes) == str(SCOPES)
    assert claims.expires_at == int(clock.now) + 600


def test_service_accepts_hand_signed_token(service: TokenService, key: LoadedSigningKey) -> None:
    # The control for every crafted token below: the crafting itself is sound.
    assert service.verify_access(sign(key, access_claims())).client_id == "app_1"
    sub = service.verify_subscriber(sign(key, subscriber_claims(), typ="herald-sub+jwt"))
    assert sub.recipient == "user-42"
    assert sub.patterns == (TopicPattern.parse("orders.>"),)


def test_ttl_is_capped(service: TokenService) -> None:
    token, expires_in = service.issue_access(
        tenant_id="tnt_1", client_id="app_1", scopes=SCOPES, ttl=10**9
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert expires_in <= 3600
    assert claims["exp"] - claims["iat"] == expires_in


def test_expired_token_is_refused(service: TokenService, key: LoadedSigningKey) -> None:
    now = int(time.time())
    long_ago = access_claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    just_past_leeway = access_claims(iat=now - 700, nbf=now - 700, exp=now - LEEWAY - 10)
    inside_leeway = access_claims(iat=now - 700, nbf=now - 700, exp=now - LEEWAY + 10)
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, long_ago))
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, just_past_leeway))
    assert service.verify_access(sign(key, inside_leeway)).client_id == "app_1"


def test_expired_subscriber_token_is_refused(service: TokenService, key: LoadedSigningKey) -> None:
    now = int(time.time())
    claims = subscriber_claims(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    with pytest.raises(InvalidToken):
        service.verify_subscriber(sign(key, claims, typ="herald-sub+jwt"))


def test_expiry_follows_the_injected_clock(service: TokenService, clock: Clock) -> None:
    # TokenService takes a clock; a token it issued must be expired once that clock has
    # passed exp + leeway, whatever the wall clock says.
    token, _ = service.issue_access(tenant_id="tnt_1", client_id="app_1", scopes=SCOPES, ttl=600)
    clock.now += 600 + LEEWAY + 60
    with pytest.raises(InvalidToken):
        service.verify_access(token)


def test_not_yet_valid_by_the_injected_clock_is_refused(
    service: TokenService, clock: Clock
) -> None:
    token, _ = service.issue_access(tenant_id="tnt_1", client_id="app_1", scopes=SCOPES, ttl=600)
    clock.now -= 3600  # the token was issued an hour "in the future"
    with pytest.raises(InvalidToken):
        service.verify_access(token)


def test_future_nbf_is_refused(service: TokenService, key: LoadedSigningKey) -> None:
    now = int(time.time())
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(nbf=now + 300)))
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(nbf=now + LEEWAY + 20)))
    # Skew inside the leeway is tolerated.
    assert service.verify_access(sign(key, access_claims(nbf=now + LEEWAY - 20))).jti == "jti-1"


def test_future_iat_is_refused_even_with_past_nbf(
    service: TokenService, key: LoadedSigningKey
) -> None:
    now = int(time.time())
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(iat=now + 300, nbf=now - 10)))


@pytest.mark.parametrize(
    "aud",
    [
        "https://evil.test",
        ISSUER + "/",
        ISSUER + "/v1/stream",
        "https://herald.test.evil.test",
        [ISSUER + "/v1/stream"],
        ["https://evil.test"],
        "",
    ],
)
def test_wrong_audience_is_refused(service: TokenService, key: LoadedSigningKey, aud: Any) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(aud=aud)))


@pytest.mark.parametrize(
    "iss", ["https://evil.test", ISSUER + "/", "http://herald.test", "", None, 1]
)
def test_wrong_issuer_is_refused(service: TokenService, key: LoadedSigningKey, iss: Any) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(iss=iss)))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "herald-sub+jwt", "at+jwt ", "", None])
def test_wrong_typ_is_refused(
    service: TokenService, key: LoadedSigningKey, typ: str | None
) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(), typ=typ))


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", None])
def test_wrong_typ_is_refused_for_subscriber(
    service: TokenService, key: LoadedSigningKey, typ: str | None
) -> None:
    with pytest.raises(InvalidToken):
        service.verify_subscriber(sign(key, subscriber_claims(), typ=typ))


def test_subscriber_token_is_not_an_access_token(service: TokenService) -> None:
    token, _ = service.issue_subscriber(
        tenant_id="tnt_1",
        client_id="app_1",
        recipient="user-42",
        patterns=[TopicPattern.parse("orders.>")],
        ttl=3600,
    )
    with pytest.raises(InvalidToken):
        service.verify_access(token)


def test_access_token_is_not_a_subscriber_token(service: TokenService) -> None:
    token, _ = service.issue_access(tenant_id="tnt_1", client_id="app_1", scopes=SCOPES, ttl=600)
    with pytest.raises(InvalidToken):
        service.verify_subscriber(token)


def test_kinds_cannot_be_mixed_by_typ_or_audience(
    service: TokenService, key: LoadedSigningKey
) -> None:
    # Access typ with the stream audience, and subscriber typ with the API audience.
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(aud=ISSUER + "/v1/stream")))
    with pytest.raises(InvalidToken):
        service.verify_subscriber(
            sign(key, subscriber_claims(aud=ISSUER, scope=str(SCOPES)), typ="herald-sub+jwt")
        )
    with pytest.raises(InvalidToken):
        service.verify_subscriber(sign(key, subscriber_claims(), typ="at+jwt"))


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "nbf", "iss", "aud", "sub"])
def test_missing_registered_claim_is_refused(
    service: TokenService, key: LoadedSigningKey, claim: str
) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(**{claim: _DROP})))


@pytest.mark.parametrize("claim", ["tenant", "client_id", "scope"])
def test_missing_herald_claim_is_refused(
    service: TokenService, key: LoadedSigningKey, claim: str
) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(**{claim: _DROP})))


@pytest.mark.parametrize(
    "scope",
    [
        ["publish:>"],
        {"publish": ">"},
        42,
        None,
        True,
        "root:all",
        "publish:orders..x",
        "publish:" + "a." * 200 + "b",
    ],
)
def test_scope_claim_of_wrong_type_or_syntax_is_refused(
    service: TokenService, key: LoadedSigningKey, scope: Any
) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(scope=scope)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"tenant": 1},
        {"tenant": ["tnt_1"]},
        {"client_id": None},
        {"exp": None},
        {"iat": "now"},
        {"nbf": []},
    ],
)
def test_claims_of_wrong_type_are_refused(
    service: TokenService, key: LoadedSigningKey, overrides: dict[str, Any]
) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(sign(key, access_claims(**overrides)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"topics": "orders.>"},
        {"topics": [1]},
        {"topics": ["orders..x"]},
        {"topics": _DROP},
        {"sub": 42},
        {"tenant": _DROP},
    ],
)
def test_bad_subscriber_claims_are_refused(
    service: TokenService, key: LoadedSigningKey, overrides: dict[str, Any]
) -> None:
    with pytest.raises(InvalidToken):
        service.verify_subscriber(sign(key, subscriber_claims(**overrides), typ="herald-sub+jwt"))


def test_token_over_8_kib_is_refused(service: TokenService, key: LoadedSigningKey) -> None:
    def padded(size: int) -> str:
        return sign(key, access_claims(pad="x" * size))

    small = padded(5000)
    assert 6000 < len(small) <= 8192
    assert service.verify_access(small).client_id == "app_1"

    big = padded(7000)
    assert len(big) > 8192
    with pytest.raises(InvalidToken):
        service.verify_access(big)
    with pytest.raises(InvalidToken):
        service.verify_access("a" * 100_000)


@pytest.mark.parametrize(
    "token",
    ["", "a", "a.b", "a.b.c", "a.b.c.d", "...", "eyJ9.eyJ9.", "\u00e9.\u00e9.\u00e9"],
)
def test_malformed_tokens_are_invalid_token(service: TokenService, token: str) -> None:
    with pytest.raises(InvalidToken):
        service.verify_access(token)


def test_non_object_header_and_payload_are_refused(
    service: TokenService, key: LoadedSigningKey
) -> None:
    header = b64url_json({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid})
    for payload in (b64url_json([1, 2]), b64url_json("claims"), b64url(b"not json")):
        signing_input = header + "." + payload
        token = signing_input + "." + b64url(key.private_key.sign(signing_input.encode()))
        with pytest.raises(InvalidToken):
            service.verify_access(token)
    for bad_header in (b64url_json(["EdDSA"]), b64url(b"{"), b64url_json("EdDSA")):
        signing_input = bad_header + "." + b64url_json(access_claims())
        token = signing_input + "." + b64url(key.private_key.sign(signing_input.encode()))
        with pytest.raises(InvalidToken):
            service.verify_access(token)


def test_unknown_critical_header_is_refused(service: TokenService, key: LoadedSigningKey) -> None:
    # RFC 7515 §4.1.11: a recipient that does not understand a "crit" extension must reject.
    token = sign(
        key,
        access_claims(),
        crit=["urn:example:must-understand"],
        **{"urn:example:must-understand": True},
    )
    with pytest.raises(InvalidToken):
        service.verify_access(token)


@pytest.mark.parametrize("alg", ["none", "HS256", "ES256", "RS256", "PS256", "EdDSA "])
def test_algorithms_outside_the_allow_list_are_refused(
    service: TokenService, key: LoadedSigningKey, alg: str
) -> None:
    claims = access_claims()
    header = {"alg": alg, "typ": "at+jwt", "kid": key.kid}
    if alg == "HS256":
        for secret in (key.public_raw, key.kid.encode(), b""):
            with pytest.raises(InvalidToken):
                service.verify_access(hs256_token(secret, header, claims))
        return
    # An Ed25519 signature relabelled with another alg must not verify either.
    with pytest.raises(InvalidToken):
        service.verify_access(ed25519_token(key.private_key, header, claims))
    with pytest.raises(InvalidToken):
        service.verify_access(b64url_json(header) + "." + b64url_json(claims) + ".")


def test_token_of_another_key_is_refused(service: TokenService) -> None:
    stranger = make_key()
    with pytest.raises(InvalidToken):
        service.verify_access(sign(stranger, access_claims()))
    # ... even when it claims one of our kids.
    with pytest.raises(InvalidToken):
        service.verify_access(sign(stranger, access_claims(), kid=service.jwks()["keys"][0]["kid"]))


def test_embedded_jwk_is_ignored_by_the_service(
    service: TokenService, key: LoadedSigningKey
) -> None:
    attacker = Ed25519PrivateKey.generate()
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid, "jwk": public_jwk(attacker)}
    with pytest.raises(InvalidToken):
        service.verify_access(ed25519_token(attacker, header, access_claims()))


def test_key_rotation_signs_with_newest_and_verifies_both(clock: Clock) -> None:
    old, new = make_key(created=0), make_key(created=100)
    before = TokenService(issuer=ISSUER, keys=[old], clock=clock, new_jti=lambda: "a")
    old_token, _ = before.issue_access(tenant_id="t", client_id="c", scopes=SCOPES, ttl=600)

    after = TokenService(issuer=ISSUER, keys=[old, new], clock=clock, new_jti=lambda: "b")
    new_token, _ = after.issue_access(tenant_id="t", client_id="c", scopes=SCOPES, ttl=600)

    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    assert after.verify_access(old_token).client_id == "c"
    assert after.verify_access(new_token).client_id == "c"
    assert {k["kid"] for k in after.jwks()["keys"]} == {old.kid, new.kid}
    # Once the old key is gone from the service, its tokens are refused.
    retired = TokenService(issuer=ISSUER, keys=[new], clock=clock, new_jti=lambda: "c")
    with pytest.raises(InvalidToken):
        retired.verify_access(old_token)


def test_jwks_has_no_private_members(service: TokenService) -> None:
    for jwk in service.jwks()["keys"]:
        assert "d" not in jwk
        assert jwk["kty"] == "OKP"
        assert jwk["crv"] == "Ed25519"


def test_service_requires_a_key(clock: Clock) -> None:
    with pytest.raises(ValueError):
        TokenService(issuer=ISSUER, keys=[], clock=clock, new_jti=lambda: "x")
