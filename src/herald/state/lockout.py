"""Login lockout with exponential back-off: failures per key (a client id, an address).

After ``threshold`` consecutive failures a key is locked for ``base`` seconds, doubling with
every further failure up to ``cap``; a success clears the key. While locked, the token
endpoint refuses *before* checking credentials, so a locked key costs neither an Argon2 /
hash comparison nor an audit entry — guessing gets slower, and failed guesses can no
longer fill the audit log.

The embedded store keeps counts in memory (bounded); the Redis store shares them between
nodes, using the Redis server's clock so that nodes with skewed clocks agree.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from herald.errors import ServiceUnavailable
from herald.state._redis import connect

__all__ = ["Lockout", "LockoutPolicy", "MemoryLockout", "RedisLockout", "locked_for"]


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """``threshold`` failures before the first lock of ``base`` s, doubling up to ``cap`` s."""

    threshold: int = 5
    base: float = 1.0
    cap: float = 900.0

    def __post_init__(self) -> None:
        if self.threshold < 1 or not 0 < self.base <= self.cap:
            raise ValueError("lockout needs threshold >= 1 and 0 < base <= cap")

    @property
    def forget_after(self) -> float:
        """Seconds after the last failure when the count is forgotten."""
        return self.cap * 2


def locked_for(policy: LockoutPolicy, failures: int, last: float, now: float) -> float:
    """Seconds the key stays locked at ``now`` (0: not locked)."""
    if failures < policy.threshold:
        return 0.0
    doublings = min(failures - policy.threshold, 64)
    delay = min(policy.cap, policy.base * math.pow(2, doublings))
    return max(0.0, last + delay - now)


class Lockout(Protocol):
    """Counts failures per key."""

    async def check(self, key: str) -> float:
        """Seconds the key is still locked (0: may try)."""
        ...

    async def failed(self, key: str) -> float:
        """Count a failure; returns the seconds the key is now locked."""
        ...

    async def succeeded(self, key: str) -> None:
        """Clear the key."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


def _storage_key(key: str) -> str:
    # Client ids and addresses come from the request: hash them to a bounded key.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class MemoryLockout:
    """In-process counts, at most ``max_keys`` (oldest forgotten first)."""

    def __init__(
        self,
        policy: LockoutPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._max_keys = max_keys
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()

    async def check(self, key: str) -> float:
        """Seconds the key is still locked (0: may try)."""
        found = self._counts.get(_storage_key(key))
        if found is None:
            return 0.0
        return locked_for(self.policy, found[0], found[1], self._clock())

    async def failed(self, key: str) -> float:
        """Count a failure; returns the seconds the key is now locked."""
        now = self._clock()
        name = _storage_key(key)
        failures, last = self._counts.pop(name, (0, now))
        if now - last > self.policy.forget_after:
            failures = 0
        failures += 1
        self._counts[name] = (failures, now)
        while len(self._counts) > self._max_keys:
            # Forgetting the oldest count can only unlock a key early, never lock one.
            self._counts.popitem(last=False)
        return locked_for(self.policy, failures, now, now)

    async def succeeded(self, key: str) -> None:
        """Clear the key."""
        self._counts.pop(_storage_key(key), None)

    async def close(self) -> None:
        """Nothing to release."""


class RedisLockout:
    """Counts in Redis (``<prefix><hash>`` hashes of ``failures`` and ``last``), shared by nodes.

    Fails closed: Redis unavailable is :class:`ServiceUnavailable`, never "not locked".
    """

    def __init__(self, client: Any, policy: LockoutPolicy, *, prefix: str = "herald:lock:") -> None:
        self.policy = policy
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(
        cls, url: str, policy: LockoutPolicy, *, prefix: str = "herald:lock:"
    ) -> RedisLockout:
        """Connect lazily to ``url`` (``redis://…``) with short timeouts."""
        return cls(connect(url), policy, prefix=prefix)

    async def _now(self) -> float:
        seconds, micros = await self._client.time()
        return float(seconds) + float(micros) / 1e6

    async def check(self, key: str) -> float:
        """Seconds the key is still locked (0: may try)."""
        try:
            now = await self._now()
            failures, last = await self._client.hmget(
                self._prefix + _storage_key(key), "failures", "last"
            )
            if failures is None or last is None:
                return 0.0
            return locked_for(self.policy, int(failures), float(last), now)
        except (RedisError, OSError, ValueError, TypeError):
            raise _unavailable() from None

    async def failed(self, key: str) -> float:
        """Count a failure atomically (MULTI/EXEC); returns the seconds now locked."""
        name = self._prefix + _storage_key(key)
        ttl = math.ceil(self.policy.forget_after * 1000)
        try:
            now = await self._now()
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hincrby(name, "failures", 1)
                pipe.hset(name, "last", repr(now))
                pipe.pexpire(name, ttl)
                failures, _, _ = await pipe.execute()
        except (RedisError, OSError, ValueError, TypeError):
            raise _unavailable() from None
        return locked_for(self.policy, int(failures), now, now)

    async def succeeded(self, key: str) -> None:
        """Clear the key."""
        try:
            await self._client.delete(self._prefix + _storage_key(key))
        except (RedisError, OSError, ValueError, TypeError):
            raise _unavailable() from None

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("the shared lockout store is unavailable; try again shortly")
