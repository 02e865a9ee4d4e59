"""One-time stream tickets for browsers, which cannot set headers on WebSocket/EventSource.

A ticket is 256 random bits, valid :data:`~herald.limits.STREAM_TICKET_TTL` seconds, and
redeemed at most once (``pop`` is atomic within the event loop). The embedded store keeps at
most ``capacity`` live tickets; when full it refuses new ones rather than evicting live ones.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from herald.errors import ServiceUnavailable

__all__ = ["MemoryTicketStore", "TicketStore"]

_T = TypeVar("_T")


class TicketStore(Protocol[_T]):
    """Issues and redeems single-use tickets carrying a payload."""

    async def issue(self, payload: _T, ttl: float) -> str:
        """Store ``payload`` under a fresh ticket valid for ``ttl`` seconds."""
        ...

    async def redeem(self, ticket: str) -> _T | None:
        """Return the payload once; None when unknown, used or expired."""
        ...


class MemoryTicketStore(Generic[_T]):
    """In-process ticket store with TTL eviction and a capacity bound."""

    def __init__(self, *, clock: Callable[[], float], capacity: int = 100_000) -> None:
        self._clock = clock
        self._capacity = capacity
        # Insertion order equals expiry order when every ticket has the same TTL, so
        # eviction only ever looks at the head.
        self._items: OrderedDict[str, tuple[float, _T]] = OrderedDict()

    def _evict(self, now: float) -> None:
        while self._items:
            ticket, (expires, _) = next(iter(self._items.items()))
            if expires > now:
                break
            del self._items[ticket]

    async def issue(self, payload: _T, ttl: float) -> str:
        """Store ``payload`` under a fresh 256-bit ticket."""
        now = self._clock()
        self._evict(now)
        if len(self._items) >= self._capacity:
            raise ServiceUnavailable("too many outstanding stream tickets; retry shortly")
        ticket = secrets.token_urlsafe(32)
        self._items[ticket] = (now + ttl, payload)
        return ticket

    async def redeem(self, ticket: str) -> _T | None:
        """Pop the ticket; expired or unknown tickets give None."""
        item = self._items.pop(ticket, None)
        if item is None:
            return None
        expires, payload = item
        return payload if expires > self._clock() else None

    def __len__(self) -> int:
        return len(self._items)
