"""Token revocation (RFC 7009 ``POST /oauth/revoke``) and the credential changes that kill
live tokens (``herald app disable|enable|rotate-secret``), against real ``herald serve``
processes.

- One module node (embedded SQLite) serves most tests; each test uses apps or tokens of its
  own, so the tests do not depend on each other's order. One test restarts it.
- A revocation made through the API takes effect at once on the node that made it (it
  forgets its cache); a change made by an admin CLI command (another process) or on another
  cluster node is seen within about a second (``herald.state.live.CACHE_TTL``): those tests
  poll, bounded by ``WAIT``, and assert no timing.
- Two nodes sharing PostgreSQL and Redis check that a revocation crosses nodes.

Whether a token is live is probed with ``GET /v1/messages/<unknown id>``: 404 for a live
token, 401 ``invalid-token`` for a refused one; nothing is stored either way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import asyncpg
import httpx
import jwt
import pytest
import tests.conftest as _root
from tests.api.conftest import forget_redis_keys
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from herald.client import ProblemError, Publisher

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import App, Node, NodeFactory

PROBLEM = "urn:herald:problem:"
WAIT = 5.0  # seconds: the bound of every wait and poll in this module
REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SCOPES = ("publish:>", "subscribe:>", "messages:read")


# -- helpers ----------------------------------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_uuid7() -> str:
    """A well-formed UUIDv7 that names no stored message."""
    value = (
        (int(time.time() * 1000) << 80)
        | (0x7 << 76)
        | (secrets.randbits(12) << 64)
        | (0b10 << 62)
        | secrets.randbits(62)
    )
    return str(uuid.UUID(int=value))


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug, body
    assert body["status"] == status, body
    return body


def probe(node: Node, token: str) -> httpx.Response:
    """A read with ``token``: 404 when the token is live."""
    with node.client() as client:
        return client.get(f"/v1/messages/{new_uuid7()}", headers=bearer(token))


def assert_live(node: Node, token: str) -> None:
    response = probe(node, token)
    assert response.status_code == 404, response.text


def assert_refused(response: httpx.Response) -> None:
    assert_problem(response, 401, "invalid-token")
    assert response.headers.get("www-authenticate") == 'Bearer error="invalid_token"'


def eventually(check: Callable[[], httpx.Response], status: int) -> httpx.Response:
    """``check()`` until it answers ``status`` or ``WAIT`` passes; the last answer."""
    deadline = time.monotonic() + WAIT
    while True:
        response = check()
        if response.status_code == status or time.monotonic() >= deadline:
            return response
        time.sleep(0.1)


def wait_refused(node: Node, token: str) -> None:
    """The token is refused within ``WAIT`` (a change made elsewhere: caches expire)."""
    assert_refused(eventually(lambda: probe(node, token), 401))


def wait_live(node: Node, token: str) -> None:
    response = eventually(lambda: probe(node, token), 404)
    assert response.status_code == 404, response.text


def sleep_past_second(instant: float) -> None:
    """Wait until the wall clock is in a later whole second than ``instant``.

    Tokens issued in the very second an app was disabled or re-keyed are refused by design
    (``iat`` has whole seconds); a test that needs a token issued *after* a change waits
    for the next second first.
    """
    remaining = int(instant) + 1 - time.time()
    if remaining > 0:
        time.sleep(remaining + 0.01)


def revoke(
    node: Node,
    token: str,
    app: App | None = None,
    *,
    sign: bool = True,
    **form: str,
) -> httpx.Response:
    """``POST /oauth/revoke`` of ``token`` with ``app``'s client_secret_basic (demo default)."""
    app = app or node.demo
    with node.client(sign=sign) as client:
        return client.post(
            "/oauth/revoke",
            data={"token": token, **form},
            auth=(app.client_id, app.client_secret),
        )


def assert_revoke_ok(response: httpx.Response) -> None:
    """RFC 7009 §2.2: 200 whatever became of the token; a body says nothing (clients ignore
    it), and nothing is cached."""
    assert response.status_code == 200, response.text
    assert response.content in {b"", b"{}"}, response.content
    assert "no-store" in response.headers.get("cache-control", "").lower()


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def subscriber_token(node: Node, app: App | None = None, recipient: str = "user-1") -> str:
    with node.client() as client:
        response = client.post(
            "/v1/subscriber-tokens",
            json={"recipient": recipient, "topics": ["revocation.>"]},
            headers=bearer(node.token(app)),
        )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def ticket_response(node: Node, sub_token: str) -> httpx.Response:
    with node.client() as client:
        return client.post("/v1/stream-tickets", headers=bearer(sub_token))


def stream_outcome(node: Node, *, token: str | None = None, ticket: str | None = None) -> str:
    """Open ``/v1/stream`` over WebSocket: ``"ready"``, or ``"closed <code>"`` before it."""
    url = node.url.replace("https://", "wss://", 1) + "/v1/stream"
    if ticket is not None:
        url += "?" + urlencode({"ticket": ticket})
    with connect(
        url,
        additional_headers=bearer(token) if token is not None else {},
        ssl=node.ssl_context(),
        open_timeout=WAIT,
        close_timeout=2,
        compression=None,
    ) as ws:
        deadline = time.monotonic() + WAIT
        try:
            while True:
                frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                if frame.get("type") == "ready":
                    return "ready"
                assert frame.get("type") == "heartbeat", frame
        except ConnectionClosed:
            return f"closed {ws.close_code}"


def audit_rows(node: Node) -> list[dict[str, Any]]:
    """Every audit entry of the node, parsed, with its raw text under ``"_raw"``."""
    with node.db() as conn:
        rows = conn.execute("SELECT entry FROM audit_entries ORDER BY idx").fetchall()
    texts = [raw.decode() if isinstance(raw, bytes) else str(raw) for (raw,) in rows]
    return [{**json.loads(text), "_raw": text} for text in texts]


def audit_index(node: Node) -> int:
    """The index the next audit entry will get."""
    with node.db() as conn:
        (top,) = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM audit_entries").fetchone()
    return int(top)


# -- the module's node ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def node(module_node_factory: NodeFactory) -> Node:
    """Embedded node; apps ``demo``, ``peer`` (same tenant), ``disable-me``, ``rotate-me``."""
    node = module_node_factory(name="revocation", start=False)
    node.add_app("peer", *SCOPES)
    node.add_app("disable-me", *SCOPES)
    node.add_app("rotate-me", *SCOPES)
    node.start()
    return node


# -- 1. revocation through the API ------------------------------------------------------------
def test_sdk_revokes_the_token_it_holds_and_fetches_a_new_one(node: Node) -> None:
    app = node.demo
    with Publisher(
        node.url, app.client_id, app.client_secret, ca=node.ca, signer=app.signer
    ) as pub:
        held = pub.token()
        assert_live(node, held)
        pub.revoke_token()
        # Revoked on the node that answered: refused at once.
        assert_refused(probe(node, held))
        fresh = pub.token()
        assert fresh != held
        assert_live(node, fresh)
        # An explicit token: revoked, and the held one is kept.
        other = node.token()
        pub.revoke_token(other)
        assert_refused(probe(node, other))
        assert pub.token() == fresh
        assert_live(node, fresh)


def test_raw_revocation_refuses_only_that_token(node: Node) -> None:
    revoked, sibling = node.token(), node.token()
    since = audit_index(node)

    assert_revoke_ok(revoke(node, revoked, token_type_hint="access_token"))

    assert_refused(probe(node, revoked))
    with node.client() as client:
        publish = client.post(
            "/v1/messages", json={"topic": "revocation.x"}, headers=bearer(revoked)
        )
    assert_refused(publish)
    # Other tokens of the same app are untouched.
    assert_live(node, sibling)
    assert_live(node, node.token())
    # Revoking again is not an error (RFC 7009 §2.2), and changes nothing.
    assert_revoke_ok(revoke(node, revoked))
    assert_live(node, sibling)

    entries = [e for e in audit_rows(node)[since:] if e["action"] == "token.revoked"]
    assert entries, "no token.revoked entry"
    assert {e["details"].get("jti") for e in entries} == {jti_of(revoked)}
    for entry in entries:
        assert node.demo.client_id in entry["_raw"]
        for secret in (revoked, revoked.split(".")[2], node.demo.client_secret):
            assert secret not in entry["_raw"]


def test_wrong_hint_is_only_a_hint(node: Node) -> None:
    token = node.token()
    assert_revoke_ok(revoke(node, token, token_type_hint="refresh_token"))
    assert_refused(probe(node, token))


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "a.b.c",
        # Well-formed but signed by nobody the server knows, and long expired.
        jwt.encode(
            {"jti": str(uuid.uuid4()), "exp": 1_000_000_000, "iat": 999_999_000},
            "not-the-server-key-not-the-server-key",
            algorithm="HS256",
        ),
    ],
)
def test_revoking_an_invalid_token_is_a_success(node: Node, value: str) -> None:
    before = node.db_count("revoked_tokens")
    assert_revoke_ok(revoke(node, value))
    assert node.db_count("revoked_tokens") == before


def test_tampered_expired_copy_of_a_real_token_is_a_success(node: Node) -> None:
    # A real token of the app, with exp in the past: re-signed by nobody, so it does not
    # verify; a token that needs no revocation is answered with success.
    header, payload, signature = node.token().split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["exp"] = int(time.time()) - 3600
    expired = ".".join(
        (header, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), signature)
    )
    assert_revoke_ok(revoke(node, expired))


def test_another_apps_token_is_forbidden_and_keeps_working(node: Node) -> None:
    peer = node.app("peer")
    foreign = node.token(peer)
    foreign_sub = subscriber_token(node, peer)
    before = node.db_count("revoked_tokens")

    for token in (foreign, foreign_sub):
        body = assert_problem(revoke(node, token), 403, "forbidden")
        assert token not in json.dumps(body)

    assert node.db_count("revoked_tokens") == before
    assert_live(node, foreign)
    assert ticket_response(node, foreign_sub).status_code == 201
    # The SDK raises the problem.
    app = node.demo
    with (
        Publisher(node.url, app.client_id, app.client_secret, ca=node.ca, signer=app.signer) as pub,
        pytest.raises(ProblemError) as info,
    ):
        pub.revoke_token(foreign)
    assert (info.value.status, info.value.slug) == (403, "forbidden")
    assert_live(node, foreign)


def test_unsigned_revocation_is_refused_like_the_token_endpoint(node: Node) -> None:
    token = node.token()
    assert_problem(revoke(node, token, sign=False), 401, "signature-missing")
    assert_live(node, token)


def test_revocation_needs_client_authentication(node: Node) -> None:
    token = node.token()
    wrong = dataclasses.replace(node.demo, client_secret="hsec_wrong")
    body = assert_problem(revoke(node, token, wrong), 401, "invalid-client")
    assert "hsec_wrong" not in json.dumps(body)
    with node.client() as client:
        no_auth = client.post("/oauth/revoke", data={"token": token})
    assert no_auth.status_code == 401, no_auth.text
    assert_live(node, token)


def test_revoked_subscriber_token_cannot_stream_or_get_a_ticket(node: Node) -> None:
    sub = subscriber_token(node, recipient="user-revoked")
    kept = subscriber_token(node, recipient="user-kept")
    assert stream_outcome(node, token=sub) == "ready"

    assert_revoke_ok(revoke(node, sub, token_type_hint="access_token"))  # a wrong hint

    assert stream_outcome(node, token=sub) == "closed 4401"
    assert_refused(ticket_response(node, sub))
    # Another subscriber token of the same app still streams.
    assert stream_outcome(node, token=kept) == "ready"
    assert ticket_response(node, kept).status_code == 201


def test_ticket_got_before_revocation_is_refused(node: Node) -> None:
    sub = subscriber_token(node, recipient="user-ticket")
    response = ticket_response(node, sub)
    assert response.status_code == 201, response.text
    ticket = str(response.json()["ticket"])

    assert_revoke_ok(revoke(node, sub))

    # The ticket stands for the revoked token: it must not open a stream either.
    assert stream_outcome(node, ticket=ticket) == "closed 4401"


# -- 5. the CLI ------------------------------------------------------------------------------
def test_cli_revokes_a_token(node: Node) -> None:
    token = node.token()
    result = node.run("token", "revoke", token)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout
    assert token not in result.stdout
    assert_refused(probe(node, token))


def test_cli_refused_revocation_is_one_line_and_nonzero(node: Node) -> None:
    foreign = node.token(node.app("peer"))
    result = node.run("token", "revoke", foreign, check=False)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "403" in lines[0]
    assert foreign not in result.stderr
    assert_live(node, foreign)


# -- 3. admin commands: disable, enable, rotate-secret ------------------------------------------
def test_disable_then_enable(node: Node) -> None:
    app = node.app("disable-me")
    old = node.token(app)
    assert_live(node, old)
    since = audit_index(node)

    assert node.cli("app", "disable", app.client_id) == {
        "client_id": app.client_id,
        "disabled": True,
    }
    disabled_at = time.time()

    wait_refused(node, old)  # the server caches app state for a second
    assert_problem(node.token_response(app), 401, "invalid-client")

    assert node.cli("app", "enable", app.client_id) == {
        "client_id": app.client_id,
        "disabled": False,
    }
    sleep_past_second(disabled_at)
    fresh = node.token(app)
    wait_live(node, fresh)
    assert_refused(probe(node, old))  # tokens from before the disable stay dead

    entries = [e for e in audit_rows(node)[since:] if e["action"].startswith("app.")]
    assert [(e["action"], e["object"]) for e in entries] == [
        ("app.disabled", f"app:{app.client_id}"),
        ("app.enabled", f"app:{app.client_id}"),
    ]


def test_rotate_secret(node: Node) -> None:
    app = node.app("rotate-me")
    old_token = node.token(app)
    assert_live(node, old_token)
    since = audit_index(node)

    rotated = node.cli("app", "rotate-secret", app.client_id)
    rotated_at = time.time()
    assert set(rotated) == {"client_id", "client_secret"}
    assert rotated["client_id"] == app.client_id
    new_secret = str(rotated["client_secret"])
    assert new_secret
    assert new_secret != app.client_secret

    assert_problem(node.token_response(app), 401, "invalid-client")
    wait_refused(node, old_token)
    renewed = dataclasses.replace(app, client_secret=new_secret)
    node.apps["rotate-me"] = renewed
    sleep_past_second(rotated_at)
    fresh = node.token(renewed)
    wait_live(node, fresh)
    assert_refused(probe(node, old_token))

    entries = [e for e in audit_rows(node)[since:] if e["action"] == "app.secret_rotated"]
    assert [e["object"] for e in entries] == [f"app:{app.client_id}"]
    for entry in audit_rows(node):
        assert new_secret not in entry["_raw"]


# -- 2. restart ----------------------------------------------------------------------------------
def test_revocation_survives_a_restart(node: Node) -> None:
    access, sub = node.token(), subscriber_token(node, recipient="user-restart")
    kept = node.token()
    for token in (access, sub):
        assert_revoke_ok(revoke(node, token))

    node.restart()

    assert_refused(probe(node, access))
    assert_refused(ticket_response(node, sub))
    assert stream_outcome(node, token=sub) == "closed 4401"
    assert_live(node, kept)


# -- 4. two nodes sharing PostgreSQL and Redis -------------------------------------------------
@pytest.fixture
def cluster(
    redis_url: str, pg_fresh_dsn: str, node_factory: NodeFactory
) -> Iterator[tuple[Node, Node]]:
    """Node ``a`` (on the public URL) and node ``b``: one database, one Redis.

    Afterwards the Redis keys of the nodes' tenant and apps are deleted.
    """
    port = node_factory.free_port()
    first = node_factory(
        name="revocation-cluster",
        port=port,
        HERALD_DATABASE_URL=pg_fresh_dsn,
        HERALD_REDIS_URL=redis_url,
        HERALD_PUBLIC_URL=f"https://127.0.0.1:{port}",
    )
    try:
        yield first, node_factory.peer(first)
    finally:
        node_factory.stop_all()
        forget_redis_keys(redis_url, first.demo.tenant, [a.client_id for a in first.apps.values()])


def pg_revocations(dsn: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM revoked_tokens"))
        finally:
            await conn.close()

    return int(_root.run_async(count))


@pytest.mark.postgres
@pytest.mark.redis
def test_revocation_on_one_node_reaches_the_other(
    cluster: tuple[Node, Node], pg_fresh_dsn: str
) -> None:
    node_a, node_b = cluster
    token, kept = node_a.token(), node_a.token()
    # Node b has looked at the token (and may cache "not revoked" for a second).
    assert_live(node_b, token)

    assert_revoke_ok(revoke(node_a, token))

    assert_refused(probe(node_a, token))
    wait_refused(node_b, token)
    assert_live(node_b, kept)
    assert pg_revocations(pg_fresh_dsn) == 1
