"""A node's short-lived view of credentials: apps, operators, keys, revoked token ids.

Read from the store and kept for :data:`CACHE_TTL` seconds, so that checking every token
against revocations costs no database read per request, and a revocation, a disabled
app or a revoked request-signing key takes effect on every node within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from herald.core.lru import Lru
from herald.storage.base import AppKeyRecord, Store

__all__ = ["CACHE_TTL", "LiveCheck"]

#: Seconds a node trusts what it read about an app or a token id.
CACHE_TTL = 1.0
_V = TypeVar("_V")

#: Operators share the holders' cache under a prefix no app id can start with.
_OPERATOR_KEY = "op\x00"


class LiveCheck:
    """Cached answers: is this app (operator) usable, was this token id revoked, which key.

    Concurrent misses of one entry share one read (a node under load would otherwise send
    every request in flight to the database each time an entry expires).
    """

    def __init__(
        self, store: Store, *, clock: Callable[[], float] = time.monotonic, size: int = 100_000
    ) -> None:
        self._store = store
        self._clock = clock
        self._apps: Lru[str, tuple[float, tuple[bool, float | None]]] = Lru(size)
        self._revoked: Lru[str, tuple[float, bool]] = Lru(size)
        self._keys: Lru[str, tuple[float, AppKeyRecord | None]] = Lru(size)
        self._loading: dict[tuple[int, str], asyncio.Future[Any]] = {}

    async def _get(
        self, cache: Lru[str, tuple[float, _V]], key: str, load: Callable[[], Awaitable[_V]]
    ) -> _V:
        """``key``'s cached value, else ``load()``'s (shared by concurrent misses, cached).

        The read runs in a task of its own: a caller that is cancelled does not cancel the
        read the others wait for.
        """
        cached = cache.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        flight = (id(cache), key)
        running = self._loading.get(flight)
        if running is None:

            async def read() -> _V:
                started = self._clock()
                try:
                    value = await load()
                finally:
                    del self._loading[flight]
                cache.put(key, (started + CACHE_TTL, value))
                return value

            running = asyncio.ensure_future(read())
            running.add_done_callback(_retrieve)
            self._loading[flight] = running
        return cast("_V", await asyncio.shield(running))

    async def app_state(self, app_id: str) -> tuple[bool, float | None]:
        """``(missing, tokens_not_before in epoch seconds or None)``.

        Disabling an app sets its ``tokens_not_before``; the ``disabled`` flag alone (a
        shredded tenant's apps) stops new tokens but lets live ones learn, with 410, that
        the content is gone.
        """

        async def load() -> tuple[bool, float | None]:
            app = await self._store.get_app(app_id)
            return app is None, _epoch(app.tokens_not_before) if app is not None else None

        return await self._get(self._apps, app_id, load)

    async def operator_state(self, operator_id: str) -> tuple[bool, float | None]:
        """``(missing or disabled, tokens_not_before in epoch seconds or None)``."""

        async def load() -> tuple[bool, float | None]:
            operator = await self._store.get_operator(operator_id)
            if operator is None:
                return True, None
            return operator.disabled, _epoch(operator.tokens_not_before)

        return await self._get(self._apps, _OPERATOR_KEY + operator_id, load)

    async def app_key(self, keyid: str) -> AppKeyRecord | None:
        """The request-signing key with this keyid (revoked ones too), or None."""
        return await self._get(self._keys, keyid, lambda: self._store.get_app_key(keyid))

    async def revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked."""
        return await self._get(self._revoked, jti, lambda: self._store.is_revoked(jti))

    def forget(
        self,
        *,
        app_id: str | None = None,
        operator_id: str | None = None,
        jti: str | None = None,
        keyid: str | None = None,
    ) -> None:
        """Drop what this node cached about something it just changed."""
        if keyid is not None:
            self._keys.put(keyid, (0.0, None))
        if app_id is not None:
            self._apps.put(app_id, (0.0, (False, None)))
        if operator_id is not None:
            self._apps.put(_OPERATOR_KEY + operator_id, (0.0, (False, None)))
        if jti is not None:
            self._revoked.put(jti, (0.0, False))


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a failed read's error as seen (its callers got it, if any were left)."""
    if not task.cancelled():
        task.exception()


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()
