"""Three ``herald serve`` processes as one platform (issue 8): PostgreSQL + Redis.

The nodes share one data dir (master key, TLS), one database and one Redis, behind one
public URL (node a's, as behind a load balancer): a request signed for the public URL is
sent to whichever node the test picks, as the balancer would forward it.

- Subscribers spread over the nodes each receive every message published to any node,
  once, in per-topic order (the cluster bus orders by commit ``seq``).
- A subscriber moved to another node resumes with ``since`` without gaps or duplicates.
- A stream ticket issued by one node opens a stream on another; an idempotent publish
  retried on another node is one message.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import pytest
import websockets
from tests.api.conftest import forget_redis_keys

from herald.client import AsyncSubscriber, StreamMessage

if TYPE_CHECKING:  # the conftest's types, for readers and type checkers only
    from tests.api.conftest import Node, NodeFactory

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WAIT = 30.0  # seconds: the bound of every wait in this module
MESSAGES = 60  # published across the three nodes in the fan-out test


@pytest.fixture
def nodes(redis_url: str, pg_fresh_dsn: str, node_factory: NodeFactory) -> Iterator[list[Node]]:
    """Nodes a, b, c: a on the public URL, b and c peers of its data dir."""
    port = node_factory.free_port()
    first = node_factory(
        name="cluster3",
        start=False,
        port=port,
        HERALD_DATABASE_URL=pg_fresh_dsn,
        HERALD_REDIS_URL=redis_url,
        HERALD_PUBLIC_URL=f"https://127.0.0.1:{port}",
        HERALD_NODE_ID="a",
    )
    try:
        first.start()
        yield [
            first,
            node_factory.peer(first, HERALD_NODE_ID="b"),
            node_factory.peer(first, HERALD_NODE_ID="c"),
        ]
    finally:
        node_factory.stop_all()
        forget_redis_keys(redis_url, first.demo.tenant, [first.demo.client_id])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def routed(request: httpx.Request, node: Node) -> httpx.Request:
    """The same signed bytes, sent to ``node`` (as a load balancer forwards them)."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host"}}
    url = httpx.URL(node.url).copy_with(raw_path=request.url.raw_path)
    return httpx.Request(request.method, url, headers=headers, content=request.content)


async def publish_on(
    client: httpx.AsyncClient,
    public: Node,
    node: Node,
    token: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    request = client.build_request(
        "POST", "/v1/messages", json=body, headers={**bearer(token), **(headers or {})}
    )
    return await client.send(routed(public.demo.signer.sign(request), node))


async def subscriber_token(
    client: httpx.AsyncClient, token: str, recipient: str, pattern: str
) -> str:
    response = await client.post(
        "/v1/subscriber-tokens",
        json={"recipient": recipient, "topics": [pattern]},
        headers=bearer(token),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def collect(sub: AsyncSubscriber, count: int) -> list[StreamMessage]:
    received: list[StreamMessage] = []
    async with asyncio.timeout(WAIT):
        async for message in sub:
            received.append(message)
            if len(received) == count:
                break
    return received


def test_every_node_delivers_every_message_in_topic_order(nodes: list[Node]) -> None:
    public = nodes[0]
    prefix = "fan" + secrets.token_hex(6)
    token = public.token()

    async def scenario() -> None:
        async with public.async_client(timeout=30.0) as client:
            grant = await subscriber_token(client, token, "u-fan", f"{prefix}.>")
            subs = [AsyncSubscriber(node.url, grant, ca=node.ca, reconnect=False) for node in nodes]
            for sub in subs:
                await sub.__aenter__()
            try:
                readers = [asyncio.create_task(collect(sub, MESSAGES)) for sub in subs]
                await asyncio.sleep(0.5)  # every session registered with its hub

                async def publisher(index: int) -> list[dict[str, Any]]:
                    node = nodes[index]
                    sent = []
                    for n in range(MESSAGES // len(nodes)):
                        topic = f"{prefix}.{'xy'[n % 2]}"
                        response = await publish_on(
                            client, public, node, token, {"topic": topic, "title": f"{index}-{n}"}
                        )
                        assert response.status_code == 202, response.text
                        sent.append(response.json())
                    return sent

                batches = await asyncio.gather(*(publisher(i) for i in range(len(nodes))))
                received = await asyncio.gather(*readers)
            finally:
                for sub in subs:
                    await sub.__aexit__(None, None, None)
        published = [item for batch in batches for item in batch]
        expected = {p["id"] for p in published}
        by_topic: dict[str, list[int]] = {}
        for item in sorted(published, key=lambda p: p["audit"]["index"]):
            by_topic.setdefault(item["topic"], []).append(item["audit"]["index"])
        for node, got in zip(nodes, received, strict=True):
            ids = [m.id for m in got]
            assert len(ids) == len(set(ids)) == MESSAGES, node.url
            assert set(ids) == expected, node.url
            for topic, order in by_topic.items():
                assert [m.audit_index for m in got if m.topic == topic] == order, (node.url, topic)

    asyncio.run(scenario())


def test_a_subscriber_moved_to_another_node_resumes_without_gaps(nodes: list[Node]) -> None:
    public, b, c = nodes
    prefix = "move" + secrets.token_hex(6)
    token = public.token()

    async def scenario() -> None:
        async with public.async_client(timeout=30.0) as client:
            grant = await subscriber_token(client, token, "u-move", f"{prefix}.>")

            async def send(node: Node, n: int) -> str:
                response = await publish_on(
                    client, public, node, token, {"topic": f"{prefix}.t", "title": str(n)}
                )
                assert response.status_code == 202, response.text
                return str(response.json()["id"])

            async with AsyncSubscriber(b.url, grant, ca=b.ca, reconnect=False) as on_b:
                await asyncio.sleep(0.3)
                first = [await send(public, n) for n in range(3)]
                seen = await collect(on_b, 3)
            assert [m.id for m in seen] == first
            # While the subscriber is away, more messages go through other nodes.
            missed = [await send(c, n) for n in range(3, 6)]
            async with AsyncSubscriber(
                c.url, grant, ca=c.ca, since=seen[-1].id, reconnect=False
            ) as on_c:
                catching_up = asyncio.create_task(collect(on_c, 5))
                await asyncio.sleep(0.3)
                live = [await send(b, n) for n in range(6, 8)]
                resumed = await catching_up
            assert [m.id for m in resumed] == missed + live

    asyncio.run(scenario())


def test_a_ticket_from_one_node_opens_a_stream_on_another(nodes: list[Node]) -> None:
    public, b, _ = nodes
    prefix = "tk" + secrets.token_hex(6)
    token = public.token()

    async def scenario() -> None:
        async with public.async_client(timeout=30.0) as client:
            grant = await subscriber_token(client, token, "u-ticket", f"{prefix}.>")
            issued = await client.post("/v1/stream-tickets", headers=bearer(grant))
            assert issued.status_code == 201, issued.text
            ticket = issued.json()["ticket"]
        context = ssl.create_default_context(cafile=str(b.ca))
        url = b.url.replace("https://", "wss://") + "/v1/stream?" + urlencode({"ticket": ticket})
        async with websockets.connect(url, ssl=context, open_timeout=10) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert frame["type"] == "ready", frame
        # Single use across the cluster: the same ticket on node a is refused.
        url_a = (
            public.url.replace("https://", "wss://") + "/v1/stream?" + urlencode({"ticket": ticket})
        )
        async with websockets.connect(
            url_a, ssl=ssl.create_default_context(cafile=str(public.ca))
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4401

    asyncio.run(scenario())


def test_an_idempotent_retry_on_another_node_is_one_message(nodes: list[Node]) -> None:
    public, b, c = nodes
    token = public.token()
    key = "retry-" + secrets.token_hex(8)
    body = {"topic": "idem." + secrets.token_hex(4), "title": "once"}

    async def scenario() -> list[httpx.Response]:
        async with public.async_client(timeout=30.0) as client:
            headers = {"Idempotency-Key": key}
            return [
                await publish_on(client, public, node, token, body, headers=headers)
                for node in (b, c, public)
            ]

    first, *retries = asyncio.run(scenario())
    assert first.status_code == 202, first.text
    for retry in retries:
        assert retry.status_code == 202, retry.text
        assert retry.json()["id"] == first.json()["id"]
        assert retry.headers.get("idempotent-replayed") == "true"
