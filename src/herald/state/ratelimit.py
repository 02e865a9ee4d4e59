"""Rate limits: token buckets, an embedded and a Redis limiter, and the RateLimit headers.

A :class:`Bucket` holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a
request spends ``cost`` tokens or is refused. Over any interval of ``T`` seconds a bucket
admits at most ``burst + rate·T`` tokens' worth of requests.

- :func:`take` is the pure core: state, ``now`` and cost in, decision and new state out. No
  I/O and no clock. A clock that steps back never refills (the bucket keeps its newest
  timestamp), so it can only ever admit less.
- :class:`MemoryRateLimiter` (embedded mode) keeps buckets in a bounded table. A full
  bucket and a missing bucket behave identically, so full buckets are dropped and only
  they are ever evicted; when the table holds ``max_keys`` buckets that are all still
  refilling it refuses new keys with 503 instead of forgetting one, which would hand that
  client a fresh burst.
- :class:`RedisRateLimiter` (cluster mode) runs the same arithmetic as one Lua script, atomic
  in Redis, on the Redis server's clock (``TIME``) so that nodes with skewed clocks share
  one bucket (needs Redis ≥ 5 for ``TIME`` before a write; this machine runs 7.0). Buckets
  live in a hash that expires when it would be full again. Redis unreachable or a bucket
  unreadable → 503, never "allow".
- :func:`headers` renders ``RateLimit-Policy`` / ``RateLimit`` as in
  draft-ietf-httpapi-ratelimit-headers-11 (structured-field lists), plus ``Retry-After``.

Storage keys are ``<policy>:k:<key>`` for short plain keys and ``<policy>:h:<sha256 hex>``
otherwise (:func:`bucket_key`), so client-chosen ids cannot make huge or odd keys.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from herald.errors import ServiceUnavailable
from herald.state._redis import PipelinedScript, connect

__all__ = [
    "BURST_MAX",
    "COST_MAX",
    "EPSILON",
    "KEY_PLAIN_MAX",
    "MEMORY_MAX_KEYS",
    "RATELIMIT_DRAFT",
    "RATE_MAX",
    "REFILL_MAX",
    "Bucket",
    "BucketState",
    "Decision",
    "MemoryRateLimiter",
    "Outcome",
    "RateLimiter",
    "RedisRateLimiter",
    "bucket_key",
    "headers",
    "take",
]

#: The draft whose field syntax :func:`headers` follows (23 May 2026).
RATELIMIT_DRAFT: Final = "draft-ietf-httpapi-ratelimit-headers-11"
#: Highest refill rate, tokens per second.
RATE_MAX: Final = 1e6
#: Largest bucket capacity.
BURST_MAX: Final = 10**9
#: Largest cost of one hit; costs are set by the server, so more is a programming error.
COST_MAX: Final = BURST_MAX
#: Longest time an empty bucket may take to refill (``burst / rate``): one year. Keeps every
#: header value within the 15 digits of a structured-field Integer and every TTL sane.
REFILL_MAX: Final = 366 * 86400.0
#: Float slack when comparing tokens with a cost: rounding must not refuse a client that
#: waited exactly as long as it was told. Tokens never go below zero, so this admits less
#: than a billionth of a token early per hit.
EPSILON: Final = 1e-9
#: Default capacity of the embedded limiter (a few hundred bytes per bucket).
MEMORY_MAX_KEYS: Final = 100_000
#: Keys up to this length made of ``[A-Za-z0-9._:@/+=-]`` are stored verbatim; others hashed.
KEY_PLAIN_MAX: Final = 128

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
_PLAIN_KEY = re.compile(rf"[A-Za-z0-9._:@/+=-]{{1,{KEY_PLAIN_MAX}}}")


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token-bucket policy: ``burst`` tokens, refilled at ``rate`` per second.

    Attributes:
        rate: Tokens added per second (> 0, at most :data:`RATE_MAX`).
        burst: Capacity, and the tokens a new bucket starts with (1 … :data:`BURST_MAX`).
        name: Policy name, ``[a-z0-9][a-z0-9_.-]{0,31}``: part of every storage key (two
            policies on one key never share tokens) and the RateLimit headers' identifier.
            A name should denote one (rate, burst); stored tokens above a lowered burst
            are clamped to it.
    """

    rate: float
    burst: int
    name: str = "default"

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, int | float):
            raise TypeError("rate must be a number")
        if not 0 < self.rate <= RATE_MAX:
            raise ValueError(f"rate must be in (0, {RATE_MAX:g}] tokens per second")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int):
            raise TypeError("burst must be an int")
        if not 1 <= self.burst <= BURST_MAX:
            raise ValueError(f"burst must be in [1, {BURST_MAX}]")
        if self.burst / self.rate > REFILL_MAX:
            raise ValueError(f"burst / rate must be at most {REFILL_MAX:g} seconds")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError("name must match [a-z0-9][a-z0-9_.-]{0,31}")

    @property
    def window(self) -> int:
        """Whole seconds to refill from empty (≥ 1): the ``w`` of ``RateLimit-Policy``."""
        return max(1, math.ceil(self.burst / self.rate))


@dataclass(frozen=True, slots=True)
class BucketState:
    """What is stored per key: ``tokens`` left as of ``stamp`` (seconds on the clock)."""

    tokens: float
    stamp: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of :func:`take`, in exact (float) seconds.

    Attributes:
        allowed: The hit was admitted and its cost spent.
        state: The bucket after the hit.
        remaining: Whole tokens left.
        retry_after: Seconds until a hit of this cost can pass: 0 when allowed,
            ``math.inf`` when the cost exceeds ``burst`` (it never can).
        reset: Seconds until the bucket is full again.
    """

    allowed: bool
    state: BucketState
    remaining: int
    retry_after: float
    reset: float


def _check_cost(cost: int) -> None:
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise TypeError("cost must be an int")
    if not 0 <= cost <= COST_MAX:
        raise ValueError(f"cost must be in [0, {COST_MAX}]")


def _outcome(
    bucket: Bucket, allowed: bool, tokens: float, *, stamp: float, now: float, cost: int
) -> Outcome:
    # After a backwards clock step the bucket refills only once the clock passes `stamp`.
    ahead = max(0.0, stamp - now)
    remaining = min(bucket.burst, max(0, math.floor(tokens + EPSILON)))
    if allowed:
        retry_after = 0.0
    elif cost > bucket.burst:
        retry_after = math.inf
    else:
        retry_after = ahead + (cost - tokens) / bucket.rate
    reset = ahead + max(0.0, bucket.burst - tokens) / bucket.rate
    return Outcome(allowed, BucketState(tokens, stamp), remaining, retry_after, reset)


def take(bucket: Bucket, state: BucketState | None, now: float, cost: int = 1) -> Outcome:
    """Spend ``cost`` tokens from a bucket at time ``now``, if it holds them.

    Args:
        bucket: The policy.
        state: The stored state, or None for a bucket never seen (it starts full).
        now: The current time in seconds on the clock ``state.stamp`` was taken from.
        cost: Tokens to spend; 0 only looks (always allowed, spends nothing).

    Returns:
        The decision and the state to store. A refused hit spends nothing.

    Raises:
        ValueError: ``now`` is not finite or ``cost`` is out of range.
    """
    _check_cost(cost)
    if not math.isfinite(now):
        raise ValueError("now must be finite")
    if state is None:
        tokens, stamp = float(bucket.burst), now
    else:
        tokens, stamp = state.tokens, state.stamp
        if now > stamp:  # never refill for a clock that stepped back: keep the newest stamp
            tokens += (now - stamp) * bucket.rate
            stamp = now
        tokens = min(tokens, float(bucket.burst))  # also clamps after the policy shrank
    allowed = tokens + EPSILON >= cost
    if allowed:
        tokens = max(0.0, tokens - cost)
    return _outcome(bucket, allowed, tokens, stamp=stamp, now=now, cost=cost)


@dataclass(frozen=True, slots=True)
class Decision:
    """What a limiter answers for one hit, in whole seconds for HTTP.

    Attributes:
        allowed: The request may proceed.
        limit: The bucket's ``burst``.
        remaining: Whole tokens left (floored).
        retry_after: 0 when allowed; when refused, seconds to wait (ceil, ≥ 1) — or None
            when the cost exceeds ``limit`` and no wait will ever do (answer 4xx, not 429).
        reset: Seconds until the bucket is full again (ceil).
        policy: The bucket's name.
        window: The bucket's :attr:`Bucket.window`.
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: int | None
    reset: int
    policy: str
    window: int

    @classmethod
    def of(cls, bucket: Bucket, outcome: Outcome) -> Decision:
        """Round an :class:`Outcome` of ``bucket`` to whole seconds (always upwards)."""
        retry: int | None
        if outcome.allowed:
            retry = 0
        elif math.isinf(outcome.retry_after):
            retry = None
        else:
            retry = max(1, math.ceil(outcome.retry_after))
        return cls(
            allowed=outcome.allowed,
            limit=bucket.burst,
            remaining=outcome.remaining,
            retry_after=retry,
            reset=math.ceil(outcome.reset),
            policy=bucket.name,
            window=bucket.window,
        )


def bucket_key(policy: str, key: str) -> str:
    """The storage key of ``key`` under ``policy``: bounded, and unambiguous.

    Short keys of safe characters stay readable (``<policy>:k:<key>``); anything else is
    SHA-256 hashed (``<policy>:h:<hex>``). The ``k``/``h`` marker keeps the two forms from
    colliding, and the policy name contains no ``:``.
    """
    if _PLAIN_KEY.fullmatch(key):
        return f"{policy}:k:{key}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{policy}:h:{digest}"


def headers(*decisions: Decision) -> dict[str, str]:
    """Response fields for one or more decisions (draft-ietf-httpapi-ratelimit-headers-11).

    ``RateLimit-Policy: "<name>";q=<burst>;w=<window>`` (§3): a client sending at most ``q``
    per ``w`` seconds, even all at once, is never refused. ``RateLimit: "<name>";r=<remaining>;
    t=<seconds>`` (§4): ``t`` is the time to a full bucket, or when refused the Retry-After
    delay, since Retry-After must not end before the effective window (§6). ``Retry-After``
    (RFC 9110 §10.2.3) is the longest wait of the refused decisions; it is left out when a
    refusal can never pass (a wait would be a lie). No ``pk``: partition keys could leak
    identifiers (§6.1).
    """
    if not decisions:
        raise ValueError("headers() needs at least one decision")
    policies: list[str] = []
    limits: list[str] = []
    waits: list[int] = []
    for decision in decisions:
        wait = None if decision.allowed else decision.retry_after
        effective = decision.reset if wait is None else wait
        # Names are [a-z0-9_.-] (Bucket validates), so they need no sf-string escaping.
        policies.append(f'"{decision.policy}";q={decision.limit};w={decision.window}')
        limits.append(f'"{decision.policy}";r={decision.remaining};t={effective}')
        if wait is not None:
            waits.append(wait)
    fields = {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(limits)}
    if waits:
        fields["Retry-After"] = str(max(waits))
    return fields


class RateLimiter(Protocol):
    """Spends tokens from per-key buckets."""

    #: True when every node sees the same buckets (the limit holds cluster-wide).
    shared: bool

    async def hit(self, key: str, bucket: Bucket, cost: int = 1) -> Decision:
        """Spend ``cost`` tokens of ``key``'s bucket, or refuse without spending."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...


class _Entry:
    __slots__ = ("evict_at", "seq", "state")

    def __init__(self, state: BucketState, evict_at: float, seq: int) -> None:
        self.state = state
        self.evict_at = evict_at
        self.seq = seq


class MemoryRateLimiter:
    """In-process limiter: a bounded table of buckets that only forgets full ones.

    A min-heap orders buckets by the time they are full again; each hit first drops the
    buckets that are full by now. A hit that leaves a bucket full stores nothing. When
    ``max_keys`` buckets are all still refilling, a new key gets
    :class:`~herald.errors.ServiceUnavailable` (with ``Retry-After``): evicting a bucket
    that is not full would let its client burst again.

    ``hit`` never awaits, so it is atomic within the event loop (not across threads). The
    clock (default ``time.monotonic``) is made monotonic here: a reading below the highest
    one seen counts as that highest one.
    """

    shared = False

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = MEMORY_MAX_KEYS
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        self._entries: dict[str, _Entry] = {}
        # (evict_at, seq, key); stale items (seq no longer the entry's) are skipped lazily.
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._last = -math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def _now(self) -> float:
        now = self._clock()
        if not math.isfinite(now):
            raise ValueError("the clock returned a non-finite time")
        self._last = max(self._last, now)
        return self._last

    def _drop_full(self, now: float) -> None:
        heap, entries = self._heap, self._entries
        while heap:
            evict_at, seq, name = heap[0]
            entry = entries.get(name)
            if entry is not None and entry.seq == seq:
                if evict_at > now:
                    return
                del entries[name]
            heapq.heappop(heap)

    def _store(self, name: str, entry: _Entry | None, outcome: Outcome, now: float) -> None:
        if outcome.reset <= 0:  # full: the same as no bucket at all
            if entry is not None:
                del self._entries[name]
            return
        evict_at = now + outcome.reset
        if entry is not None and evict_at <= entry.evict_at:
            # Full no later than already scheduled (a refused hit, float noise): keep the
            # later eviction time, which can only keep the bucket longer.
            entry.state = outcome.state
            return
        if entry is None and len(self._entries) >= self._max_keys:
            wait = max(1, math.ceil(self._heap[0][0] - now))  # _drop_full left a live head
            raise ServiceUnavailable(
                "the rate-limit table is full; retry shortly", headers={"Retry-After": str(wait)}
            )
        seq = next(self._seq)
        self._entries[name] = _Entry(outcome.state, evict_at, seq)
        heapq.heappush(self._heap, (evict_at, seq, name))
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(e.evict_at, e.seq, n) for n, e in self._entries.items()]
            heapq.heapify(self._heap)

    async def hit(self, key: str, bucket: Bucket, cost: int = 1) -> Decision:
        """Spend ``cost`` tokens of ``key``'s bucket; 503 when the table is full."""
        _check_cost(cost)
        name = bucket_key(bucket.name, key)
        now = self._now()
        self._drop_full(now)
        entry = self._entries.get(name)
        outcome = take(bucket, None if entry is None else entry.state, now, cost)
        self._store(name, entry, outcome, now)
        return Decision.of(bucket, outcome)

    async def close(self) -> None:
        """Forget every bucket."""
        self._entries.clear()
        self._heap.clear()


# KEYS[1]: the bucket's hash. ARGV: rate (tokens/s), burst, cost, epsilon.
# The arithmetic of take(), on the server's clock in integer microseconds (exact in a
# double until 2255). TIME before a write is allowed since Redis 5, which replicates a
# script's effects rather than the script. Only a hit that spends writes: refilling is
# implied by the stored stamp, so a flood of refused hits costs no writes or replication.
# Numbers are formatted with %.17g so that they round-trip (Redis would use 14 digits).
_LUA: Final = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local eps = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tokens, stamp = burst, now
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
if stored[1] or stored[2] then
  tokens = tonumber(stored[1])
  stamp = tonumber(stored[2])
  if tokens == nil or stamp == nil then
    return redis.error_reply('ERR corrupt rate-limit bucket')
  end
  if now > stamp then
    tokens = tokens + (now - stamp) * rate / 1000000
    stamp = now
  end
  if tokens > burst then tokens = burst end
end
local allowed = 0
if tokens + eps >= cost then
  allowed = 1
  tokens = math.max(0, tokens - cost)
end
if allowed == 1 and cost > 0 then
  local full_ms = math.ceil((math.max(0, stamp - now) + (burst - tokens) / rate * 1000000) / 1000)
  if full_ms > 0 then
    redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
               'stamp', string.format('%.17g', stamp))
    redis.call('PEXPIRE', KEYS[1], string.format('%d', full_ms))
  else
    redis.call('DEL', KEYS[1])
  end
end
return {allowed, string.format('%.17g', tokens), string.format('%.17g', stamp),
        string.format('%.17g', now)}
"""


class RedisRateLimiter:
    """Redis-backed limiter shared by every node: one atomic script per hit.

    The script is sent with EVALSHA; on NOSCRIPT (a restarted or failed-over server)
    redis-py's registered script loads it and retries. Keys are ``prefix`` +
    :func:`bucket_key`. Any Redis failure raises
    :class:`~herald.errors.ServiceUnavailable`: an unreachable limiter refuses, it never
    waves requests through.
    """

    shared = True

    def __init__(self, client: Any, *, prefix: str = "herald:rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = PipelinedScript(client, _LUA)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "herald:rl:") -> RedisRateLimiter:
        """Connect lazily to ``url`` (``redis://…``) with short timeouts."""
        return cls(connect(url), prefix=prefix)

    async def hit(self, key: str, bucket: Bucket, cost: int = 1) -> Decision:
        """Run the bucket script for ``key``; 503 when Redis fails."""
        from redis.exceptions import RedisError  # noqa: PLC0415

        _check_cost(cost)
        name = self._prefix + bucket_key(bucket.name, key)
        args = [repr(float(bucket.rate)), str(bucket.burst), str(cost), repr(EPSILON)]
        try:
            reply = await self._script([name], args)
        except (RedisError, OSError):
            raise ServiceUnavailable(
                "rate limiting is unavailable (Redis failed); request refused"
            ) from None
        try:
            allowed = int(reply[0])
            tokens, stamp, now = (float(part) for part in reply[1:4])
        except (TypeError, ValueError, IndexError):
            raise ServiceUnavailable(
                "rate limiting is unavailable (unexpected reply); request refused"
            ) from None
        # Times come back in microseconds of the Redis clock.
        outcome = _outcome(
            bucket, allowed == 1, tokens, stamp=stamp / 1e6, now=now / 1e6, cost=cost
        )
        return Decision.of(bucket, outcome)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
