"""The cluster bus (``herald.bus.redis``) on a real Redis: order, loss, duplicates, failure.

The database's part — which (seq, id) pairs are committed, and framing a message from
storage — is played by a list of committed seqs and a loader over it (the store's side of
that contract is pinned in test_store_contract.py). Each test uses a Pub/Sub channel of its
own.

Pub/Sub channels are global to a Redis server, not per database number, so two deployments
sharing one Redis hear each other's announcements, with colliding seqs: a node must emit the
message *its* database committed under a seq, never a foreign frame with the same seq.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError
from tests.conftest import service_unavailable

from herald.bus.base import LiveMessage
from herald.bus.redis import GRACE, RedisBus

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 10.0  # seconds: the bound of every wait here


def message(seq: int, message_id: str | None = None) -> LiveMessage:
    frame = f'{{"type":"message","seq":{seq}}}'
    return LiveMessage(
        tenant_id="tnt_test",
        topic="bus.test",
        seq=seq,
        id=message_id or f"id-{seq}",
        recipients=(),
        frame=frame,
        sse=b"data: " + frame.encode() + b"\n\n",
        published_at=0.0,
    )


@dataclass
class Committed:
    """The database's answers: committed seqs, and frames loaded from storage."""

    seqs: list[int] = field(default_factory=list)
    loads: list[list[int]] = field(default_factory=list)
    unframeable: set[int] = field(default_factory=set)

    async def index(self, after: int, limit: int) -> list[tuple[int, str]]:
        return [(s, f"id-{s}") for s in sorted(s for s in self.seqs if s > after)][:limit]

    async def load(self, seqs: list[int]) -> list[LiveMessage]:
        self.loads.append(list(seqs))
        return [message(s) for s in seqs if s not in self.unframeable]


@dataclass
class Node:
    bus: RedisBus
    received: list[LiveMessage] = field(default_factory=list)

    async def wait_for(self, count: int) -> list[int]:
        async with asyncio.timeout(WAIT):
            while len(self.received) < count:
                await asyncio.sleep(0.01)
        return [m.seq for m in self.received]


def client(url: str = REDIS_URL) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


@pytest.fixture
async def channel() -> str:
    probe = client()
    try:
        await probe.ping()
    except (RedisError, OSError) as exc:
        service_unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        await probe.aclose()
    return f"herald-test:bus:{secrets.token_hex(8)}"


@pytest.fixture
async def nodes(channel: str) -> AsyncIterator[tuple[Committed, list[Node]]]:
    """The committed log and two started nodes on one channel."""
    committed = Committed()
    made = []
    for _ in range(2):
        bus = RedisBus(
            client(), index=committed.index, load=committed.load, start_after=0, channel=channel
        )
        node = Node(bus)
        bus.subscribe(node.received.append)
        await bus.start()
        made.append(node)
    await asyncio.sleep(0.2)  # both readers subscribed
    try:
        yield committed, made
    finally:
        for node in made:
            await node.bus.close()


async def test_every_node_emits_in_commit_order_whatever_the_arrival_order(
    nodes: tuple[Committed, list[Node]],
) -> None:
    committed, (a, b) = nodes
    committed.seqs += [1, 3, 5]
    # Published by different nodes in another order than committed.
    await b.bus.publish([message(5)])
    await a.bus.publish([message(1)])
    await b.bus.publish([message(3)])
    for node in (a, b):
        assert await node.wait_for(3) == [1, 3, 5]
    assert committed.loads == []  # every frame came over Redis, none from storage


async def test_a_lost_frame_is_loaded_from_storage_after_the_grace(
    nodes: tuple[Committed, list[Node]],
) -> None:
    committed, (a, b) = nodes
    committed.seqs += [1, 2]
    await a.bus.publish([message(2)])  # the frame of 1 never comes
    loop = asyncio.get_running_loop()
    started = loop.time()
    for node in (a, b):
        assert await node.wait_for(2) == [1, 2]
    assert loop.time() - started >= GRACE * 0.9  # it waited for 1 before loading it
    assert all(1 in loaded for loaded in committed.loads)
    assert a.bus.cursor == b.bus.cursor == 2


async def test_duplicates_and_old_frames_are_emitted_once(
    nodes: tuple[Committed, list[Node]],
) -> None:
    committed, (a, b) = nodes
    committed.seqs += [1, 2]
    await a.bus.publish([message(1), message(2)])
    assert await b.wait_for(2) == [1, 2]
    await a.bus.publish([message(1), message(2)])  # again: below the cursor
    committed.seqs.append(3)
    await b.bus.publish([message(3)])
    assert await b.wait_for(3) == [1, 2, 3]
    await asyncio.sleep(0.3)
    assert [m.seq for m in b.received] == [1, 2, 3]
    assert [m.seq for m in a.received] == [1, 2, 3]


async def test_an_unframeable_message_is_skipped_not_blocking(
    nodes: tuple[Committed, list[Node]],
) -> None:
    committed, (a, _) = nodes
    committed.seqs += [1, 2]
    committed.unframeable.add(1)  # e.g. its tenant was shredded
    await a.bus.publish([message(2)])
    assert await a.wait_for(1) == [2]


async def test_publishing_never_fails_and_polling_delivers_without_redis(
    channel: str, nodes: tuple[Committed, list[Node]]
) -> None:
    committed, (a, _) = nodes
    dead = RedisBus(
        client("redis://127.0.0.1:1/0"),
        index=committed.index,
        load=committed.load,
        start_after=0,
        channel=channel,
    )
    try:
        committed.seqs.append(1)
        await dead.publish([message(1)])  # committed already: must not raise
        assert dead.publish_failures == 1
        assert dead.published == 0
    finally:
        await dead.close()
    # The healthy nodes never saw a frame: their poll finds the commit and loads it.
    assert await a.wait_for(1) == [1]
    assert committed.loads


async def test_a_node_starting_later_begins_after_what_was_committed(channel: str) -> None:
    committed = Committed(seqs=[1, 2, 3])
    bus = RedisBus(
        client(), index=committed.index, load=committed.load, start_after=3, channel=channel
    )
    node = Node(bus)
    bus.subscribe(node.received.append)
    await bus.start()
    try:
        await asyncio.sleep(0.2)
        committed.seqs.append(4)
        await bus.publish([message(4)])
        assert await node.wait_for(1) == [4]
    finally:
        await bus.close()


async def test_a_foreign_frame_with_our_seq_is_never_emitted(channel: str) -> None:
    ours, theirs = Committed(), Committed()
    node = RedisBus(client(), index=ours.index, load=ours.load, start_after=0, channel=channel)
    other = RedisBus(client(), index=theirs.index, load=theirs.load, start_after=0, channel=channel)
    emitted = Node(node)
    node.subscribe(emitted.received.append)
    await node.start()
    try:
        await asyncio.sleep(0.2)  # the reader has subscribed
        # Another deployment on the same Redis announces its seq 1 first ...
        await other.publish([message(1, "theirs-1")])
        await asyncio.sleep(0.2)
        # ... then our database commits seq 1, and our own announcement is lost.
        ours.seqs.append(1)
        assert await emitted.wait_for(1) == [1]
        assert [m.id for m in emitted.received] == ["id-1"]  # ours, loaded from storage
        assert node.foreign == 1
    finally:
        await node.close()
        await other.close()
