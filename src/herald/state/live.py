"""A node's short-lived view of credential state (apps, operators) and revoked token ids.

Read from the store and kept for :data:`CACHE_TTL` seconds, so that checking every token
against revocations costs no database read per request, and a revocation or a disabled
app takes effect on every node within that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from herald.core.lru import Lru
from herald.storage.base import Store

__all__ = ["CACHE_TTL", "LiveCheck"]

#: Seconds a node trusts what it read about an app or a token id.
CACHE_TTL = 1.0


class LiveCheck:
    """Cached answers to "is this app (operator) usable" and "was this token id revoked"."""

    def __init__(
        self, store: Store, *, clock: Callable[[], float] = time.monotonic, size: int = 100_000
    ) -> None:
        self._store = store
        self._clock = clock
        self._apps: Lru[str, tuple[float, bool, float | None]] = Lru(size)
        self._revoked: Lru[str, tuple[float, bool]] = Lru(size)

    async def app_state(self, app_id: str) -> tuple[bool, float | None]:
        """``(missing, tokens_not_before in epoch seconds or None)``.

        Disabling an app sets its ``tokens_not_before``; the ``disabled`` flag alone (a
        shredded tenant's apps) stops new tokens but lets live ones learn, with 410, that
        the content is gone.
        """
        now = self._clock()
        cached = self._apps.get(app_id)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        app = await self._store.get_app(app_id)
        missing = app is None
        not_before = _epoch(app.tokens_not_before) if app is not None else None
        self._apps.put(app_id, (now + CACHE_TTL, missing, not_before))
        return missing, not_before

    async def operator_state(self, operator_id: str) -> tuple[bool, float | None]:
        """``(missing or disabled, tokens_not_before in epoch seconds or None)``."""
        key = "op\x00" + operator_id  # never the same key as an app id
        now = self._clock()
        cached = self._apps.get(key)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        operator = await self._store.get_operator(operator_id)
        missing = operator is None or operator.disabled
        not_before = _epoch(operator.tokens_not_before) if operator is not None else None
        self._apps.put(key, (now + CACHE_TTL, missing, not_before))
        return missing, not_before

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
        self, *, app_id: str | None = None, operator_id: str | None = None, jti: str | None = None
    ) -> None:
        """Drop what this node cached about something it just changed."""
        if app_id is not None:
            self._apps.put(app_id, (0.0, False, None))
        if operator_id is not None:
            self._apps.put("op\x00" + operator_id, (0.0, False, None))
        if jti is not None:
            self._revoked.put(jti, (0.0, False))


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()
