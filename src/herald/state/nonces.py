"""Nonce stores: claim a request nonce exactly once (DESIGN §4 step 4).

``claim`` is atomic: of any number of concurrent claims of one key, exactly one returns
True. Claims expire after ``ttl`` (twice the replay window, so a nonce outlives every
signature that could carry it; for a client assertion's ``jti``, until its ``exp`` plus
the leeway).

- :class:`MemoryNonceStore` (embedded mode): a dict plus an insertion-ordered queue — O(1)
  claim, expired entries evicted from the head. It is bounded: when ``capacity`` live nonces
  are held it refuses new claims (503) rather than forgetting a live nonce, which would let
  a replay through. It forgets everything on restart, so the server refuses requests signed
  before it started (see ``check_freshness(not_before=…)``).
- :class:`RedisNonceStore` (cluster mode): one ``SET key 1 NX PX ttl`` — atomic in Redis,
  never check-then-set. If Redis is unreachable the claim fails closed (503).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from herald.errors import ServiceUnavailable
from herald.state._redis import connect

__all__ = ["MemoryNonceStore", "NonceStore", "RedisNonceStore", "assertion_key", "nonce_key"]


def nonce_key(tenant_id: str, keyid: str, nonce: str) -> str:
    """``nonce:<tenant>:<keyid>:<nonce>`` (DESIGN §4)."""
    return f"nonce:{tenant_id}:{keyid}:{nonce}"


def assertion_key(tenant_id: str, client_id: str, jti: str) -> str:
    """``jti:<tenant>:<client id>:<jti>``: a used RFC 7523 client assertion.

    Its own prefix, so that no request nonce can ever collide with an assertion's ``jti``.
    """
    return f"jti:{tenant_id}:{client_id}:{jti}"


class NonceStore(Protocol):
    """Claims single-use keys for a time."""

    #: True when the store forgets claims on restart (the server then refuses requests
    #: signed before it started).
    volatile: bool

    async def claim(self, key: str, ttl: float) -> bool:
        """Atomically claim ``key`` for ``ttl`` seconds; False when already claimed."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


class MemoryNonceStore:
    """In-process nonce store with TTL eviction and a hard capacity."""

    volatile = True

    def __init__(self, *, clock: Callable[[], float], capacity: int = 1_000_000) -> None:
        self._clock = clock
        self._capacity = capacity
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def _evict(self, now: float) -> None:
        # Every claim uses the same TTL in practice, so insertion order is expiry order and
        # only the head needs looking at; a longer-lived entry at the head merely delays
        # eviction of the ones behind it, it never drops a live one.
        expiry = self._expiry
        while expiry:
            key, expires = next(iter(expiry.items()))
            if expires > now:
                return
            del expiry[key]

    async def claim(self, key: str, ttl: float) -> bool:
        """Claim ``key``; 503 when the store is full of live nonces."""
        now = self._clock()
        self._evict(now)
        expires = self._expiry.get(key)
        if expires is not None and expires > now:
            return False
        if len(self._expiry) >= self._capacity:
            raise ServiceUnavailable("the replay-protection store is full; retry shortly")
        self._expiry[key] = now + ttl
        self._expiry.move_to_end(key)
        return True

    def __len__(self) -> int:
        return len(self._expiry)

    async def close(self) -> None:
        """Forget everything."""
        self._expiry.clear()


class RedisNonceStore:
    """Redis-backed nonce store shared by every node."""

    volatile = False

    def __init__(self, client: Any, *, prefix: str = "herald:") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "herald:") -> RedisNonceStore:
        """Connect lazily to ``url`` (``redis://…``) with short timeouts."""
        return cls(connect(url), prefix=prefix)

    async def claim(self, key: str, ttl: float) -> bool:
        """``SET key 1 NX PX ttl``: True only for the first claim."""
        from redis.exceptions import RedisError  # noqa: PLC0415

        try:
            result = await self._client.set(self._prefix + key, b"1", nx=True, px=int(ttl * 1000))
        except (RedisError, OSError):
            raise ServiceUnavailable(
                "replay protection is unavailable (Redis unreachable); request refused"
            ) from None
        return bool(result)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
