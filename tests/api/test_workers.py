"""``herald serve --workers N``: N processes on one port (SO_REUSEPORT) sharing Redis.

Each worker is a node of its own (live fan-out over the Redis bus, nonces and limits in
Redis); the supervisor stops them all on SIGTERM, and stops the others when one dies.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest
import redis
from tests.api.conftest import forget_redis_keys, run_cli
from websockets.asyncio.client import connect

from herald.core.nodes import NODE_KEY_PREFIX

if TYPE_CHECKING:
    from tests.api.conftest import Node, NodeFactory

pytestmark = [pytest.mark.redis]

WAIT = 30.0


@pytest.fixture
def workers(redis_url: str, node_factory: NodeFactory) -> Iterator[Node]:
    name = f"workers-{secrets.token_hex(4)}"  # the workers are <name>-w0 and <name>-w1
    node = node_factory(
        name="workers", HERALD_REDIS_URL=redis_url, HERALD_WORKERS="2", HERALD_NODE_ID=name
    )
    try:
        yield node
    finally:
        node.stop()
        forget_redis_keys(redis_url, node.demo.tenant, [node.demo.client_id])
        with redis.Redis.from_url(redis_url, socket_timeout=5.0) as r:
            r.delete(*(f"{NODE_KEY_PREFIX}{name}-w{n}" for n in range(2)))


def ssl_context(node: Node) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(node.ca))


def listening_children(node: Node) -> list[psutil.Process]:
    """The supervisor's worker processes that listen on the node's port."""
    assert node.process is not None
    port = int(node.env["HERALD_PORT"])
    found = []
    for child in psutil.Process(node.process.pid).children():
        try:
            ports = {c.laddr.port for c in child.net_connections() if c.status == "LISTEN"}
        except psutil.NoSuchProcess:
            continue
        if port in ports:
            found.append(child)
    return found


def test_several_workers_need_redis(node_factory: NodeFactory) -> None:
    node = node_factory(name="noredis", start=False)
    result = run_cli(node.env, "serve", "--workers", "2", check=False)
    assert result.returncode == 1
    assert "HERALD_REDIS_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_two_workers_share_the_port_and_every_subscriber_gets_every_message(
    workers: Node,
) -> None:
    assert len(listening_children(workers)) == 2
    token = workers.token()
    auth = {"Authorization": f"Bearer {token}"}
    ctx = ssl_context(workers)
    url = workers.url.replace("https://", "wss://", 1) + "/v1/stream?topics=work.%3E"
    async with workers.async_client() as client:
        tokens = []
        for n in range(8):
            response = await client.post(
                "/v1/subscriber-tokens",
                json={"recipient": f"w{n}", "topics": ["work.>"]},
                headers=auth,
            )
            assert response.status_code == 201, response.text
            tokens.append(response.json()["token"])
        # Eight connections: the kernel spreads them over the workers, and each must get
        # every message whichever worker took its publish.
        streams = [
            await connect(url, ssl=ctx, additional_headers={"Authorization": f"Bearer {t}"})
            for t in tokens
        ]
        try:
            for ws in streams:
                assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "ready"
            for n in range(6):
                async with workers.async_client() as fresh:  # a new connection each: spread
                    response = await fresh.post(
                        "/v1/messages", json={"topic": "work.done", "title": f"m{n}"}, headers=auth
                    )
                assert response.status_code == 202, response.text
            for ws in streams:
                titles = []
                while len(titles) < 6:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                    if frame["type"] == "message":
                        titles.append(frame["title"])
                assert sorted(titles) == [f"m{n}" for n in range(6)]
        finally:
            for ws in streams:
                await ws.close()


def test_a_dead_worker_stops_the_server(workers: Node) -> None:
    children = listening_children(workers)
    assert len(children) == 2
    children[0].send_signal(signal.SIGKILL)
    assert workers.process is not None
    code = workers.process.wait(timeout=WAIT)
    assert code != 0
    deadline = time.monotonic() + WAIT
    while children[1].is_running() and children[1].status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the other worker was not stopped"
        time.sleep(0.1)
    workers.process = None
    with pytest.raises(httpx.TransportError):
        httpx.get(workers.url + "/healthz", verify=ssl_context(workers), timeout=2.0)
