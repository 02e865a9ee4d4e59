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
- :class:`RedisNonceStore` (cluster mode): ``SET key 1 NX PX ttl`` — atomic in Redis,
  never check-then-set. If Redis is unreachable the claim fails closed (503).

Redis restarted without persistence (or flushed, or the keys evicted) forgets its claims
too, behind every node's back. So the Redis store keeps an *epoch*: the key
``<prefix>nonce-epoch`` holds the first whole second (Redis ``TIME``, rounded up) from which
the store vouches for its claims. It is written when missing — at node start and by the
first claim after a reset — and each claim compares the signature's ``created`` with it in
the same Lua script as the ``SET NX``, so no claim slips between a reset and the check. A
request signed before the epoch is refused (``request-expired``), exactly as an embedded
node refuses requests signed before it started. Requests signed in the second of the reset
are refused as well; clients sign again.

Residual risk, shared with the embedded rule: a signature dated *ahead* of the clock (up to
the replay window, allowed for clock skew) that was claimed before the reset carries a
``created`` after the epoch and is not caught by it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from herald.errors import RequestExpired, ServiceUnavailable
from herald.state._redis import PipelinedScript, connect

__all__ = [
    "EPOCH_KEY",
    "MemoryNonceStore",
    "NonceStore",
    "RedisNonceStore",
    "assertion_key",
    "nonce_key",
]

#: The Redis key (after the prefix) of the store's epoch (see the module docstring).
EPOCH_KEY = "nonce-epoch"

# KEYS[1] the epoch, KEYS[2] the nonce; ARGV[1] TTL in ms, ARGV[2] created (or "" for none).
# Returns -1 when created is before the epoch (nothing claimed), 1 when claimed, 0 if taken.
# TIME in a script is fine since Redis 5 (effects replication).
_CLAIM = """
local epoch = tonumber(redis.call('GET', KEYS[1]))
if not epoch then
  epoch = tonumber(redis.call('TIME')[1]) + 1
  redis.call('SET', KEYS[1], epoch)
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) < epoch then
  return -1
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return 1
end
return 0
"""
# Write the epoch if missing (a node starting); returns it.
_ENSURE_EPOCH = """
local epoch = tonumber(redis.call('GET', KEYS[1]))
if not epoch then
  epoch = tonumber(redis.call('TIME')[1]) + 1
  redis.call('SET', KEYS[1], epoch)
end
return epoch
"""


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

    async def claim(self, key: str, ttl: float, *, created: int | None = None) -> bool:
        """Atomically claim ``key`` for ``ttl`` seconds; False when already claimed.

        ``created`` is the signature's creation time: a store that can be reset behind the
        server's back (Redis) raises :class:`RequestExpired` for one made before its epoch.
        """
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

    async def claim(
        self,
        key: str,
        ttl: float,
        *,
        created: int | None = None,  # noqa: ARG002 - the Protocol's; not needed (see below)
    ) -> bool:
        """Claim ``key``; 503 when the store is full of live nonces.

        ``created`` is not needed: this store is reset only with its process, and the server
        refuses requests signed before it started (``Runtime.nonce_not_before``).
        """
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
        self._claim = PipelinedScript(client, _CLAIM)
        self._ensure_epoch = client.register_script(_ENSURE_EPOCH)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "herald:") -> RedisNonceStore:
        """Connect lazily to ``url`` (``redis://…``) with short timeouts."""
        return cls(connect(url), prefix=prefix)

    async def epoch(self) -> int | None:
        """The store's epoch (written if missing); None when Redis is unreachable.

        The server calls it at start, so that requests signed after a node started are not
        refused merely because the store's very first claim would have set the epoch.
        """
        from redis.exceptions import RedisError  # noqa: PLC0415

        try:
            return int(await self._ensure_epoch(keys=[self._prefix + EPOCH_KEY]))
        except (RedisError, OSError):
            return None

    async def claim(self, key: str, ttl: float, *, created: int | None = None) -> bool:
        """``SET key 1 NX PX ttl`` unless ``created`` is before the epoch; True if claimed.

        Raises:
            RequestExpired: ``created`` is before the epoch (Redis was reset since).
            ServiceUnavailable: Redis is unreachable (fail closed).
        """
        from redis.exceptions import RedisError  # noqa: PLC0415

        args = [int(ttl * 1000), "" if created is None else int(created)]
        try:
            result = await self._claim([self._prefix + EPOCH_KEY, self._prefix + key], args)
        except (RedisError, OSError):
            raise ServiceUnavailable(
                "replay protection is unavailable (Redis unreachable); request refused"
            ) from None
        if int(result) < 0:
            raise RequestExpired(
                "the request was signed before the replay-protection store was reset; sign it again"
            )
        return int(result) == 1

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
