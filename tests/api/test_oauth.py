"""``POST /oauth/token`` (client credentials, RFC 6749 §4.4), the issued JWT (RFC 9068), the
JWKS (RFC 7517) and the authorization-server metadata (RFC 8414), through real HTTPS.

Every assertion is made on what a client sees on the wire; the token is verified with
PyJWT's own JWKS client, independently of Herald's verifier.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

if TYPE_CHECKING:  # the fixture's types, for readers and type checkers only
    from tests.api.conftest import App, Server

PROBLEM_PREFIX = "urn:herald:problem:"
DEMO_SCOPES = {"publish:>", "subscribe:>", "messages:read"}
FORM = {"grant_type": "client_credentials"}


# -- helpers ---------------------------------------------------------------------------------
def token_request(
    server: Server,
    app: App | None = None,
    *,
    data: dict[str, str] | None = FORM,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """POST /oauth/token with client_secret_basic of ``app`` (demo by default).

    ``data=None`` sends no form (for requests that bring their own ``json``/``content``);
    an ``Authorization`` header in ``headers`` replaces the app's credentials.
    """
    app = app or server.demo
    if auth is None and not (headers and "Authorization" in headers):
        auth = (app.client_id, app.client_secret)
    with server.client() as client:
        return client.post("/oauth/token", data=data, auth=auth, headers=headers, **kwargs)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` and ``urn:herald:problem:<slug>``."""
    assert response.status_code == status, response.text
    media = response.headers["content-type"].split(";")[0].strip()
    assert media == "application/problem+json", response.headers
    body = response.json()
    assert body["type"] == PROBLEM_PREFIX + slug, body
    assert body["status"] == status, body
    assert isinstance(body["title"], str)
    assert body["title"]
    return body


def basic(value: str) -> dict[str, str]:
    return {"Authorization": "Basic " + value}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return header, claims


def jwks(server: Server) -> dict[str, Any]:
    with server.client() as client:
        response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/json"
    return response.json()


# -- success ---------------------------------------------------------------------------------
def test_client_credentials_grant_succeeds(server: Server) -> None:
    response = token_request(server)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    assert "no-store" in response.headers["cache-control"].lower()
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert isinstance(body["scope"], str)
    assert set(body["scope"].split(" ")) == DEMO_SCOPES
    assert body["access_token"].count(".") == 2


def test_token_header_is_eddsa_at_jwt_with_published_kid(server: Server) -> None:
    token = server.token()
    header = jwt.get_unverified_header(token)

    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert isinstance(header["kid"], str)
    assert header["kid"]
    # RFC 8725 §3.1 / §2.7: nothing in the header points at where to fetch a key.
    assert not {"jku", "x5u", "jwk", "x5c"} & set(header)
    kids = [key["kid"] for key in jwks(server)["keys"]]
    assert header["kid"] in kids


def test_jwks_publishes_only_public_ed25519_keys(server: Server) -> None:
    keys = jwks(server)["keys"]

    assert keys
    assert len({key["kid"] for key in keys}) == len(keys)
    for key in keys:
        assert key["kty"] == "OKP"
        assert key["crv"] == "Ed25519"
        assert key.get("use", "sig") == "sig"
        assert key.get("alg", "EdDSA") == "EdDSA"
        raw = base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        assert len(raw) == 32
        # No private member of an OKP key (RFC 8037 §2) may ever be published.
        assert "d" not in key
        assert set(key) <= {"kty", "crv", "x", "kid", "use", "alg", "key_ops"}


def test_token_claims_follow_rfc_9068(server: Server) -> None:
    before = int(time.time())
    token = server.token()
    after = int(time.time())
    _, claims = unverified(token)

    assert claims["iss"] == server.url
    assert claims["aud"] == server.url
    assert claims["sub"] == server.demo.client_id
    assert claims["client_id"] == server.demo.client_id
    assert claims["tenant"] == server.demo.tenant
    assert set(claims["scope"].split(" ")) == DEMO_SCOPES
    for name in ("iat", "nbf", "exp"):
        assert isinstance(claims[name], int), name
    # Same machine, same clock: the token is dated "now" (a generous bound, not a timing test).
    assert before - 5 <= claims["iat"] <= after + 5
    assert claims["nbf"] <= claims["iat"] + 1
    assert claims["exp"] - claims["iat"] == 600
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


def test_every_token_has_a_fresh_jti(server: Server) -> None:
    jtis = {unverified(server.token())[1]["jti"] for _ in range(3)}
    assert len(jtis) == 3


def test_token_verifies_independently_with_pyjwt_jwks_client(server: Server) -> None:
    token = server.token()
    jwks_client = jwt.PyJWKClient(
        server.url + "/.well-known/jwks.json", ssl_context=server.ssl_context()
    )
    signing_key = jwks_client.get_signing_key_from_jwt(token)

    decoded = jwt.decode_complete(
        token,
        signing_key,
        algorithms=["EdDSA"],
        audience=server.url,
        issuer=server.url,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )

    assert decoded["header"]["typ"] == "at+jwt"
    assert decoded["payload"]["client_id"] == server.demo.client_id
    # And a different audience is refused by the independent verifier too.
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, signing_key, algorithms=["EdDSA"], audience=server.url + "/v1/stream")


def test_other_tenant_token_names_its_own_tenant(server: Server) -> None:
    _, claims = unverified(server.token(server.other))

    assert claims["tenant"] == server.other.tenant
    assert claims["tenant"] != server.demo.tenant
    assert claims["sub"] == claims["client_id"] == server.other.client_id


# -- metadata --------------------------------------------------------------------------------
def test_authorization_server_metadata_rfc_8414(server: Server) -> None:
    with server.client() as client:
        response = client.get("/.well-known/oauth-authorization-server")

    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/json"
    meta = response.json()
    # RFC 8414 §3.3: the issuer must be identical to the one the metadata was fetched for.
    assert meta["issuer"] == server.url
    assert meta["token_endpoint"] == server.url + "/oauth/token"
    assert meta["jwks_uri"] == server.url + "/.well-known/jwks.json"
    for name in ("token_endpoint", "jwks_uri"):
        assert meta[name].startswith("https://")
    assert "client_credentials" in meta["grant_types_supported"]
    assert "client_secret_basic" in meta["token_endpoint_auth_methods_supported"]
    assert "response_types_supported" in meta  # REQUIRED by RFC 8414 §2
    assert "password" not in meta["grant_types_supported"]
    assert "implicit" not in meta["grant_types_supported"]
    assert "none" not in meta["token_endpoint_auth_methods_supported"]
    assert isinstance(meta.get("scopes_supported", []), list)


def test_metadata_jwks_uri_serves_the_signing_key(server: Server) -> None:
    with server.client() as client:
        meta = client.get("/.well-known/oauth-authorization-server").json()
        keys = client.get(meta["jwks_uri"]).json()["keys"]
    kid = jwt.get_unverified_header(server.token())["kid"]
    assert kid in {key["kid"] for key in keys}


# -- scopes ----------------------------------------------------------------------------------
def test_scope_narrowing_grants_exactly_the_requested_scope(server: Server) -> None:
    response = token_request(server, data={**FORM, "scope": "publish:orders.x"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "publish:orders.x"
    assert unverified(body["access_token"])[1]["scope"] == "publish:orders.x"


def test_narrowed_scope_is_enforced(server: Server) -> None:
    token = token_request(server, data={**FORM, "scope": "publish:orders.x"}).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    with server.client() as client:
        before = server.db_count("messages")
        refused = client.post(
            "/v1/messages", json={"topic": "orders.y", "title": "t"}, headers=auth
        )
        assert_problem(refused, 403, "forbidden")
        assert server.db_count("messages") == before

        accepted = client.post(
            "/v1/messages", json={"topic": "orders.x", "title": "t"}, headers=auth
        )
        assert accepted.status_code == 202, accepted.text
        assert server.db_count("messages") == before + 1


def test_several_requested_scopes_are_granted(server: Server) -> None:
    response = token_request(server, data={**FORM, "scope": "subscribe:orders.* messages:read"})

    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split(" ")) == {"subscribe:orders.*", "messages:read"}


def test_narrow_app_gets_only_its_own_scopes(server: Server) -> None:
    response = token_request(server, server.narrow)

    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split(" ")) == {"publish:orders.>", "subscribe:orders.>"}


@pytest.mark.parametrize(
    ("app_name", "scope"),
    [
        ("demo", "admin"),  # not granted to demo
        ("narrow", "publish:billing.x"),  # outside the granted pattern
        ("narrow", "publish:>"),  # broader than the granted pattern
        ("narrow", "publish:orders.x messages:read"),  # one of two not granted
        ("narrow", "subscribe:orders.> publish:*"),
        ("demo", "launch:missiles"),  # unknown scope
        ("demo", "publish:orders..x"),  # invalid pattern
    ],
)
def test_scope_not_granted_is_invalid_scope(server: Server, app_name: str, scope: str) -> None:
    app = getattr(server, app_name)
    response = token_request(server, app, data={**FORM, "scope": scope})

    body = assert_problem(response, 400, "invalid-scope")
    assert "access_token" not in body
    assert app.client_secret not in response.text


# -- client authentication -------------------------------------------------------------------
def _bad_client_cases(server: Server) -> dict[str, dict[str, Any]]:
    """Each case sends either ``auth`` (httpx Basic) or raw ``headers`` (and maybe ``data``)."""
    demo = server.demo
    return {
        "wrong secret": {"auth": (demo.client_id, "hsec_" + "A" * 43)},
        "unknown client": {"auth": ("app_" + "0" * 20, demo.client_secret)},
        "empty secret": {"auth": (demo.client_id, "")},
        "no authorization": {"headers": {}},
        "bearer instead of basic": {"headers": {"Authorization": "Bearer " + demo.client_secret}},
        "non-base64": {"headers": basic("!!not*base64**")},
        "base64 without colon": {"headers": basic(b64(demo.client_id + demo.client_secret))},
        "empty basic": {"headers": {"Authorization": "Basic"}},
        "secret in the body (client_secret_post)": {
            "data": {**FORM, "client_id": demo.client_id, "client_secret": demo.client_secret},
            "headers": {},
        },
        "huge client id": {"auth": ("x" * 2000, demo.client_secret)},
    }


BAD_CLIENT_CASES = [
    "wrong secret",
    "unknown client",
    "empty secret",
    "no authorization",
    "bearer instead of basic",
    "non-base64",
    "base64 without colon",
    "empty basic",
    "secret in the body (client_secret_post)",
    "huge client id",
]


def _send_bad_client(server: Server, case: str) -> httpx.Response:
    spec = _bad_client_cases(server)[case]
    data = spec.get("data", FORM)
    headers = spec.get("headers")
    with server.client() as client:
        if "headers" in spec:
            return client.post("/oauth/token", data=data, headers=headers)
        return client.post("/oauth/token", data=data, auth=spec["auth"])


@pytest.mark.parametrize("case", BAD_CLIENT_CASES)
def test_bad_client_authentication_is_invalid_client(server: Server, case: str) -> None:
    assert set(_bad_client_cases(server)) == set(BAD_CLIENT_CASES)
    response = _send_bad_client(server, case)

    body = assert_problem(response, 401, "invalid-client")
    assert body["error"] == "invalid_client"
    assert "www-authenticate" in response.headers
    assert "access_token" not in body
    assert server.demo.client_secret not in response.text
    assert "no-store" in response.headers.get("cache-control", "")


def test_unknown_client_and_wrong_secret_answer_identically(server: Server) -> None:
    wrong_secret = _send_bad_client(server, "wrong secret")
    unknown_client = _send_bad_client(server, "unknown client")

    assert wrong_secret.status_code == unknown_client.status_code == 401
    assert wrong_secret.content == unknown_client.content
    for name in ("content-type", "www-authenticate", "cache-control"):
        assert wrong_secret.headers.get(name) == unknown_client.headers.get(name)
    assert server.demo.client_id not in wrong_secret.text


def test_one_app_secret_does_not_authenticate_another(server: Server) -> None:
    response = token_request(server, auth=(server.narrow.client_id, server.demo.client_secret))
    assert_problem(response, 401, "invalid-client")


# -- grant type and body ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "password", "username": "u", "password": "p"},
        {"grant_type": "authorization_code", "code": "x"},
        {"grant_type": "refresh_token", "refresh_token": "x"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "x.y.z"},
        {"grant_type": "CLIENT_CREDENTIALS"},
    ],
)
def test_other_grants_are_unsupported(server: Server, data: dict[str, str]) -> None:
    response = token_request(server, data=data)

    body = assert_problem(response, 400, "unsupported-grant-type")
    assert body["error"] == "unsupported_grant_type"
    assert server.demo.client_secret not in response.text


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"json": {"grant_type": "client_credentials"}},
        {"content": b"grant_type=client_credentials"},  # no Content-Type at all
        {"content": b"grant_type=client_credentials", "headers": {"Content-Type": "text/plain"}},
    ],
    ids=["json", "no-content-type", "text-plain"],
)
def test_non_form_body_is_unsupported_media_type(server: Server, kwargs: dict[str, Any]) -> None:
    response = token_request(server, data=None, **kwargs)
    # docs/api.md: problem type `unsupported-media-type` is status 415.
    assert_problem(response, 415, "unsupported-media-type")
    assert server.demo.client_secret not in response.text


def test_oversize_form_body_is_413(server: Server) -> None:
    data = {**FORM, "scope": "publish:" + "a" * 8000}
    response = token_request(server, data=data)

    assert_problem(response, 413, "payload-too-large")


def test_oversize_chunked_form_body_is_413(server: Server) -> None:
    def chunks() -> Any:
        yield b"grant_type=client_credentials&scope="
        for _ in range(10):
            yield b"x" * 1024

    response = token_request(
        server,
        data=None,
        content=chunks(),
        headers=None,
        # no Content-Length: httpx sends Transfer-Encoding: chunked
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")


def test_malformed_form_is_a_problem(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/oauth/token",
            content="grant_type=client_credentials&scope=\xe9".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            auth=(server.demo.client_id, server.demo.client_secret),
        )
    assert_problem(response, 400, "invalid-request")


def test_get_on_token_endpoint_is_405(server: Server) -> None:
    with server.client() as client:
        response = client.get("/oauth/token")
    assert_problem(response, 405, "method-not-allowed")


# -- every error -----------------------------------------------------------------------------
def test_every_error_is_a_herald_problem_and_never_echoes_secrets(server: Server) -> None:
    wrong = "hsec_" + "Z" * 43
    demo = server.demo
    responses = [
        token_request(server, auth=(demo.client_id, wrong)),
        token_request(server, auth=(wrong, wrong)),
        token_request(server, headers=basic(b64(f"{demo.client_id}:{wrong}")) | {"X-A": "1"}),
        token_request(server, data={"grant_type": "password", "password": wrong}),
        token_request(server, data={**FORM, "scope": "admin"}),
        token_request(server, data={**FORM, "scope": "bogus:x"}),
        token_request(server, data=None, json={"grant_type": "client_credentials", "s": wrong}),
        token_request(server, data={**FORM, "pad": wrong * 200}),
        token_request(server, headers={"Authorization": "Basic " + wrong}),
    ]
    for index, response in enumerate(responses):
        assert response.status_code >= 400, (index, response.request.headers, response.text)
        assert response.headers["content-type"].split(";")[0] == "application/problem+json"
        body = response.json()
        assert body["type"].startswith(PROBLEM_PREFIX), body
        assert body["status"] == response.status_code, body
        assert wrong not in response.text
        assert demo.client_secret not in response.text
        assert "Traceback" not in response.text
        assert wrong not in json.dumps(dict(response.headers))
