"""One-time stream tickets for browsers, which cannot set headers on WebSocket/EventSource.

A ticket is 256 random bits, valid :data:`~herald.limits.STREAM_TICKET_TTL` seconds, and
redeemed at most once (``pop`` is atomic within the event loop). The embedded store keeps at
most ``capacity`` live tickets; when full it refuses new ones rather than evicting live ones.
In cluster mode tickets live in Redis (``SET NX EX``, redeemed with ``GETDEL``: atomic
across nodes), so a ticket issued by one node opens a stream on any other; Redis being
unreachable refuses tickets (503), never accepts them unchecked.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from herald.errors import ServiceUnavailable
from herald.state._redis import connect

__all__ = ["MemoryTicketStore", "RedisTicketStore", "TicketStore"]

#: Longest ticket text looked up (ours are 43 characters): no unbounded Redis keys.
_TICKET_MAX = 64

_T = TypeVar("_T")


class TicketStore(Protocol[_T]):
    """Issues and redeems single-use tickets carrying a payload."""

    async def issue(self, payload: _T, ttl: float) -> str:
        """Store ``payload`` under a fresh ticket valid for ``ttl`` seconds."""
        ...

    async def redeem(self, ticket: str) -> _T | None:
        """Return the payload once; None when unknown, used or expired."""
        ...

    async def close(self) -> None:
        """Release what the store holds."""
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

    async def close(self) -> None:
        """Forget every ticket."""
        self._items.clear()


class RedisTicketStore(Generic[_T]):
    """Tickets shared by every node through Redis; payloads encoded by the caller."""

    def __init__(
        self,
        redis: Any,
        *,
        encode: Callable[[_T], bytes],
        decode: Callable[[bytes], _T],
        prefix: str = "herald:ticket:",
    ) -> None:
        self._redis = redis
        self._encode = encode
        self._decode = decode
        self._prefix = prefix

    @classmethod
    def from_url(
        cls, url: str, *, encode: Callable[[_T], bytes], decode: Callable[[bytes], _T]
    ) -> RedisTicketStore[_T]:
        """A store on its own client of ``url``."""
        return cls(connect(url), encode=encode, decode=decode)

    async def issue(self, payload: _T, ttl: float) -> str:
        """Store ``payload`` under a fresh 256-bit ticket for ``ttl`` seconds."""
        ticket = secrets.token_urlsafe(32)
        try:
            await self._redis.set(
                self._prefix + ticket, self._encode(payload), nx=True, px=max(1, int(ttl * 1000))
            )
        except Exception as exc:
            raise ServiceUnavailable("the ticket store is unreachable; retry shortly") from exc
        return ticket

    async def redeem(self, ticket: str) -> _T | None:
        """Take the ticket (GETDEL: one redemption across all nodes); None when unknown."""
        if not ticket or len(ticket) > _TICKET_MAX:
            return None
        try:
            raw = await self._redis.getdel(self._prefix + ticket)
        except Exception as exc:
            raise ServiceUnavailable("the ticket store is unreachable; retry shortly") from exc
        return None if raw is None else self._decode(raw)

    async def close(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose()
