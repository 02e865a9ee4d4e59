"""The one way the shared-state stores connect to Redis (cluster mode only)."""

from __future__ import annotations

from typing import Any

__all__ = ["connect"]


def connect(url: str) -> Any:
    """A lazily connecting ``redis.asyncio.Redis`` for ``url`` with short timeouts.

    A blocking pool: a burst beyond the pool size waits (≤ 2 s) for a connection instead of
    failing with "too many connections" as the default pool does. The client owns the pool
    (``from_pool``), so ``aclose()`` also closes its connections.
    """
    import redis.asyncio as redis  # noqa: PLC0415 - only cluster mode needs the client

    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=64,
        timeout=2.0,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
    )
    return redis.Redis.from_pool(pool)
