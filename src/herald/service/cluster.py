"""A node's presence in the cluster, and what ``herald cluster status`` reads back.

Every node in cluster mode writes a heartbeat (:class:`~herald.core.nodes.Heartbeat`) to
``herald:node:<node name>`` in Redis every :data:`~herald.limits.NODE_HEARTBEAT_INTERVAL`
seconds with a TTL of :data:`~herald.limits.NODE_HEARTBEAT_TTL`, and removes it when it
shuts down gracefully; a SIGKILLed node's key simply runs out. The status command puts the
heartbeats next to the database: messages committed above each node's bus cursor (its
lag), the delivery queue, and leases whose node is gone. The pure parts (formatting, the
document) live in :mod:`herald.core.nodes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

from herald import __version__, limits
from herald.bus.redis import RedisBus
from herald.config import Settings
from herald.core.ids import default_generator
from herald.core.nodes import (
    NODE_KEY_PREFIX,
    BusCounters,
    Heartbeat,
    decode_heartbeat,
    encode_heartbeat,
    lease_owner,
    node_key,
    status_document,
)
from herald.errors import ConfigError, ServiceUnavailable
from herald.observability.logging import get_logger
from herald.service.runtime import Runtime, utcnow
from herald.state._redis import connect
from herald.storage.sql import SqlStore

__all__ = ["NodePresence", "cluster_status", "listen_url", "new_lease_owner"]

_log = get_logger("herald.cluster")

# Deletes the heartbeat only while it is still this process's (same incarnation): a node
# restarted under the same name must not lose the key its successor already wrote.
_DELETE_OWN = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, beat = pcall(cjson.decode, raw)
if ok and type(beat) == 'table' and beat['incarnation'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_lease_owner(settings: Settings) -> tuple[str, str]:
    """A fresh incarnation of this node, and the ``lease_owner`` it writes."""
    incarnation = secrets.token_hex(4)
    return lease_owner(settings.node_name, incarnation), incarnation


def listen_url(settings: Settings) -> str:
    """Where this node itself listens (the public URL may be a load balancer's)."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{settings.scheme}://{host}:{settings.port}"


class NodePresence:
    """The heartbeat of one node: call :meth:`run` as a background task, :meth:`stop` last.

    Args:
        rt: The node's runtime (its hub, bus and store are read for each beat).
        redis: A ``redis.asyncio.Redis`` client; closed by :meth:`stop`.
        owner: The node's ``lease_owner``.
        incarnation: Random per process start (see :func:`new_lease_owner`).
        clock: Unix seconds.
    """

    def __init__(
        self,
        rt: Runtime,
        redis: Any,
        *,
        owner: str,
        incarnation: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rt = rt
        self.redis = redis
        self.owner = owner
        self.incarnation = incarnation
        self.clock = clock
        self.key = node_key(rt.settings.node_name)
        self.beats = 0
        self.failures = 0

    @classmethod
    def for_runtime(cls, rt: Runtime, owner: str, incarnation: str) -> NodePresence:
        """The presence of a cluster-mode node (its own Redis connection pool)."""
        assert rt.settings.redis_url is not None  # noqa: S101 - cluster mode has Redis
        return cls(
            rt,
            connect(rt.settings.redis_url.get_secret_value()),
            owner=owner,
            incarnation=incarnation,
        )

    async def heartbeat(self) -> Heartbeat:
        """What this node says about itself now."""
        rt = self.rt
        settings = rt.settings
        bus = rt.bus
        counters = (
            BusCounters(
                cursor=bus.cursor,
                published=bus.published,
                publish_failures=bus.publish_failures,
                loaded=bus.loaded,
            )
            if isinstance(bus, RedisBus)
            else BusCounters(cursor=-1)
        )
        return Heartbeat(
            node=settings.node_name,
            incarnation=self.incarnation,
            version=__version__,
            public_url=settings.base_url,
            listen_url=listen_url(settings),
            pid=os.getpid(),
            started_at=rt.started_at,
            last_seen=self.clock(),
            streams=len(rt.hub),
            leases=await rt.store.count_leases(self.owner, utcnow()),
            lease_owner=self.owner,
            bus=counters,
        )

    async def beat(self) -> None:
        """Write one heartbeat (raises what Redis or the database raise)."""
        payload = encode_heartbeat(await self.heartbeat())
        ttl_ms = int(limits.NODE_HEARTBEAT_TTL * 1000)
        await self.redis.set(self.key, payload, px=ttl_ms)
        self.beats += 1

    async def run(self) -> None:
        """Beat every interval until cancelled; a failure is logged and retried next time."""
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis or the database down: next beat
                self.failures += 1
                _log.warning("heartbeat not written", error=type(exc).__name__)
            await asyncio.sleep(limits.NODE_HEARTBEAT_INTERVAL)

    async def stop(self) -> None:
        """Remove this node's heartbeat (if still its own) and close the connection."""
        try:
            await self.redis.eval(_DELETE_OWN, 1, self.key, self.incarnation)
        except Exception as exc:  # noqa: BLE001 - the key runs out on its own
            _log.warning("heartbeat not removed; it expires", error=type(exc).__name__)
        with contextlib.suppress(Exception):
            await self.redis.aclose()


async def read_heartbeats(redis: Any) -> list[Heartbeat]:
    """Every live heartbeat in Redis (at most :data:`~herald.limits.NODE_STATUS_MAX`)."""
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=NODE_KEY_PREFIX + "*", count=100):
        keys.append(key)
        if len(keys) >= limits.NODE_STATUS_MAX:
            break
    if not keys:
        return []
    beats = [decode_heartbeat(raw) for raw in await redis.mget(keys) if raw is not None]
    return [beat for beat in beats if beat is not None]


async def _heartbeats(settings: Settings) -> list[Heartbeat]:
    import redis.exceptions  # noqa: PLC0415 - only cluster mode needs the client

    assert settings.redis_url is not None  # noqa: S101 - cluster mode has Redis
    client = connect(settings.redis_url.get_secret_value())
    try:
        return await read_heartbeats(client)
    except (redis.exceptions.RedisError, OSError) as exc:
        # Never the URL: it may carry a password.
        raise ServiceUnavailable("Redis is unreachable (HERALD_REDIS_URL)") from exc
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


async def cluster_status(settings: Settings) -> dict[str, Any]:
    """The status document of the configured cluster (or embedded node).

    Reads Redis (cluster mode) and the database directly; never migrates it.

    Raises:
        ServiceUnavailable: Redis is unreachable.
        herald.errors.StorageError: The database is unreachable.
        ConfigError: An embedded node's database does not exist (``herald init`` first).
    """
    if not settings.database_url and not (settings.data_dir / "herald.db").exists():
        raise ConfigError(f"no database in {settings.data_dir}: run `herald init` first")
    beats = await _heartbeats(settings) if settings.cluster_mode else []
    store = await SqlStore.open(
        settings.sqlalchemy_url, new_id=default_generator().new_str, clock=utcnow, migrate=False
    )
    try:
        totals = await store.queue_totals(utcnow())
        latest = await store.last_message_seq()
        lags = {
            beat.node: await store.count_messages_after(beat.bus.cursor, limits.NODE_LAG_COUNT_MAX)
            for beat in beats
        }
    finally:
        await store.close()
    return status_document(
        cluster=settings.cluster_mode,
        local_node=settings.node_name,
        beats=beats,
        lags=lags,
        totals=totals,
        latest_seq=latest,
        now=time.time(),
    )
