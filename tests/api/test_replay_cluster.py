"""Replay protection across restarts and across nodes (DESIGN §4 step 4).

- Embedded mode forgets its nonces on restart, so a node refuses requests signed before it
  started (``request-expired``).
- Cluster mode: two ``herald serve`` processes share one PostgreSQL database and one Redis;
  a nonce claimed on one node is claimed for both, and an unreachable Redis fails closed.

Each test starts its own servers (own data dir, own ports) and stops them whatever happens.
The cluster's nodes sit behind one public URL (``HERALD_PUBLIC_URL``, as behind a load
balancer): tokens and ``@target-uri`` are the same whichever node a request reaches.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
import redis
import tests.conftest as _root

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import App, Node, NodeFactory

PROBLEM = "urn:herald:problem:"
REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Nothing listens on port 1: the node's Redis is unreachable.
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
WINDOW = 300


service_unavailable = _root.service_unavailable
run_async = _root.run_async


# -- helpers ----------------------------------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique_topic() -> str:
    return f"replay.{secrets.token_hex(6)}"


def publish_request(client: httpx.Client | httpx.AsyncClient, token: str) -> httpx.Request:
    body = json.dumps({"topic": unique_topic(), "title": "replay"}).encode()
    return client.build_request(
        "POST",
        "/v1/messages",
        content=body,
        headers={**bearer(token), "Content-Type": "application/json"},
    )


def token_request(client: httpx.Client, app: App) -> httpx.Request:
    credentials = f"{app.client_id}:{app.client_secret}".encode()
    return client.build_request(
        "POST",
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(credentials).decode()},
    )


def copy_to(request: httpx.Request, base_url: str) -> httpx.Request:
    """The same bytes sent to another node (as a load balancer would forward them)."""
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.lower() not in {"host", "content-length"}
    }
    url = httpx.URL(base_url).copy_with(raw_path=request.url.raw_path)
    return httpx.Request(request.method, url, headers=headers, content=request.content)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"] == PROBLEM + slug, problem
    return problem


def pg_count(dsn: str, table: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608
        finally:
            await conn.close()

    return int(run_async(count))


# -- restart rule (embedded nonce store) --------------------------------------------------------
def test_request_signed_before_a_restart_is_expired(node_factory: NodeFactory) -> None:
    node = node_factory()
    app = node.demo
    with node.client(sign=False) as client:
        response = client.send(app.signer.sign(token_request(client, app)))
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        # Signed now, sent only after the restart: the new node's nonce store is empty.
        stale = app.signer.sign(publish_request(client, token))
    node.restart()
    before = node.db_count("messages")
    with node.client(sign=False) as client:
        problem = assert_problem(client.send(stale), 401, "request-expired")
        assert "started" in problem["detail"]
        assert node.db_count("messages") == before
        fresh = app.signer.sign(publish_request(client, token))
        response = client.send(fresh)
        assert response.status_code == 202, response.text
    assert node.db_count("messages") == before + 1


# -- two nodes sharing PostgreSQL and Redis ------------------------------------------------------
def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass
class Cluster:
    """Nodes started from one data dir (master key, TLS) against one database and Redis."""

    first: Node  # initialised with the public URL (its port), started as node "a"
    factory: NodeFactory
    dsn: str
    redis_url: str
    started: dict[str, Node] = field(default_factory=dict)  # by name, in start order

    @property
    def public_url(self) -> str:
        return self.first.url

    @property
    def app(self) -> App:
        return self.first.demo

    @property
    def nodes(self) -> dict[str, str]:
        """Name -> base URL of that node."""
        return {name: node.url for name, node in self.started.items()}

    def start(self, name: str, **extra: str) -> str:
        """Start node ``name`` (the first on the public URL, then peers); its base URL."""
        if self.started:
            node = self.factory.peer(self.first, **extra)
        else:
            assert not extra, "the first node runs with the cluster's own settings"
            self.first.start()
            node = self.first
        self.started[name] = node
        return node.url

    def stop_all(self) -> None:
        for node in reversed(self.started.values()):
            node.stop()

    def client(self) -> httpx.Client:
        return self.first.client(sign=False)

    def async_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        return self.first.async_client(sign=False, timeout=60.0, limits=limits)

    def token(self) -> str:
        with self.client() as client:
            response = client.send(self.app.signer.sign(token_request(client, self.app)))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def messages(self) -> int:
        return pg_count(self.dsn, "messages")

    def nonce_keys(self) -> list[bytes]:
        pattern = f"herald:nonce:{_glob_escape(self.app.tenant)}:*"
        prefix = f"herald:nonce:{self.app.tenant}:".encode()
        with redis.Redis.from_url(self.redis_url, socket_timeout=5.0) as client:
            return [k for k in client.scan_iter(match=pattern, count=1000) if k.startswith(prefix)]

    def delete_nonce_keys(self) -> None:
        keys = self.nonce_keys()
        if keys:
            with redis.Redis.from_url(self.redis_url, socket_timeout=5.0) as client:
                client.delete(*keys)


@pytest.fixture
def cluster(redis_url: str, pg_fresh_dsn: str, node_factory: NodeFactory) -> Iterator[Cluster]:
    """Nodes ``a`` and ``b``; more can be started with :meth:`Cluster.start`."""
    port_a = node_factory.free_port()
    public_url = f"https://127.0.0.1:{port_a}"
    first = node_factory(
        start=False,
        port=port_a,
        HERALD_DATABASE_URL=pg_fresh_dsn,
        HERALD_REDIS_URL=redis_url,
        HERALD_PUBLIC_URL=public_url,
    )
    assert first.url == public_url
    nodes = Cluster(first, node_factory, dsn=pg_fresh_dsn, redis_url=redis_url)
    try:
        nodes.start("a")
        nodes.start("b")
        yield nodes
    finally:
        nodes.stop_all()
        nodes.delete_nonce_keys()


@pytest.mark.postgres
@pytest.mark.redis
def test_nonce_claimed_on_one_node_is_claimed_on_the_other(cluster: Cluster) -> None:
    token = cluster.token()
    node_a, node_b = cluster.nodes["a"], cluster.nodes["b"]
    before = cluster.messages()
    expected_keys = set()
    with cluster.client() as client:
        for first, second in ((node_a, node_b), (node_b, node_a)):
            request = cluster.app.signer.sign(publish_request(client, token))
            accepted = client.send(copy_to(request, first))
            assert accepted.status_code == 202, (first, accepted.text)
            assert_problem(client.send(copy_to(request, second)), 401, "replayed-request")
            assert_problem(client.send(copy_to(request, first)), 401, "replayed-request")
            nonce = re.search(r';nonce="([^"]+)"', request.headers["signature-input"])
            assert nonce is not None
            keyid = cluster.app.signing_keyid
            expected_keys.add(f"herald:nonce:{cluster.app.tenant}:{keyid}:{nonce.group(1)}")
    assert cluster.messages() == before + 2
    # The claims live in Redis under DESIGN §4's key, with a TTL of twice the window.
    assert expected_keys <= {k.decode() for k in cluster.nonce_keys()}
    with redis.Redis.from_url(cluster.redis_url, socket_timeout=5.0) as client:
        for key in expected_keys:
            assert 0 < client.pttl(key) <= 2 * WINDOW * 1000


@pytest.mark.postgres
@pytest.mark.redis
async def test_identical_requests_across_both_nodes_store_one_message(cluster: Cluster) -> None:
    token = cluster.token()
    before = cluster.messages()
    async with cluster.async_client() as client:
        request = cluster.app.signer.sign(publish_request(client, token))
        nodes = [cluster.nodes["a"], cluster.nodes["b"]]
        copies = [copy_to(request, nodes[i % 2]) for i in range(100)]
        responses = await asyncio.gather(*(client.send(copy) for copy in copies))
    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == 1, sorted(set(statuses))
    for response in responses:
        if response.status_code != 202:
            assert_problem(response, 401, "replayed-request")
    assert cluster.messages() == before + 1


@pytest.mark.postgres
@pytest.mark.redis
def test_unreachable_redis_fails_closed(cluster: Cluster) -> None:
    token = cluster.token()
    node_c = cluster.start("c", HERALD_REDIS_URL=DEAD_REDIS_URL)
    before = cluster.messages()
    with cluster.client() as client:
        request = cluster.app.signer.sign(publish_request(client, token))
        refused = client.send(copy_to(request, node_c))
        assert_problem(refused, 503, "unavailable")
        assert cluster.messages() == before
        # A token request needs a nonce too.
        signed_token_request = cluster.app.signer.sign(token_request(client, cluster.app))
        assert_problem(client.send(copy_to(signed_token_request, node_c)), 503, "unavailable")
        # Nothing was claimed by the refused attempt: a healthy node accepts the request.
        accepted = client.send(copy_to(request, cluster.nodes["a"]))
        assert accepted.status_code == 202, accepted.text
    assert cluster.messages() == before + 1
