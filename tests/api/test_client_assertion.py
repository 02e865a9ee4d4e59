"""``private_key_jwt`` client authentication (RFC 7523 §2.2) at ``POST /oauth/token`` and
``POST /oauth/revoke``, through real HTTPS against real ``herald serve`` processes.

Assertions are made by the SDK, by hand with PyJWT, and with joserfc (an independent
implementation, using RFC 9864's ``Ed25519`` algorithm name). Every refusal must be the one
opaque 401 ``invalid_client`` problem, issue no token, and be audited without the assertion.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
import redis
import tests.api.test_replay_cluster as replay
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws as jrfc_jws
from joserfc.jwk import OKPKey
from tests.api.conftest import run_cli
from tests.api.test_replay_cluster import Cluster, copy_to

from herald.client import AsyncPublisher, Publisher

if TYPE_CHECKING:  # the fixtures' types, for readers and type checkers only
    from tests.api.conftest import App, Node, NodeFactory, Server

PROBLEM = "urn:herald:problem:"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM = {"grant_type": "client_credentials"}
SCOPES = ("publish:>", "subscribe:>", "messages:read")
LEEWAY = 30

# The two-node cluster (one PostgreSQL, one Redis, one public URL) of the replay tests.
cluster = replay.cluster


# -- helpers ----------------------------------------------------------------------------------
def private_key(app: App) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(app.signing_key_file).read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def assertion(
    node: Node,
    app: App,
    *,
    key: Ed25519PrivateKey | bytes | None = None,
    kid: str | None = None,
    alg: str = "EdDSA",
    headers: dict[str, Any] | None = None,
    **changes: Any,
) -> str:
    """A PyJWT-made assertion of ``app`` (its own key and kid unless told); ``None`` drops."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": app.client_id,
        "sub": app.client_id,
        "aud": node.url + "/oauth/token",
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(24),
    }
    claims.update(changes)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(
        claims,
        private_key(app) if key is None else key,
        algorithm=alg,
        headers={"kid": app.signing_keyid if kid is None else kid, **(headers or {})},
    )


def post(
    node: Node,
    path: str,
    data: dict[str, str],
    *,
    signer: App | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A form POST, RFC 9421-signed with ``signer``'s key like the SDK does."""
    with node.client(sign=False) as client:
        request = client.build_request("POST", path, data=data, headers=headers)
        if signer is not None:
            signer.signer.sign(request)
        return client.send(request)


def basic_header(app: App) -> str:
    pair = f"{app.client_id}:{app.client_secret}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def with_assertion(text: str, **fields: str) -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": text, **fields}


def token_response(node: Node, app: App, text: str, **fields: str) -> httpx.Response:
    return post(node, "/oauth/token", {**FORM, **with_assertion(text, **fields)}, signer=app)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug, body
    assert body["status"] == status
    assert "access_token" not in body
    return body


def mark(node: Node) -> int:
    entries = node.audit_actions()
    return entries[-1][0] + 1 if entries else 0


def assert_refused(node: Node, response: httpx.Response, since: int, text: str) -> None:
    """401 invalid_client, no token issued, the refusal audited without the assertion."""
    body = assert_problem(response, 401, "invalid-client")
    assert body["error"] == "invalid_client"
    assert body["detail"] == "client authentication failed"
    assert "no-store" in response.headers.get("cache-control", "")
    entries = node.audit_actions(since)
    assert [a for _, a, _ in entries if a.startswith("token.")] == ["token.refused"], entries
    details = next(d for _, a, d in entries if a == "token.refused")
    assert details["method"] == "private_key_jwt"
    assert text not in json.dumps(entries)
    signature = text.rsplit(".", 1)[-1]
    assert len(signature) < 16 or signature not in json.dumps(entries)


def assert_issued(node: Node, response: httpx.Response, since: int, app: App) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == claims["sub"] == app.client_id
    issued = [d for _, a, d in node.audit_actions(since) if a == "token.issued"]
    assert len(issued) == 1
    assert issued[0]["method"] == "private_key_jwt"
    return str(body["access_token"])


def history(node: Node, token: str) -> httpx.Response:
    with node.client() as client:
        return client.get(
            "/v1/topics/pkjwt.x/messages", headers={"Authorization": f"Bearer {token}"}
        )


@pytest.fixture
def app(server: Server) -> App:
    """A fresh app of the demo tenant (disabling or re-keying it disturbs no other test)."""
    return server.add_app(f"pkjwt-{secrets.token_hex(4)}", *SCOPES)


# -- accepted ---------------------------------------------------------------------------------
async def test_sdk_authenticates_with_its_signing_key(server: Server, app: App) -> None:
    since = mark(server)
    pub = AsyncPublisher(server.url, app.client_id, None, ca=server.ca, signer=app.signer)
    async with pub:
        result = await pub.publish("pkjwt.sdk", title="signed in with a key")
        assert result.id
        token = await pub.token()
        await pub.revoke_token()  # the revocation endpoint, with an assertion too
    issued = [d for _, a, d in server.audit_actions(since) if a == "token.issued"]
    assert [d["method"] for d in issued] == ["private_key_jwt"]
    assert_problem(history(server, token), 401, "invalid-token")


def test_sync_sdk_prefers_the_key_when_told(server: Server, app: App) -> None:
    since = mark(server)
    with Publisher(
        server.url,
        app.client_id,
        app.client_secret,
        ca=server.ca,
        signer=app.signer,
        client_auth="private_key_jwt",
    ) as pub:
        assert pub.token()
    issued = [d for _, a, d in server.audit_actions(since) if a == "token.issued"]
    assert [d["method"] for d in issued] == ["private_key_jwt"]


def test_hand_built_pyjwt_assertion(server: Server, app: App) -> None:
    since = mark(server)
    token = assert_issued(server, token_response(server, app, assertion(server, app)), since, app)
    assert history(server, token).status_code == 200


@pytest.mark.parametrize(
    "aud",
    ["issuer", "token-endpoint", "array", "array-with-others"],
)
def test_accepted_audiences(server: Server, app: App, aud: str) -> None:
    value: Any = {
        "issuer": server.url,
        "token-endpoint": server.url + "/oauth/token",
        "array": [server.url],
        "array-with-others": ["https://elsewhere.example", server.url + "/oauth/token"],
    }[aud]
    since = mark(server)
    response = token_response(server, app, assertion(server, app, aud=value))
    assert_issued(server, response, since, app)


def test_client_id_field_matching_the_assertion_is_accepted(server: Server, app: App) -> None:
    since = mark(server)
    response = token_response(server, app, assertion(server, app), client_id=app.client_id)
    assert_issued(server, response, since, app)


def test_joserfc_assertion_with_rfc_9864_algorithm_name(server: Server, app: App) -> None:
    key = OKPKey.import_key(Path(app.signing_key_file).read_bytes())
    now = int(time.time())
    claims = {
        "iss": app.client_id,
        "sub": app.client_id,
        "aud": server.url,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_hex(16),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc's notes on its algorithm registry
        text = jrfc_jws.serialize_compact(
            {"alg": "Ed25519", "kid": app.signing_keyid, "typ": "JWT"},
            json.dumps(claims).encode(),
            key,
            algorithms=["Ed25519"],
        )
    since = mark(server)
    assert_issued(server, token_response(server, app, text), since, app)


def test_embedded_key_headers_are_ignored(server: Server, app: App) -> None:
    """jku/jwk naming someone else's key change nothing: our key verifies, theirs does not."""
    attacker = Ed25519PrivateKey.generate()
    x = attacker.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    injected = {
        "jku": "https://127.0.0.1:1/jwks.json",
        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": jwt.utils.base64url_encode(x).decode()},
    }
    since = mark(server)
    forged = assertion(server, app, key=attacker, headers=injected)
    assert_refused(server, token_response(server, app, forged), since, forged)
    since = mark(server)
    ours = assertion(server, app, headers=injected)
    assert_issued(server, token_response(server, app, ours), since, app)


# -- refused: claims ----------------------------------------------------------------------------
REFUSED_CLAIMS: dict[str, dict[str, Any]] = {
    "expired": {"iat": -120, "exp": -LEEWAY - 1},
    "exp-too-far-ahead": {"exp": 300 + LEEWAY + 60},
    "exp-missing": {"exp": None},
    "iat-in-the-future": {"iat": LEEWAY + 60, "exp": LEEWAY + 120},
    "nbf-in-the-future": {"nbf": LEEWAY + 60},
    "jti-missing": {"jti": None},
    "jti-too-long": {"jti": "j" * 256},
    "aud-wrong": {"aud": "https://elsewhere.example/oauth/token"},
    "aud-revoke-endpoint-at-token-endpoint": {"aud": "/oauth/revoke"},
    "iss-not-sub": {"sub": "app_someone_else"},
}


@pytest.mark.parametrize("case", sorted(REFUSED_CLAIMS))
def test_refused_claims(server: Server, app: App, case: str) -> None:
    now = int(time.time())
    changes = dict(REFUSED_CLAIMS[case])
    for name in ("iat", "exp", "nbf"):
        if isinstance(changes.get(name), int):
            changes[name] = now + changes[name]
    if changes.get("aud") == "/oauth/revoke":
        changes["aud"] = server.url + "/oauth/revoke"
    text = assertion(server, app, **changes)
    since = mark(server)
    assert_refused(server, token_response(server, app, text), since, text)


def test_client_id_field_must_match_the_assertion(server: Server, app: App) -> None:
    text = assertion(server, app)
    since = mark(server)
    response = token_response(server, app, text, client_id=server.narrow.client_id)
    assert_refused(server, response, since, text)
    # Not spent by the refusal: the jti is claimed only once everything verified.
    since = mark(server)
    assert_issued(server, token_response(server, app, text), since, app)


def test_replayed_assertion_is_refused(server: Server, app: App) -> None:
    text = assertion(server, app)
    since = mark(server)
    assert_issued(server, token_response(server, app, text), since, app)
    since = mark(server)
    # A new request (new RFC 9421 signature and nonce) carrying the same assertion.
    response = token_response(server, app, text)
    assert_refused(server, response, since, text)
    assert [d["reason"] for _, a, d in server.audit_actions(since) if a == "token.refused"] == [
        "replayed"
    ]
    # ... and at the revocation endpoint, which shares the jti namespace.
    other = server.token(app)
    since = mark(server)
    revoke = post(server, "/oauth/revoke", {"token": other, **with_assertion(text)}, signer=app)
    assert_refused(server, revoke, since, text)


# -- refused: keys and algorithms -------------------------------------------------------------
def test_unknown_kid_and_unknown_client_answer_like_a_bad_signature(
    server: Server, app: App
) -> None:
    bad_signature = assertion(server, app, key=Ed25519PrivateKey.generate())
    unknown_kid = assertion(server, app, kid="hk_" + "0" * 16)
    ghost = f"app_{secrets.token_hex(10)}"
    unknown_client = assertion(server, app, iss=ghost, sub=ghost)
    responses = []
    for text in (bad_signature, unknown_kid, unknown_client):
        since = mark(server)
        response = token_response(server, app, text)
        assert_refused(server, response, since, text)
        responses.append(response)
    assert len({r.content for r in responses}) == 1
    for name in ("content-type", "www-authenticate", "cache-control"):
        assert len({r.headers.get(name) for r in responses}) == 1


def test_key_of_another_app_is_refused(server: Server, app: App) -> None:
    for owner in (server.narrow, server.other):  # same tenant, other tenant
        text = assertion(server, app, key=private_key(owner), kid=owner.signing_keyid)
        since = mark(server)
        assert_refused(server, token_response(server, app, text), since, text)


def test_hmac_key_can_never_sign_an_assertion(server: Server, app: App) -> None:
    created = server.cli("app", "key", "add", app.client_id, "--hmac")
    secret = base64.b64decode(created["secret"])
    hs256 = assertion(server, app, key=secret, alg="HS256", kid=created["keyid"])
    eddsa = assertion(server, app, kid=created["keyid"])  # our Ed25519 key, the HMAC kid
    for text in (hs256, eddsa):
        since = mark(server)
        assert_refused(server, token_response(server, app, text), since, text)


def test_revoked_key_is_refused(server: Server, app: App, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "key.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    keyid = server.cli("app", "key", "add", app.client_id, "--ed25519-public-key", str(pem))[
        "keyid"
    ]
    since = mark(server)
    accepted = token_response(server, app, assertion(server, app, key=key, kid=keyid))
    assert_issued(server, accepted, since, app)
    server.cli("app", "key", "revoke", app.client_id, keyid)
    text = assertion(server, app, key=key, kid=keyid)
    since = mark(server)
    assert_refused(server, token_response(server, app, text), since, text)


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
    encode = jwt.utils.base64url_encode
    head = encode(json.dumps(header).encode()).decode()
    body = encode(json.dumps(claims).encode()).decode()
    return f"{head}.{body}.{encode(signature).decode()}"


def test_alg_none_and_public_key_as_hmac_secret_are_refused(server: Server, app: App) -> None:
    claims = jwt.decode(assertion(server, app), options={"verify_signature": False})
    none = _unsigned({"alg": "none", "kid": app.signing_keyid}, claims, b"")
    public_raw = (
        private_key(app)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    # The classic confusion: HS256 "signed" with the verifier's public key as the secret.
    head = {"alg": "HS256", "kid": app.signing_keyid, "typ": "JWT"}
    unsigned = _unsigned(head, claims, b"").rsplit(".", 1)[0]
    mac = hmac.new(public_raw, unsigned.encode(), hashlib.sha256).digest()
    confused = unsigned + "." + jwt.utils.base64url_encode(mac).decode()
    for text in (none, confused):
        since = mark(server)
        assert_refused(server, token_response(server, app, text), since, text)


def test_garbage_and_oversized_assertions_are_refused(server: Server, app: App) -> None:
    oversized = assertion(server, app, pad="p" * 3200)
    assert 4096 < len(oversized) < 5000
    for text in ("not-a-jwt", "a.b.c", "e30.e30.", oversized):
        since = mark(server)
        assert_refused(server, token_response(server, app, text), since, text)
    # A body past the token endpoint's cap is not even read.
    too_big = assertion(server, app, pad="p" * 6000)
    assert_problem(token_response(server, app, too_big), 413, "payload-too-large")


def test_non_string_alg_is_refused_not_a_server_error(server: Server, app: App) -> None:
    # Found by fuzzing/targets/client_assertions.py: an array or object ``alg`` was tested
    # against a set and raised TypeError (a 500) before any signature check.
    claims = jwt.decode(assertion(server, app), options={"verify_signature": False})
    for alg in (["EdDSA"], {"EdDSA": 1}):
        text = _unsigned({"alg": alg, "kid": app.signing_keyid}, claims, bytes(64))
        since = mark(server)
        assert_refused(server, token_response(server, app, text), since, text)


# -- refused: the app, the request --------------------------------------------------------------
def test_disabled_app_is_refused(server: Server, app: App) -> None:
    server.run("app", "disable", app.client_id)
    text = assertion(server, app)
    since = mark(server)
    assert_refused(server, token_response(server, app, text), since, text)
    reasons = [d["reason"] for _, a, d in server.audit_actions(since) if a == "token.refused"]
    assert reasons == ["disabled"]


def test_basic_and_assertion_together_are_invalid_request(server: Server, app: App) -> None:
    text = assertion(server, app)
    since = mark(server)
    with server.client(sign=False) as client:
        request = client.build_request(
            "POST",
            "/oauth/token",
            data={**FORM, **with_assertion(text)},
            headers={"Authorization": basic_header(app)},
        )
        response = client.send(app.signer.sign(request))
    body = assert_problem(response, 400, "invalid-request")
    assert body["error"] == "invalid_request"
    assert not [a for _, a, _ in server.audit_actions(since) if a == "token.issued"]


@pytest.mark.parametrize(
    "fields",
    [
        {"client_assertion": "x.y.z"},
        {"client_assertion_type": ASSERTION_TYPE},
    ],
    ids=["no-type", "no-assertion"],
)
def test_incomplete_assertion_fields_are_invalid_request(
    server: Server, app: App, fields: dict[str, str]
) -> None:
    response = post(server, "/oauth/token", {**FORM, **fields}, signer=app)
    assert assert_problem(response, 400, "invalid-request")["error"] == "invalid_request"


def test_repeated_assertion_is_invalid_request(server: Server, app: App) -> None:
    text = assertion(server, app)
    content = httpx.QueryParams(
        [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", text),
            ("client_assertion", text),
        ]
    )
    with server.client(sign=False) as client:
        request = client.build_request(
            "POST",
            "/oauth/token",
            content=str(content).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = client.send(app.signer.sign(request))
    assert assert_problem(response, 400, "invalid-request")["error"] == "invalid_request"


def test_unsupported_assertion_type_is_invalid_client(server: Server, app: App) -> None:
    data = {
        **FORM,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
        "client_assertion": assertion(server, app),
    }
    response = post(server, "/oauth/token", data, signer=app)
    assert assert_problem(response, 401, "invalid-client")["error"] == "invalid_client"


# -- the revocation endpoint ------------------------------------------------------------------
@pytest.mark.parametrize("aud", ["issuer", "revocation-endpoint", "token-endpoint"])
def test_revocation_with_an_assertion(server: Server, app: App, aud: str) -> None:
    value = {
        "issuer": server.url,
        "revocation-endpoint": server.url + "/oauth/revoke",
        "token-endpoint": server.url + "/oauth/token",
    }[aud]
    token = server.token(app)
    assert history(server, token).status_code == 200
    text = assertion(server, app, aud=value)
    response = post(server, "/oauth/revoke", {"token": token, **with_assertion(text)}, signer=app)
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert_problem(history(server, token), 401, "invalid-token")


def test_revocation_with_a_bad_assertion_is_refused(server: Server, app: App) -> None:
    token = server.token(app)
    text = assertion(server, app, key=Ed25519PrivateKey.generate())
    since = mark(server)
    response = post(server, "/oauth/revoke", {"token": token, **with_assertion(text)}, signer=app)
    body = assert_problem(response, 401, "invalid-client")
    assert body["error"] == "invalid_client"
    assert history(server, token).status_code == 200  # not revoked
    assert [a for _, a, _ in server.audit_actions(since) if a.startswith("token.")] == [
        "token.refused"
    ]


# -- metadata, OpenAPI, CLI ---------------------------------------------------------------------
def test_metadata_and_openapi_advertise_private_key_jwt(server: Server) -> None:
    with server.client() as client:
        meta = client.get("/.well-known/oauth-authorization-server").json()
        spec = client.get("/openapi.json").json()
    for endpoint in ("token", "revocation"):
        methods = meta[f"{endpoint}_endpoint_auth_methods_supported"]
        assert methods == ["client_secret_basic", "private_key_jwt"]
    assert set(meta["token_endpoint_auth_signing_alg_values_supported"]) == {"EdDSA", "Ed25519"}
    for path in ("/oauth/token", "/oauth/revoke"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]
        properties = body["application/x-www-form-urlencoded"]["schema"]["properties"]
        assert {"client_assertion", "client_assertion_type", "client_id"} <= set(properties)


def test_cli_token_with_private_key_jwt(server: Server) -> None:
    since = mark(server)
    env = {**server.env, "HERALD_CLIENT_AUTH": "private_key_jwt"}
    out = json.loads(run_cli(env, "token", "--json").stdout)
    assert out["access_token"]
    # Another app, by flags, with its key and no secret at all: private_key_jwt by default.
    narrow = server.narrow
    out = json.loads(
        run_cli(
            server.env,
            "token",
            "--client-id",
            narrow.client_id,
            "--signing-keyid",
            narrow.signing_keyid,
            "--signing-key-file",
            narrow.signing_key_file,
            "--json",
        ).stdout
    )
    claims = jwt.decode(out["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == narrow.client_id
    issued = [d for _, a, d in server.audit_actions(since) if a == "token.issued"]
    assert [d["method"] for d in issued] == ["private_key_jwt", "private_key_jwt"]


# -- nodes of their own: lockout, restart, cluster ------------------------------------------------
def test_lockout_counts_assertion_failures(node_factory: NodeFactory) -> None:
    node = node_factory(
        name="pkjwt-lockout",
        HERALD_LOCKOUT_THRESHOLD="3",
        HERALD_LOCKOUT_BASE="1",
        HERALD_LOCKOUT_CAP="4",
    )
    app = node.demo
    for _ in range(3):
        text = assertion(node, app, key=Ed25519PrivateKey.generate())
        assert_problem(token_response(node, app, text), 401, "invalid-client")
    # Locked: a valid assertion and the right secret are refused alike, nothing checked.
    since = mark(node)
    locked = token_response(node, app, assertion(node, app))
    assert_problem(locked, 429, "rate-limited")
    wait = int(locked.headers["retry-after"])
    assert 1 <= wait <= 4
    assert_problem(node.token_response(app), 429, "rate-limited")
    # Garbage that names the client in client_id counts against it too (and is never parsed).
    assert_problem(token_response(node, app, "x", client_id=app.client_id), 429, "rate-limited")
    assert not [a for _, a, _ in node.audit_actions(since) if a.startswith("token.")]
    time.sleep(wait)
    since = mark(node)
    assert_issued(node, token_response(node, app, assertion(node, app)), since, app)


def test_assertion_made_before_a_restart_is_refused(node_factory: NodeFactory) -> None:
    """Embedded mode forgets used jti values on restart: older assertions are refused."""
    node = node_factory(name="pkjwt-restart")
    app = node.demo
    text = assertion(node, app)
    node.restart()
    since = mark(node)
    assert_refused(node, token_response(node, app, text), since, text)
    since = mark(node)
    assert_issued(node, token_response(node, app, assertion(node, app)), since, app)


@pytest.fixture
def jti_cleanup(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster; afterwards the demo tenant's used-jti keys are deleted from Redis."""
    try:
        yield cluster
    finally:
        pattern = f"herald:jti:{cluster.app.tenant}:*"
        with redis.Redis.from_url(cluster.redis_url, socket_timeout=5.0) as client:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)


def _cluster_token_request(nodes: Cluster, text: str, target: str) -> httpx.Request:
    with nodes.client() as client:
        request = client.build_request(
            "POST", "/oauth/token", data={**FORM, **with_assertion(text)}
        )
        nodes.app.signer.sign(request)
    return copy_to(request, target)


@pytest.mark.postgres
@pytest.mark.redis
def test_replay_across_nodes_and_unreachable_store(jti_cleanup: Cluster) -> None:
    nodes = jti_cleanup
    app = nodes.app
    text = assertion(nodes.first, app)
    with nodes.client() as client:
        accepted = client.send(_cluster_token_request(nodes, text, nodes.nodes["a"]))
        assert accepted.status_code == 200, accepted.text
        # The same assertion in a new request (new signature and nonce) to the other node.
        replayed = client.send(_cluster_token_request(nodes, text, nodes.nodes["b"]))
        assert_problem(replayed, 401, "invalid-client")
    jti = jwt.decode(text, options={"verify_signature": False})["jti"]
    key = f"herald:jti:{app.tenant}:{app.client_id}:{jti}"
    with redis.Redis.from_url(nodes.redis_url, socket_timeout=5.0) as r:
        assert 0 < r.pttl(key) <= (60 + LEEWAY) * 1000
    # A node whose Redis is unreachable refuses (503) rather than accepting unchecked.
    node_c = nodes.start("c", HERALD_REDIS_URL="redis://127.0.0.1:1/0")
    with nodes.client() as client:
        fresh = assertion(nodes.first, app)
        refused = client.send(_cluster_token_request(nodes, fresh, node_c))
        assert_problem(refused, 503, "unavailable")
        # Nothing was claimed: a healthy node accepts that very assertion.
        ok = client.send(_cluster_token_request(nodes, fresh, nodes.nodes["b"]))
        assert ok.status_code == 200, ok.text
