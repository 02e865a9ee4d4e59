"""A node's short-lived view of credentials: apps, operators, keys, revoked token ids.

Read from the store and kept for :data:`CACHE_TTL` seconds, so that checking every token
against revocations costs no database read per request, and a revocation, a disabled
app or a revoked request-signing key takes effect on every node within that time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from herald.core.lru import Lru
from herald.storage.base import AppKeyRecord, Store

__all__ = ["CACHE_TTL", "LiveCheck"]

#: Seconds a node trusts what it read about an app or a token id.
CACHE_TTL = 1.0
#: Operators share the holders' cache under a prefix no app id can start with.
_OPERATOR_KEY = "op\x00"


class LiveCheck:
    """Cached answers to "is this app (operator) usable" and "was this token id revoked"."""

    def __init__(
        self, store: Store, *, clock: Callable[[], float] = time.monotonic, size: int = 100_000
    ) -> None:
        self._store = store
        self._clock = clock
        self._apps: Lru[str, tuple[float, bool, float | None]] = Lru(size)
        self._revoked: Lru[str, tuple[float, bool]] = Lru(size)
        self._keys: Lru[str, tuple[float, AppKeyRecord | None]] = Lru(size)

    async def app_state(self, app_id: str) -> tuple[bool, float | None]:
        """``(missing, tokens_not_before in epoch seconds or None)``.

        Disabling an app sets its ``tokens_not_before``; the ``disabled`` flag alone (a
        shredded tenant's apps) stops new tokens but lets live ones learn, with 410, that
        the content is gone.
        """

        async def load() -> tuple[bool, float | None]:
            app = await self._store.get_app(app_id)
            return app is None, _epoch(app.tokens_not_before) if app is not None else None

        return await self._holder_state(app_id, load)

    async def operator_state(self, operator_id: str) -> tuple[bool, float | None]:
        """``(missing or disabled, tokens_not_before in epoch seconds or None)``."""

        async def load() -> tuple[bool, float | None]:
            operator = await self._store.get_operator(operator_id)
            if operator is None:
                return True, None
            return operator.disabled, _epoch(operator.tokens_not_before)

        return await self._holder_state(_OPERATOR_KEY + operator_id, load)

    async def _holder_state(
        self, key: str, load: Callable[[], Awaitable[tuple[bool, float | None]]]
    ) -> tuple[bool, float | None]:
        """A credential holder's state from the cache, else ``load()`` (then cached)."""
        now = self._clock()
        cached = self._apps.get(key)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        missing, not_before = await load()
        self._apps.put(key, (now + CACHE_TTL, missing, not_before))
        return missing, not_before

    async def app_key(self, keyid: str) -> AppKeyRecord | None:
        """The request-signing key with this keyid (revoked ones too), or None."""
        now = self._clock()
        cached = self._keys.get(keyid)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._store.get_app_key(keyid)
        self._keys.put(keyid, (now + CACHE_TTL, found))
        return found

    async def revoked(self, jti: str) -> bool:
        """Whether ``jti`` was revoked."""
        now = self._clock()
        cached = self._revoked.get(jti)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._store.is_revoked(jti)
        self._revoked.put(jti, (now + CACHE_TTL, found))
        return found

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
            self._apps.put(app_id, (0.0, False, None))
        if operator_id is not None:
            self._apps.put(_OPERATOR_KEY + operator_id, (0.0, False, None))
        if jti is not None:
            self._revoked.put(jti, (0.0, False))


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()
