"""Rate limits per app and per subscriber, and the token endpoint's lockout (issue 7),
against real ``herald serve`` processes on loopback.

- An app's bucket: every authenticated request spends a token; admitted answers carry the
  ``RateLimit-Policy`` / ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers-11,
  parsed as structured fields), a refusal is a 429 ``rate-limited`` problem with
  ``Retry-After`` that stores and audits nothing; other apps keep their own buckets.
- A subscriber's bucket: stream tickets and stream connections; a refused WebSocket closes
  with 4429.
- Lockout by client id and by source address, with exponential back-off, checked before
  the secret (a locked attempt writes no audit entry).
- Cluster mode: two nodes sharing Redis (and PostgreSQL) share one bucket and one lockout.

Waits are bounded; the only timing the tests rely on is "after waiting ``Retry-After`` it
works" and that a request follows the previous one within a second.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import http_sf
import httpx
import pytest
import redis
import tests.conftest as _root
from tests.api.conftest import forget_redis_keys
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from herald.state.ratelimit import bucket_key

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import App, Node, NodeFactory

PROBLEM_PREFIX = "urn:herald:problem:"
REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 10.0  # seconds: the bound of every single wait on a stream
FORM = {"grant_type": "client_credentials"}
LOOPBACK = "127.0.0.1"  # where every test request comes from

# The module's node: small buckets and a short lockout.
APP_RATE, APP_BURST = 0.2, 3  # a token every 5 s: w = 15
SUB_RATE, SUB_BURST = 0.01, 2  # a token every 100 s: w = 200
THRESHOLD, BASE, CAP = 3, 1, 4  # locked 1 s after 3 failures, then 2 s, 4 s, 4 s, …


service_unavailable = _root.service_unavailable


# -- helpers ----------------------------------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    media = response.headers["content-type"].split(";")[0].strip()
    assert media == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_PREFIX + slug, body
    assert body["status"] == status, body
    return body


def sf_list(value: str) -> dict[str, dict[str, Any]]:
    """A structured-field List of String items with parameters: name -> parameters."""
    parsed = http_sf.parse(value.encode("ascii"), tltype="list")
    assert isinstance(parsed, list), value
    members: dict[str, dict[str, Any]] = {}
    for member in parsed:
        assert isinstance(member, tuple), value
        name, params = member
        assert type(name) is str, value  # a String ("app"), not a Token
        assert isinstance(params, dict), value
        assert name not in members, value
        members[name] = dict(params)
    return members


def ratelimit(response: httpx.Response, policy: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of ``policy`` in the response's ``RateLimit-Policy`` and ``RateLimit``."""
    policies = sf_list(response.headers["RateLimit-Policy"])
    limits = sf_list(response.headers["RateLimit"])
    assert set(policies) == set(limits) == {policy}, response.headers
    for params in (*policies.values(), *limits.values()):
        for value in params.values():
            assert type(value) is int, response.headers  # Integers, not Decimals
            assert value >= 0, response.headers
    return policies[policy], limits[policy]


def retry_after(response: httpx.Response) -> int:
    """``Retry-After`` as delay-seconds (RFC 9110 §10.2.3), at least 1."""
    value = response.headers["Retry-After"]
    assert re.fullmatch(r"[0-9]+", value), value
    seconds = int(value)
    assert seconds >= 1, value
    return seconds


def assert_admitted(
    response: httpx.Response, status: int, policy: str, *, burst: int, window: int
) -> int:
    """An admitted answer with the policy's fields; its remaining tokens."""
    assert response.status_code == status, response.text
    assert "retry-after" not in response.headers
    quota, limit = ratelimit(response, policy)
    assert quota == {"q": burst, "w": window}
    assert set(limit) == {"r", "t"}
    assert 0 <= limit["r"] < burst
    assert 0 < limit["t"] <= window  # a token was spent: the bucket is not full
    return int(limit["r"])


def assert_rate_limited(response: httpx.Response, policy: str, *, burst: int, window: int) -> int:
    """A 429 ``rate-limited`` problem with the policy's fields; its ``Retry-After``."""
    assert_problem(response, 429, "rate-limited")
    assert "no-store" in response.headers.get("cache-control", "")
    wait = retry_after(response)
    quota, limit = ratelimit(response, policy)
    assert quota == {"q": burst, "w": window}
    assert limit == {"r": 0, "t": wait}  # t is the Retry-After delay when refused
    assert wait <= window
    return wait


def assert_locked(response: httpx.Response) -> int:
    """The token endpoint's lockout: 429 ``rate-limited`` with ``Retry-After``."""
    body = assert_problem(response, 429, "rate-limited")
    assert "access_token" not in body
    assert "no-store" in response.headers.get("cache-control", "")
    return retry_after(response)


def next_audit_index(node: Node) -> int:
    entries = node.audit_actions()
    return entries[-1][0] + 1 if entries else 0


def token_actions(node: Node, since: int) -> list[str]:
    return [action for _, action, _ in node.audit_actions(since) if action.startswith("token.")]


def full_app(node: Node, name: str) -> App:
    return node.add_app(name, "publish:>", "subscribe:>", "messages:read")


def sha32(text: str) -> str:
    """The lockout stores' key for a client id or an address (``lockout._storage_key``)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- the module's node --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def node(module_node_factory: NodeFactory) -> Node:
    """Small app and subscriber buckets, lockout after 3 failures (1 s doubling to 4 s).

    Each test uses apps and recipients of its own: buckets and lockouts are per app, per
    (tenant, recipient) and per client id. Nothing here trips the (default, very high)
    address threshold.
    """
    return module_node_factory(
        name="limits",
        HERALD_RATE_LIMIT_APP_RATE=str(APP_RATE),
        HERALD_RATE_LIMIT_APP_BURST=str(APP_BURST),
        HERALD_RATE_LIMIT_SUBSCRIBER_RATE=str(SUB_RATE),
        HERALD_RATE_LIMIT_SUBSCRIBER_BURST=str(SUB_BURST),
        HERALD_LOCKOUT_THRESHOLD=str(THRESHOLD),
        HERALD_LOCKOUT_BASE=str(BASE),
        HERALD_LOCKOUT_CAP=str(CAP),
    )


APP_WINDOW = 15  # ceil(APP_BURST / APP_RATE)
SUB_WINDOW = 200  # ceil(SUB_BURST / SUB_RATE)


# -- per app ----------------------------------------------------------------------------------
def test_app_bucket_admits_its_burst_then_refuses_without_storing(node: Node) -> None:
    app = full_app(node, "burst")
    token = node.token(app)  # the token endpoint spends no app tokens
    topic = unique("limits.app.")
    messages_before = node.db_count("messages")
    with node.client() as client:

        def publish(title: str) -> httpx.Response:
            body = {"topic": topic, "title": title}
            return client.post("/v1/messages", json=body, headers=bearer(token))

        remaining = [
            assert_admitted(publish(f"m{i}"), 202, "app", burst=APP_BURST, window=APP_WINDOW)
            for i in range(APP_BURST)
        ]
        assert remaining == [2, 1, 0]
        assert node.db_count("messages") == messages_before + APP_BURST

        mark = next_audit_index(node)
        refused = publish("one too many")
        assert_rate_limited(refused, "app", burst=APP_BURST, window=APP_WINDOW)
        # Reads spend from the same bucket.
        history = client.get(f"/v1/topics/{topic}/messages", headers=bearer(token))
        wait = assert_rate_limited(history, "app", burst=APP_BURST, window=APP_WINDOW)
        # Refused before anything else: nothing stored, nothing audited (not even a refusal).
        assert node.db_count("messages") == messages_before + APP_BURST
        assert node.audit_actions(mark) == []

        # Another app of the same tenant and node has a bucket of its own.
        other = node.token(full_app(node, "burst-other"))
        response = client.get(f"/v1/topics/{topic}/messages", headers=bearer(other))
        assert assert_admitted(response, 200, "app", burst=APP_BURST, window=APP_WINDOW) == 2
        assert len(response.json()["messages"]) == APP_BURST

        # A refusal spends nothing: after Retry-After the app is admitted again.
        time.sleep(wait)
        response = client.get(f"/v1/topics/{topic}/messages", headers=bearer(token))
        assert assert_admitted(response, 200, "app", burst=APP_BURST, window=APP_WINDOW) == 0
        titles = [m["title"] for m in response.json()["messages"]]
        assert sorted(titles) == ["m0", "m1", "m2"]


def test_unauthenticated_requests_carry_no_ratelimit_fields(node: Node) -> None:
    with node.client() as client:
        missing = client.get("/v1/topics/limits.x/messages")
        garbage = client.get("/v1/topics/limits.x/messages", headers=bearer("not-a-token"))
        health = client.get("/healthz")
    for response in (missing, garbage):
        assert_problem(response, 401, "invalid-token")
    for response in (missing, garbage, health):
        assert "ratelimit" not in response.headers
        assert "ratelimit-policy" not in response.headers


# -- per subscriber ---------------------------------------------------------------------------
def ws_url(node: Node, **params: str) -> str:
    base = node.url.replace("https://", "wss://", 1) + "/v1/stream"
    return f"{base}?{urlencode(params)}" if params else base


def ws_connect(node: Node, token: str | None = None, **params: str) -> Any:
    return connect(
        ws_url(node, **params),
        additional_headers=bearer(token) if token else {},
        ssl=node.ssl_context(),
        open_timeout=WAIT,
        close_timeout=2,
        compression=None,
    )


async def first_frame(ws: ClientConnection) -> dict[str, Any]:
    """The first frame other than a heartbeat."""
    async with asyncio.timeout(WAIT):
        while True:
            frame = json.loads(await ws.recv())
            assert isinstance(frame, dict), frame
            if frame.get("type") != "heartbeat":
                return frame


async def expect_ready(node: Node, token: str | None = None, **params: str) -> None:
    async with ws_connect(node, token, **params) as ws:
        frame = await first_frame(ws)
        assert frame["type"] == "ready", frame


async def read_until_closed(ws: ClientConnection) -> None:
    """Read frames (no ``ready``, no message) until the server closes or WAIT passes."""
    async with asyncio.timeout(WAIT):
        while True:
            frame = json.loads(await ws.recv())
            assert frame.get("type") not in {"ready", "message"}, frame


async def expect_closed(node: Node, code: int, token: str) -> None:
    """The server closes the connection with ``code`` before any ``ready``."""
    async with ws_connect(node, token) as ws:
        with pytest.raises(ConnectionClosed):
            await read_until_closed(ws)
        assert ws.close_code == code, (ws.close_code, ws.close_reason)


async def test_subscriber_bucket_limits_tickets_and_streams(node: Node) -> None:
    app = full_app(node, "subscribers")
    access = node.token(app)
    prefix = unique("t")
    async with node.async_client() as client:

        async def subscriber_token(recipient: str) -> str:
            response = await client.post(
                "/v1/subscriber-tokens",
                json={"recipient": recipient, "topics": [f"{prefix}.>"]},
                headers=bearer(access),
            )
            assert response.status_code == 201, response.text
            return str(response.json()["token"])

        async def ticket(token: str) -> httpx.Response:
            return await client.post("/v1/stream-tickets", headers=bearer(token))

        alice = await subscriber_token(unique("alice-"))
        bob = await subscriber_token(unique("bob-"))

        tickets: list[str] = []
        remaining: list[int] = []
        for _ in range(SUB_BURST):
            response = await ticket(alice)
            remaining.append(
                assert_admitted(response, 201, "subscriber", burst=SUB_BURST, window=SUB_WINDOW)
            )
            tickets.append(str(response.json()["ticket"]))
        assert remaining == [1, 0]
        refused = await ticket(alice)
        assert_rate_limited(refused, "subscriber", burst=SUB_BURST, window=SUB_WINDOW)
        assert "ticket" not in refused.json()

        # A stream connection with the token spends from the same bucket.
        await expect_closed(node, 4429, alice)
        sse = await client.get(
            "/v1/stream/sse", headers={**bearer(alice), "Accept": "text/event-stream"}
        )
        assert_rate_limited(sse, "subscriber", burst=SUB_BURST, window=SUB_WINDOW)
        # A ticket was paid for when it was issued: redeeming it spends nothing.
        await expect_ready(node, ticket=tickets[0])

        # Another recipient of the same app has a bucket of its own.
        response = await ticket(bob)
        assert assert_admitted(response, 201, "subscriber", burst=SUB_BURST, window=SUB_WINDOW) == 1
        await expect_ready(node, bob)  # spends bob's last token …
        await expect_closed(node, 4429, bob)  # … so the next connection is refused


# -- lockout by client id ---------------------------------------------------------------------
def test_client_id_lockout_backs_off_exponentially(node: Node) -> None:
    app = node.add_app("lockout", "publish:>")
    wrong = "not-" + app.client_secret
    with node.client() as client:

        def attempt(secret: str) -> httpx.Response:
            return client.post("/oauth/token", data=FORM, auth=(app.client_id, secret))

        def fail_until_locked() -> None:
            """THRESHOLD wrong secrets: each an ordinary 401 (the count starts at 0)."""
            for _ in range(THRESHOLD):
                assert_problem(attempt(wrong), 401, "invalid-client")

        fail_until_locked()
        # Locked: even the right secret is refused, before it is compared or audited.
        mark = next_audit_index(node)
        wait = assert_locked(attempt(app.client_secret))
        assert wait <= BASE
        assert_locked(attempt(wrong))  # does not count: the lock does not grow
        assert token_actions(node, mark) == []

        time.sleep(wait)
        assert attempt(app.client_secret).status_code == 200
        assert token_actions(node, mark) == ["token.issued"]

        # The success cleared the count: it takes THRESHOLD failures again (with the old
        # count kept, the first of them would already lock, for 2 * BASE).
        fail_until_locked()
        waits = [assert_locked(attempt(app.client_secret))]
        for _ in range(3):
            time.sleep(waits[-1])
            assert_problem(attempt(wrong), 401, "invalid-client")
            waits.append(assert_locked(attempt(app.client_secret)))
        # BASE, doubled per further failure: 1, 2, 4, then capped at 4 (not 8).
        assert waits[0] <= BASE < waits[1] <= 2 * BASE < waits[2] <= 4 * BASE == CAP, waits
        assert 2 * BASE < waits[3] <= CAP, waits


# -- lockout by address -----------------------------------------------------------------------
def test_address_lockout_spans_client_ids(node_factory: NodeFactory) -> None:
    node = node_factory(
        name="addr-lockout",
        HERALD_LOCKOUT_THRESHOLD="1000",
        HERALD_LOCKOUT_ADDRESS_THRESHOLD="4",
        HERALD_LOCKOUT_BASE="1",
        HERALD_LOCKOUT_CAP="4",
    )
    app = node.demo
    with node.client() as client:

        def guess() -> httpx.Response:
            """A wrong secret for a client id nobody has (a different one every time)."""
            return client.post("/oauth/token", data=FORM, auth=(unique("ghost-"), "guess"))

        def valid() -> httpx.Response:
            return client.post("/oauth/token", data=FORM, auth=(app.client_id, app.client_secret))

        for _ in range(4):
            assert_problem(guess(), 401, "invalid-client")
        # 4 failures from 127.0.0.1, one per client id: the address is locked for everyone.
        mark = next_audit_index(node)
        wait = assert_locked(valid())
        assert_locked(guess())
        assert token_actions(node, mark) == []

        time.sleep(wait)
        response = valid()
        assert response.status_code == 200, response.text
        # The app's success cleared its own client id only, not the address's count: one
        # more guess locks the address again.
        assert_problem(guess(), 401, "invalid-client")
        assert_locked(valid())
        assert token_actions(node, mark) == ["token.issued", "token.refused"]


# -- a cluster of two nodes sharing Redis -------------------------------------------------------
@pytest.fixture
def cluster(
    redis_url: str, pg_fresh_dsn: str, node_factory: NodeFactory
) -> Iterator[tuple[Node, Node]]:
    """Nodes a and b of one data dir, database and Redis, behind one public URL (a's).

    Afterwards deletes the Redis keys of the demo app (bucket, lockout, nonces) and the
    loopback address's lockout count unless it was there before.
    """
    port_a = node_factory.free_port()
    public_url = f"https://127.0.0.1:{port_a}"
    first = node_factory(
        name="limits-cluster",
        start=False,
        port=port_a,
        HERALD_DATABASE_URL=pg_fresh_dsn,
        HERALD_REDIS_URL=redis_url,
        HERALD_PUBLIC_URL=public_url,
        HERALD_RATE_LIMIT_APP_RATE="0.01",
        HERALD_RATE_LIMIT_APP_BURST="10",
        HERALD_LOCKOUT_THRESHOLD="3",
        HERALD_LOCKOUT_BASE="1",
        HERALD_LOCKOUT_CAP="4",
    )
    app = first.demo
    address_key = f"herald:lock:addr:{sha32(LOOPBACK)}"
    with redis.Redis.from_url(redis_url, socket_timeout=5.0) as r:
        address_key_existed = bool(r.exists(address_key))
    try:
        first.start()
        second = node_factory.peer(first)
        yield first, second
    finally:
        node_factory.stop_all()
        forget_redis_keys(redis_url, app.tenant, [app.client_id])
        if not address_key_existed:
            with redis.Redis.from_url(redis_url, socket_timeout=5.0) as r:
                r.delete(address_key)


async def spend_concurrently(node_a: Node, node_b: Node, token: str) -> list[httpx.Response]:
    """30 authenticated reads at once, alternating between the two nodes."""
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    async with httpx.AsyncClient(
        verify=node_a.ssl_context(), timeout=30.0, limits=limits
    ) as client:
        urls = [
            f"{(node_a, node_b)[i % 2].url}/v1/topics/limits.cluster/messages" for i in range(30)
        ]
        return await asyncio.gather(*(client.get(u, headers=bearer(token)) for u in urls))


def signed_token_request(node_a: Node, target: Node, secret: str) -> httpx.Request:
    """A token request of the demo app signed for the public URL (a's), sent to ``target``
    (as a load balancer would forward it)."""
    app = node_a.demo
    credentials = base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    with node_a.client(sign=False) as client:
        request = client.build_request(
            "POST", "/oauth/token", data=FORM, headers={"Authorization": f"Basic {credentials}"}
        )
    app.signer.sign(request)
    url = httpx.URL(target.url).copy_with(raw_path=request.url.raw_path)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host"}}
    return httpx.Request("POST", url, headers=headers, content=request.content)


@pytest.mark.postgres
@pytest.mark.redis
def test_cluster_nodes_share_buckets_and_lockouts(cluster: tuple[Node, Node]) -> None:
    node_a, node_b = cluster
    app = node_a.demo
    token = node_a.token()

    # -- one bucket for both nodes ------------------------------------------------------
    responses = asyncio.run(spend_concurrently(node_a, node_b, token))
    admitted = [r for r in responses if r.status_code != 429]
    # 10 tokens for both nodes together (+1 if a refill, 0.01/s, slipped in).
    assert 10 <= len(admitted) <= 11, [r.status_code for r in responses]
    for response in responses:
        if response.status_code == 429:
            assert_rate_limited(response, "app", burst=10, window=1000)
        else:
            assert_admitted(response, 200, "app", burst=10, window=1000)
    for node in (node_a, node_b):  # both nodes answered, and both refused some
        mine = [r.status_code for r in responses if str(r.request.url).startswith(node.url)]
        assert len(mine) == 15
        assert 429 in mine, mine
    with redis.Redis.from_url(REDIS_URL, socket_timeout=5.0) as r:
        assert r.exists(f"herald:rl:{bucket_key('app', app.client_id)}")

    # -- one lockout for both nodes -----------------------------------------------------
    lock_key = f"herald:lock:client:{sha32(app.client_id)}"
    with node_a.client(sign=False) as client:

        def attempt(target: Node, secret: str) -> httpx.Response:
            return client.send(signed_token_request(node_a, target, secret))

        for _ in range(3):
            assert_problem(attempt(node_a, "wrong"), 401, "invalid-client")
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5.0) as r:
            assert r.hget(lock_key, "failures") == b"3"
        # Locked on node b too, right secret or not.
        wait = assert_locked(attempt(node_b, app.client_secret))
        assert_locked(attempt(node_a, app.client_secret))
        time.sleep(wait)
        response = attempt(node_b, app.client_secret)
        assert response.status_code == 200, response.text
        # The success on b cleared the shared count.
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5.0) as r:
            assert not r.exists(lock_key)
        assert attempt(node_a, app.client_secret).status_code == 200
