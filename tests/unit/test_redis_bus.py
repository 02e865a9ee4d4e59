"""The cluster bus's sequencer against a real Redis (herald.bus.redis).

Pub/Sub channels are global to a Redis server, not per database number, so two Herald
deployments sharing one Redis hear each other's announcements — with colliding seqs, since
each database numbers its own. A node must emit the message *its* database committed under
a seq, never a foreign frame that happens to carry the same seq.

The database side (``index``/``load``) is an in-memory stand-in: pure logic, the Redis side
is real. Runs against ``HERALD_TEST_REDIS_URL`` on a channel of its own; skips (or fails
under ``HERALD_REQUIRE_SERVICES=1``) without Redis.
"""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest
import redis.asyncio as redis
import tests.conftest as root
from redis.exceptions import RedisError

from herald.bus.base import LiveMessage
from herald.bus.redis import RedisBus
from herald.state._redis import connect

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 5.0  # seconds: the bound of every wait here


def live(seq: int, message_id: str, tenant: str) -> LiveMessage:
    frame = f'{{"type":"message","id":"{message_id}"}}'
    return LiveMessage(
        tenant_id=tenant,
        topic="t",
        seq=seq,
        id=message_id,
        recipients=(),
        frame=frame,
        sse=frame.encode(),
        published_at=0.0,
    )


class Database:
    """What one deployment's database committed: seq -> message."""

    def __init__(self) -> None:
        self.committed: dict[int, LiveMessage] = {}

    async def index(self, after: int, limit: int) -> list[tuple[int, str]]:
        return [(s, self.committed[s].id) for s in sorted(self.committed) if s > after][:limit]

    async def load(self, seqs: list[int]) -> list[LiveMessage]:
        return [self.committed[s] for s in seqs if s in self.committed]


async def test_a_foreign_frame_with_our_seq_is_never_emitted() -> None:
    try:
        probe = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        await probe.ping()
        await probe.aclose()
    except (RedisError, OSError) as exc:
        root.service_unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    channel = f"herald-test:bus:{secrets.token_hex(6)}"
    ours, theirs = Database(), Database()
    node = RedisBus(
        connect(REDIS_URL), index=ours.index, load=ours.load, start_after=0, channel=channel
    )
    other = RedisBus(
        connect(REDIS_URL), index=theirs.index, load=theirs.load, start_after=0, channel=channel
    )
    emitted: list[LiveMessage] = []
    node.subscribe(emitted.append)
    await node.start()
    try:
        await asyncio.sleep(0.3)  # the reader has subscribed
        # The other deployment commits and announces seq 1 first ...
        foreign = live(1, "theirs-1", "tenant-b")
        theirs.committed[1] = foreign
        await other.publish([foreign])
        await asyncio.sleep(0.3)  # ... and its frame reaches our node
        # ... then our database commits seq 1; our announcement is lost (say, Redis blipped).
        ours.committed[1] = live(1, "ours-1", "tenant-a")
        async with asyncio.timeout(WAIT):
            while not emitted:
                await asyncio.sleep(0.05)
        assert [m.id for m in emitted] == ["ours-1"]
        assert node.foreign == 1
        assert node.cursor == 1
    finally:
        await node.close()
        await other.close()
