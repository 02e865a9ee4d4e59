"""RFC 9421 request signatures through a real ``herald serve`` (DESIGN §4 steps 3–4).

Interoperability with an independent implementation (``http-message-signatures``), one
mutation at a time of a correctly signed request, freshness, replay (sequential and
concurrent) and the signing-key lifecycle through the CLI.

Every test builds its own requests on its own topic and compares only counts taken inside
the test, so the tests do not depend on each other or on their order. Every refusal must
leave nothing stored but must append a ``request.refused`` audit entry with its reason.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import importlib.util
import json
import re
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from herald.client import RequestSigner
from herald.core.signatures import content_digest, signature_base, signature_params
from herald.state.live import CACHE_TTL

if TYPE_CHECKING:  # the fixture's types, for readers and type checkers only
    from tests.api.conftest import App, Server


def _api_conftest() -> ModuleType:
    """tests/api/conftest.py as pytest loaded it (its helpers are plain functions)."""
    path = Path(__file__).with_name("conftest.py").resolve()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return module
    spec = importlib.util.spec_from_file_location("herald_api_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_cli = _api_conftest().run_cli

PROBLEM = "urn:herald:problem:"
#: The server fixture does not set HERALD_REPLAY_WINDOW: the default applies.
WINDOW = 300
COVERED = ("@method", "@target-uri", "content-digest", "content-type", "authorization")


# -- helpers ----------------------------------------------------------------------------------
def unique_topic(prefix: str = "sig") -> str:
    return f"{prefix}.{secrets.token_hex(6)}"


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic_auth(app: App) -> str:
    credentials = f"{app.client_id}:{app.client_secret}".encode()
    return "Basic " + base64.b64encode(credentials).decode()


def message_body(topic: str | None = None) -> bytes:
    return json.dumps({"topic": topic or unique_topic(), "title": "signed"}).encode()


def private_key(app: App) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(app.signing_key_file).read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def build_publish(
    client: httpx.Client | httpx.AsyncClient,
    token: str,
    body: bytes | None = None,
    *,
    path: str = "/v1/messages",
) -> httpx.Request:
    """An unsigned publish request (absolute URL from the client's base URL)."""
    return client.build_request(
        "POST",
        path,
        content=message_body() if body is None else body,
        headers={**bearer(token), "Content-Type": "application/json"},
    )


def variant(
    request: httpx.Request,
    *,
    url: str | httpx.URL | None = None,
    method: str | None = None,
    content: bytes | None = None,
    headers: dict[str, str | None] | None = None,
) -> httpx.Request:
    """A copy of ``request`` with changes (a header set to None is removed).

    Host and Content-Length are recomputed by httpx for the copy.
    """
    fields = {
        name: value
        for name, value in request.headers.items()
        if name.lower() not in {"host", "content-length"}
    }
    lowered = {name.lower(): name for name in fields}
    for name, value in (headers or {}).items():
        fields.pop(lowered.get(name.lower(), name), None)
        if value is not None:
            fields[name] = value
    return httpx.Request(
        method or request.method,
        url if url is not None else request.url,
        headers=fields,
        content=request.content if content is None else content,
    )


def with_param(request: httpx.Request, name: str, value: str) -> httpx.Request:
    """``request`` with one signature parameter of ``Signature-Input`` replaced."""
    signature_input = request.headers["signature-input"]
    pattern = rf";{name}=(\"[^\"]*\"|-?\d+)"
    assert re.search(pattern, signature_input), signature_input
    changed = re.sub(pattern, lambda _: f";{name}={value}", signature_input, count=1)
    assert changed != signature_input
    return variant(request, headers={"Signature-Input": changed})


def param(request: httpx.Request, name: str) -> str:
    match = re.search(rf";{name}=(\"[^\"]*\"|-?\d+)", request.headers["signature-input"])
    assert match is not None
    return match.group(1).strip('"')


def sign_by_hand(
    request: httpx.Request,
    key: Ed25519PrivateKey,
    keyid: str,
    *,
    components: tuple[str, ...] = COVERED,
    created: int | None = None,
    expires: int | None = None,
    digest: str | None = None,
) -> httpx.Request:
    """Sign with explicit parameters (for what RequestSigner never produces)."""
    body = request.read()
    request.headers["Content-Digest"] = digest or content_digest(body)
    params = signature_params(
        components,
        created=int(time.time()) if created is None else created,
        nonce=new_nonce(),
        keyid=keyid,
        alg="ed25519",
        expires=expires,
    )
    values = {"@method": request.method, "@target-uri": str(request.url)}
    base = signature_base(components, lambda n: values.get(n, request.headers.get(n)), params)
    signature = base64.b64encode(key.sign(base)).decode()
    request.headers["Signature-Input"] = f"herald={params}"
    request.headers["Signature"] = f"herald=:{signature}:"
    return request


def assert_problem(
    response: httpx.Response, status: int, slug: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith(PROBLEM)
    if slug is not None:
        assert problem["type"] == PROBLEM + slug, problem
    return problem


def audit_size(server: Server) -> int:
    with sqlite3.connect(server.data_dir / "herald.db") as conn:
        (last,) = conn.execute("SELECT max(idx) FROM audit_entries").fetchone()
    return 0 if last is None else int(last) + 1


def audit_since(server: Server, start: int) -> list[dict[str, Any]]:
    with sqlite3.connect(server.data_dir / "herald.db") as conn:
        rows = conn.execute(
            "SELECT entry FROM audit_entries WHERE idx >= ? ORDER BY idx", (start,)
        ).fetchall()
    return [json.loads(bytes(entry)) for (entry,) in rows]


def refusals_since(server: Server, start: int, app: App) -> list[str]:
    """Reasons of the ``request.refused`` entries appended for ``app`` since ``start``."""
    return [
        entry["details"]["reason"]
        for entry in audit_since(server, start)
        if entry["action"] == "request.refused"
        and entry["actor"] == f"app:{app.client_id}"
        and entry["tenant"] == app.tenant
    ]


class Snapshot:
    """Counts before an action, to assert that a refusal stored nothing but was audited."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.messages = server.db_count("messages")
        self.audit = audit_size(server)

    def assert_refused(
        self, response: httpx.Response, status: int, slug: str, app: App | None = None
    ) -> dict[str, Any]:
        problem = assert_problem(response, status, slug)
        assert self.server.db_count("messages") == self.messages
        assert slug in refusals_since(self.server, self.audit, app or self.server.demo)
        return problem


def cli_json(server: Server, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run_cli(server.env, *args, "--json").stdout)
    return result


def write_public_pem(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_token(server: Server) -> str:
    return server.token()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    """An unsigned client: every test signs (or does not sign) by itself."""
    with server.client(sign=False) as c:
        yield c


@pytest.fixture(scope="module")
def second_demo_key(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Ed25519PrivateKey]:
    """A second Ed25519 key of the demo app, registered through the CLI."""
    key = Ed25519PrivateKey.generate()
    pem = write_public_pem(tmp_path_factory.mktemp("keys") / "second.pem", key)
    added = cli_json(
        server, "app", "key", "add", server.demo.client_id, "--ed25519-public-key", str(pem)
    )
    return str(added["keyid"]), key


@pytest.fixture(scope="module")
def hmac_key(server: Server) -> tuple[str, bytes]:
    """An HMAC-SHA256 key of the demo app: ``(keyid, secret bytes)``."""
    added = cli_json(server, "app", "key", "add", server.demo.client_id, "--hmac")
    assert added["algorithm"] == "hmac-sha256"
    return str(added["keyid"]), base64.b64decode(added["secret"], validate=True)


# -- interoperability with http-message-signatures ----------------------------------------------
def library_sign(
    request: httpx.Request, algorithm: Any, keyid: str, key: Any, body: bytes
) -> httpx.Request:
    signer = HTTPMessageSigner(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={keyid: key}),
    )
    signer.sign(
        request,
        key_id=keyid,
        created=dt.datetime.now(dt.UTC),
        nonce=new_nonce(),
        covered_component_ids=COVERED,
        body=body,
    )
    assert "content-digest" in request.headers
    return request


def test_publish_signed_by_http_message_signatures_ed25519(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    topic = unique_topic()
    body = message_body(topic)
    request = build_publish(client, demo_token, body)
    demo = server.demo
    library_sign(
        request,
        algorithms.ED25519,
        demo.signing_keyid,
        Path(demo.signing_key_file).read_bytes(),
        body,
    )
    before = server.db_count("messages")
    response = client.send(request)
    assert response.status_code == 202, response.text
    assert response.json()["topic"] == topic
    assert server.db_count("messages") == before + 1


def test_publish_signed_by_http_message_signatures_hmac(
    server: Server, client: httpx.Client, demo_token: str, hmac_key: tuple[str, bytes]
) -> None:
    keyid, secret = hmac_key
    topic = unique_topic()
    body = message_body(topic)
    request = library_sign(
        build_publish(client, demo_token, body), algorithms.HMAC_SHA256, keyid, secret, body
    )
    before = server.db_count("messages")
    response = client.send(request)
    assert response.status_code == 202, response.text
    assert response.json()["topic"] == topic
    assert server.db_count("messages") == before + 1


def test_token_request_signed_by_http_message_signatures(
    server: Server, client: httpx.Client
) -> None:
    demo = server.demo
    body = b"grant_type=client_credentials"
    request = client.build_request(
        "POST",
        "/oauth/token",
        content=body,
        headers={
            "Authorization": basic_auth(demo),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    library_sign(
        request,
        algorithms.ED25519,
        demo.signing_keyid,
        Path(demo.signing_key_file).read_bytes(),
        body,
    )
    response = client.send(request)
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    # The token it returned works for a (signed) publish.
    signed = demo.signer.sign(build_publish(client, response.json()["access_token"]))
    assert client.send(signed).status_code == 202


# -- one mutation at a time ---------------------------------------------------------------------
Mutation = Callable[[httpx.Request, dict[str, Any]], httpx.Request]


def _flip_signature(request: httpx.Request, _: dict[str, Any]) -> httpx.Request:
    label, _eq, value = request.headers["signature"].partition("=")
    raw = bytearray(base64.b64decode(value.strip(":")))
    raw[len(raw) // 2] ^= 0x01
    flipped = f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"
    return variant(request, headers={"Signature": flipped})


def _flip_body_byte(request: httpx.Request, _: dict[str, Any]) -> httpx.Request:
    body = request.content
    index = body.index(b"signed")
    changed = body[:index] + b"S" + body[index + 1 :]
    assert len(changed) == len(body)
    assert changed != body
    return variant(request, content=changed)


def _url(path: str, query: str = "") -> Mutation:
    def mutate(request: httpx.Request, _: dict[str, Any]) -> httpx.Request:
        url = str(request.url.copy_with(query=None)).removesuffix("/v1/messages") + path
        return variant(request, url=httpx.URL(url + query))

    return mutate


MUTATIONS: dict[str, tuple[Mutation, int, str]] = {
    # The only route with this body is POST-only; a path on another POST route changes
    # @target-uri (method changes are covered by test_method_change_is_405).
    "path-subscriber-tokens": (_url("/v1/subscriber-tokens"), 401, "signature-invalid"),
    "path-batch": (_url("/v1/messages:batch"), 401, "signature-invalid"),
    # Same route after percent-decoding: the verifier must use the raw path.
    "path-percent-encoded": (_url("/v1/%6Dessages"), 401, "signature-invalid"),
    "query-added": (_url("/v1/messages", "?x=1"), 401, "signature-invalid"),
    "body-byte": (_flip_body_byte, 400, "digest-mismatch"),
    "content-type": (
        lambda r, _: variant(r, headers={"Content-Type": "application/json; charset=utf-8"}),
        401,
        "signature-invalid",
    ),
    "created-plus-1": (
        lambda r, _: with_param(r, "created", str(int(param(r, "created")) + 1)),
        401,
        "signature-invalid",
    ),
    "created-minus-1": (
        lambda r, _: with_param(r, "created", str(int(param(r, "created")) - 1)),
        401,
        "signature-invalid",
    ),
    "created-decimal": (
        lambda r, _: with_param(r, "created", param(r, "created") + ".0"),
        401,
        "signature-invalid",
    ),
    "component-name-upper-case": (
        lambda r, _: variant(
            r,
            headers={
                "Signature-Input": r.headers["signature-input"].replace(
                    '"content-type"', '"Content-Type"'
                )
            },
        ),
        401,
        "signature-invalid",
    ),
    "nonce": (
        lambda r, _: with_param(r, "nonce", f'"{new_nonce()}"'),
        401,
        "signature-invalid",
    ),
    "keyid-same-app-other-key": (
        lambda r, c: with_param(r, "keyid", f'"{c["second_keyid"]}"'),
        401,
        "signature-invalid",
    ),
    "keyid-unknown": (
        lambda r, _: with_param(r, "keyid", f'"hk_{secrets.token_hex(8)}"'),
        401,
        "key-unknown",
    ),
    "keyid-of-narrow-app": (
        lambda r, c: with_param(r, "keyid", f'"{c["narrow_keyid"]}"'),
        401,
        "key-unknown",
    ),
    "keyid-of-other-tenant": (
        lambda r, c: with_param(r, "keyid", f'"{c["other_keyid"]}"'),
        401,
        "key-unknown",
    ),
    "keyid-too-long": (
        lambda r, _: with_param(r, "keyid", '"' + "k" * 65 + '"'),
        401,
        "key-unknown",
    ),
    "nonce-64-bits": (
        lambda r, _: with_param(r, "nonce", f'"{secrets.token_urlsafe(8)}"'),
        401,
        "signature-invalid",
    ),
    "signature-label-differs": (
        lambda r, _: variant(r, headers={"Signature": "other" + r.headers["signature"][6:]}),
        401,
        "signature-invalid",
    ),
    "alg-hmac": (lambda r, _: with_param(r, "alg", '"hmac-sha256"'), 401, "signature-invalid"),
    "signature-byte": (_flip_signature, 401, "signature-invalid"),
    "authorization-fresh-token": (
        lambda r, c: variant(r, headers={"Authorization": f"Bearer {c['fresh_token']}"}),
        401,
        "signature-invalid",
    ),
    "signature-header-removed": (
        lambda r, _: variant(r, headers={"Signature": None}),
        401,
        "signature-missing",
    ),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_single_mutation_is_refused(
    name: str,
    server: Server,
    client: httpx.Client,
    demo_token: str,
    second_demo_key: tuple[str, Ed25519PrivateKey],
) -> None:
    mutate, status, slug = MUTATIONS[name]
    context: dict[str, Any] = {
        "second_keyid": second_demo_key[0],
        "narrow_keyid": server.narrow.signing_keyid,
        "other_keyid": server.other.signing_keyid,
    }
    if name == "authorization-fresh-token":
        context["fresh_token"] = server.token()
        assert context["fresh_token"] != demo_token
    original = server.demo.signer.sign(build_publish(client, demo_token))
    mutated = mutate(original, context)
    snapshot = Snapshot(server)
    snapshot.assert_refused(client.send(mutated), status, slug)


def test_content_digest_of_another_body_is_refused(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    original = server.demo.signer.sign(build_publish(client, demo_token))
    mutated = variant(original, headers={"Content-Digest": content_digest(message_body())})
    snapshot = Snapshot(server)
    response = client.send(mutated)
    slug = response.json().get("type", "").removeprefix(PROBLEM)
    assert slug in {"digest-mismatch", "signature-invalid"}, response.text
    # The digest is checked against the body before the signature: digest-mismatch.
    assert slug == "digest-mismatch"
    snapshot.assert_refused(response, 400, "digest-mismatch")


def test_method_change_is_405(server: Server, client: httpx.Client, demo_token: str) -> None:
    # POST is the only method of /v1/messages; another method never reaches the handler.
    original = server.demo.signer.sign(build_publish(client, demo_token))
    before = server.db_count("messages")
    assert_problem(client.send(variant(original, method="PUT")), 405, "method-not-allowed")
    assert server.db_count("messages") == before


def test_unmutated_request_is_accepted(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    # Control for the table above: variant() without changes keeps the signature valid.
    original = server.demo.signer.sign(build_publish(client, demo_token))
    before = server.db_count("messages")
    response = client.send(variant(original))
    assert response.status_code == 202, response.text
    assert server.db_count("messages") == before + 1


# -- freshness ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [-(WINDOW + 5), WINDOW + 5], ids=["too-old", "in-future"])
def test_created_outside_the_window_is_expired(
    shift: int, server: Server, client: httpx.Client, demo_token: str
) -> None:
    demo = server.demo
    signer = RequestSigner(demo.signing_keyid, private_key(demo), clock=lambda: time.time() + shift)
    request = signer.sign(build_publish(client, demo_token))
    snapshot = Snapshot(server)
    snapshot.assert_refused(client.send(request), 401, "request-expired")


def test_expires_in_the_past_is_expired(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    now = int(time.time())
    demo = server.demo
    request = sign_by_hand(
        build_publish(client, demo_token),
        private_key(demo),
        demo.signing_keyid,
        created=now - 10,
        expires=now - 5,
    )
    assert ";expires=" in request.headers["signature-input"]
    snapshot = Snapshot(server)
    snapshot.assert_refused(client.send(request), 401, "request-expired")


def test_expires_in_the_future_is_accepted(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    # Control: the hand-made signature itself is valid.
    now = int(time.time())
    demo = server.demo
    request = sign_by_hand(
        build_publish(client, demo_token), private_key(demo), demo.signing_keyid, expires=now + 60
    )
    assert client.send(request).status_code == 202


def test_required_components_missing_are_named(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    demo = server.demo
    request = sign_by_hand(
        build_publish(client, demo_token),
        private_key(demo),
        demo.signing_keyid,
        components=("@method", "@target-uri"),
    )
    snapshot = Snapshot(server)
    problem = snapshot.assert_refused(client.send(request), 401, "signature-invalid")
    for component in ("content-digest", "content-type", "authorization"):
        assert component in problem["detail"], problem


def test_unsigned_publish_is_signature_missing(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    request = build_publish(client, demo_token)
    assert "signature" not in request.headers
    snapshot = Snapshot(server)
    snapshot.assert_refused(client.send(request), 401, "signature-missing")


# -- replay -------------------------------------------------------------------------------------
def test_same_signed_request_twice_is_a_replay(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    topic = unique_topic()
    request = server.demo.signer.sign(build_publish(client, demo_token, message_body(topic)))
    before = server.db_count("messages")
    first = client.send(request)
    assert first.status_code == 202, first.text
    snapshot = Snapshot(server)
    snapshot.assert_refused(client.send(variant(request)), 401, "replayed-request")
    assert server.db_count("messages") == before + 1
    history = client.get(f"/v1/topics/{topic}/messages", headers=bearer(demo_token))
    assert [m["id"] for m in history.json()["messages"]] == [first.json()["id"]]


async def test_concurrent_identical_requests_store_one_message(
    server: Server, demo_token: str
) -> None:
    topic = unique_topic()
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with server.async_client(sign=False, limits=limits, timeout=60.0) as aclient:
        request = server.demo.signer.sign(build_publish(aclient, demo_token, message_body(topic)))
        before = server.db_count("messages")
        responses = await asyncio.gather(*(aclient.send(variant(request)) for _ in range(200)))
        history = await aclient.get(f"/v1/topics/{topic}/messages", headers=bearer(demo_token))
    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == 1, sorted(set(statuses))
    replayed = [r for r in responses if r.status_code != 202]
    assert len(replayed) == 199
    for response in replayed:
        assert_problem(response, 401, "replayed-request")
    assert server.db_count("messages") == before + 1
    assert len(history.json()["messages"]) == 1


def test_nonce_reused_with_another_body_is_a_replay(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    # Replay protection is keyed on the nonce, not on the whole request.
    demo = server.demo
    nonce = new_nonce()
    signer = RequestSigner(demo.signing_keyid, private_key(demo), new_nonce=lambda: nonce)
    assert client.send(signer.sign(build_publish(client, demo_token))).status_code == 202
    snapshot = Snapshot(server)
    request = signer.sign(build_publish(client, demo_token))
    snapshot.assert_refused(client.send(request), 401, "replayed-request")


def test_refused_request_does_not_burn_its_nonce(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    # DESIGN §4 step 4: the nonce is claimed only after the signature verifies.
    original = server.demo.signer.sign(build_publish(client, demo_token))
    snapshot = Snapshot(server)
    forged = _flip_signature(original, {})
    snapshot.assert_refused(client.send(forged), 401, "signature-invalid")
    response = client.send(variant(original))
    assert response.status_code == 202, response.text


def test_same_nonce_under_another_key_is_independent(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    # Nonces are namespaced per tenant and keyid: another app's use does not block ours.
    nonce = new_nonce()
    narrow = server.narrow
    narrow_signer = RequestSigner(
        narrow.signing_keyid, private_key(narrow), new_nonce=lambda: nonce
    )
    narrow_token = server.token(narrow)
    narrow_request = build_publish(client, narrow_token, message_body(unique_topic("orders")))
    assert client.send(narrow_signer.sign(narrow_request)).status_code == 202
    demo = server.demo
    demo_signer = RequestSigner(demo.signing_keyid, private_key(demo), new_nonce=lambda: nonce)
    response = client.send(demo_signer.sign(build_publish(client, demo_token)))
    assert response.status_code == 202, response.text


def test_sha512_content_digest_is_accepted(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    body = message_body()
    digest = base64.b64encode(hashlib.sha512(body).digest()).decode()
    request = build_publish(client, demo_token, body)
    demo = server.demo
    sign_by_hand(request, private_key(demo), demo.signing_keyid, digest=f"sha-512=:{digest}:")
    assert client.send(request).status_code == 202


def test_content_digest_without_a_supported_algorithm_is_refused(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    body = message_body()
    digest = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324
    request = build_publish(client, demo_token, body)
    demo = server.demo
    sign_by_hand(request, private_key(demo), demo.signing_keyid, digest=f"md5=:{digest}:")
    snapshot = Snapshot(server)
    snapshot.assert_refused(client.send(request), 400, "digest-mismatch")


def test_every_supported_digest_must_match(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    body = message_body()
    wrong = base64.b64encode(hashlib.sha512(b"another body").digest()).decode()
    request = build_publish(client, demo_token, body)
    demo = server.demo
    sign_by_hand(
        request,
        private_key(demo),
        demo.signing_keyid,
        digest=f"{content_digest(body)}, sha-512=:{wrong}:",
    )
    snapshot = Snapshot(server)
    snapshot.assert_refused(client.send(request), 400, "digest-mismatch")


def test_hmac_keyed_with_the_ed25519_public_key_is_refused(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    # Algorithm confusion (RFC 9421 §7.3.6): alg never selects the algorithm of a key.
    demo = server.demo
    public = (
        private_key(demo)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    signer = RequestSigner(demo.signing_keyid, public)
    assert signer.alg == "hmac-sha256"
    snapshot = Snapshot(server)
    request = signer.sign(build_publish(client, demo_token))
    snapshot.assert_refused(client.send(request), 401, "signature-invalid")


def test_unsigned_token_request_is_signature_missing(server: Server, client: httpx.Client) -> None:
    demo = server.demo
    snapshot = Snapshot(server)
    response = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(demo.client_id, demo.client_secret),
    )
    snapshot.assert_refused(response, 401, "signature-missing")


def test_token_request_signed_with_another_apps_key_is_refused(
    server: Server, client: httpx.Client
) -> None:
    demo = server.demo
    request = client.build_request(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": basic_auth(demo)},
    )
    snapshot = Snapshot(server)
    response = client.send(server.other.signer.sign(request))
    snapshot.assert_refused(response, 401, "key-unknown")


# -- signing keys through the CLI ---------------------------------------------------------------
def test_hmac_key_usable_then_revoked(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    demo = server.demo
    added = cli_json(server, "app", "key", "add", demo.client_id, "--hmac")
    assert added["algorithm"] == "hmac-sha256"
    assert added["revoked_at"] is None
    keyid = added["keyid"]
    signer = RequestSigner.from_hmac_secret(keyid, added["secret"])
    assert client.send(signer.sign(build_publish(client, demo_token))).status_code == 202

    revoked = cli_json(server, "app", "key", "revoke", demo.client_id, keyid)
    assert revoked["keyid"] == keyid
    assert revoked["revoked_at"] is not None
    # The CLI is another process: the server notices within its key cache's second.
    time.sleep(CACHE_TTL)

    snapshot = Snapshot(server)
    request = signer.sign(build_publish(client, demo_token))
    snapshot.assert_refused(client.send(request), 401, "key-revoked")

    keys = {k["keyid"]: k for k in cli_json(server, "app", "key", "list", demo.client_id)["keys"]}
    assert keys[keyid]["revoked_at"] == revoked["revoked_at"]
    assert keys[keyid]["algorithm"] == "hmac-sha256"
    assert keys[demo.signing_keyid]["revoked_at"] is None
    # The app's other key still works.
    assert client.send(demo.signer.sign(build_publish(client, demo_token))).status_code == 202


def test_ed25519_public_key_from_pem_is_usable(
    server: Server, client: httpx.Client, demo_token: str, tmp_path: Path
) -> None:
    demo = server.demo
    key = Ed25519PrivateKey.generate()
    pem = write_public_pem(tmp_path / "ed25519.pem", key)
    added = cli_json(server, "app", "key", "add", demo.client_id, "--ed25519-public-key", str(pem))
    assert added["algorithm"] == "ed25519"
    assert added["client_id"] == demo.client_id
    assert "secret" not in added
    signer = RequestSigner(added["keyid"], key)
    before = server.db_count("messages")
    response = client.send(signer.sign(build_publish(client, demo_token)))
    assert response.status_code == 202, response.text
    assert server.db_count("messages") == before + 1
    listed = cli_json(server, "app", "key", "list", demo.client_id)["keys"]
    assert added["keyid"] in {k["keyid"] for k in listed}


@pytest.mark.parametrize("owner", ["narrow", "other"])
def test_key_of_another_app_is_unknown(
    owner: str, server: Server, client: httpx.Client, demo_token: str
) -> None:
    app: App = getattr(server, owner)
    request = app.signer.sign(build_publish(client, demo_token))
    snapshot = Snapshot(server)
    snapshot.assert_refused(client.send(request), 401, "key-unknown")


def _key_count(server: Server) -> int:
    return len(cli_json(server, "app", "key", "list", server.demo.client_id)["keys"])


def _assert_one_line_error(result: Any) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0].lower()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["rsa", "garbage", "ed25519-private"])
def test_add_refuses_a_pem_that_is_not_an_ed25519_public_key(
    kind: str, server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "key.pem"
    if kind == "rsa":
        write_public_pem(path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif kind == "garbage":
        path.write_bytes(
            b"-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n"
        )
    else:
        path.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    before = _key_count(server)
    result = run_cli(
        server.env,
        "app",
        "key",
        "add",
        server.demo.client_id,
        "--ed25519-public-key",
        str(path),
        "--json",
        check=False,
    )
    _assert_one_line_error(result)
    assert result.stdout.strip() == ""
    assert _key_count(server) == before


@pytest.mark.parametrize(
    "options", [[], ["--hmac", "--ed25519-public-key", "PEM"]], ids=["neither", "both"]
)
def test_add_needs_exactly_one_kind_of_key(
    options: list[str], server: Server, tmp_path: Path
) -> None:
    pem = write_public_pem(tmp_path / "ok.pem", Ed25519PrivateKey.generate())
    args = [str(pem) if option == "PEM" else option for option in options]
    before = _key_count(server)
    result = run_cli(
        server.env, "app", "key", "add", server.demo.client_id, *args, "--json", check=False
    )
    _assert_one_line_error(result)
    assert _key_count(server) == before


# -- what is not signed ---------------------------------------------------------------------------
def test_get_routes_work_unsigned(server: Server, client: httpx.Client, demo_token: str) -> None:
    topic = unique_topic()
    published = client.send(
        server.demo.signer.sign(build_publish(client, demo_token, message_body(topic)))
    )
    assert published.status_code == 202, published.text
    message_id = published.json()["id"]
    for path in ("/healthz", "/.well-known/jwks.json", "/.well-known/oauth-authorization-server"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
    message = client.get(f"/v1/messages/{message_id}", headers=bearer(demo_token))
    assert message.status_code == 200, message.text
    assert message.json()["id"] == message_id
    history = client.get(f"/v1/topics/{topic}/messages", headers=bearer(demo_token))
    assert history.status_code == 200, history.text
    assert [m["id"] for m in history.json()["messages"]] == [message_id]


def test_stream_ticket_works_unsigned_with_a_subscriber_token(
    server: Server, client: httpx.Client, demo_token: str
) -> None:
    request = client.build_request(
        "POST",
        "/v1/subscriber-tokens",
        json={"recipient": "user-sig", "topics": ["orders.>"], "ttl": 600},
        headers=bearer(demo_token),
    )
    issued = client.send(server.demo.signer.sign(request))
    assert issued.status_code == 201, issued.text
    subscriber = issued.json()["token"]
    response = client.post("/v1/stream-tickets", headers=bearer(subscriber))
    assert response.status_code == 201, response.text
    assert "signature" not in response.request.headers
    assert response.json()["ticket"]
