"""The one way the shared-state stores connect to Redis (cluster mode only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from herald import limits
from herald.core.grouping import GroupRunner

__all__ = ["PipelinedScript", "connect"]


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


class PipelinedScript:
    """A Lua script that concurrent callers run together: one pipeline, one round trip.

    Each call is still its own atomic script run on its own keys; only the network round
    trip (and redis-py's per-command work, the client being the limit here) is shared by
    the calls that arrive while a pipeline is in flight. A lone call runs at once.

    A call's Redis error is raised to that caller alone; a failed connection to every
    caller of the pipeline. Callers map both to their fail-closed refusal.
    """

    def __init__(self, client: Any, source: str) -> None:
        self._client = client
        self._script = client.register_script(source)
        self._runner: GroupRunner[tuple[list[str], list[Any]], Any] = GroupRunner(
            self._run, group_max=limits.REDIS_PIPELINE_MAX
        )

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """The script's reply for these keys and arguments."""
        return await self._runner.add((keys, args))

    async def _run(self, calls: list[tuple[list[str], list[Any]]]) -> Sequence[Any]:
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self._script(keys=keys, args=args)]
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            await self._script(keys=keys, args=args, client=pipe)
        return list(await pipe.execute(raise_on_error=False))
