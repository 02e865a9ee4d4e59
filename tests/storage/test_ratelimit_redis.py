"""The rate-limiter contract over every backend, and what only the Redis limiter must do.

The Redis tests run against ``HERALD_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``)
under a key prefix of their own (``herald-test:<random hex>:``) whose keys are all deleted
after each test. They skip when Redis is unreachable and fail instead when
``HERALD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError
from tests.conftest import service_unavailable

from herald.errors import ServiceUnavailable
from herald.state.ratelimit import (
    Bucket,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    bucket_key,
)

REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: A rate so low that no token comes back while a test runs (one per ~3 hours).
TINY_RATE = 1e-4


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class RedisNamespace:
    client: redis.Redis
    prefix: str


async def _delete_namespace(prefix: str) -> None:
    """SCAN MATCH prefix* + DEL, on a client of its own (the limiter may have closed its own)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
        assert [key async for key in client.scan_iter(match=prefix + "*")] == []
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_namespace() -> AsyncIterator[RedisNamespace]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        service_unavailable(f"Redis not reachable at {_redacted(REDIS_URL)}: {type(exc).__name__}")
    prefix = f"herald-test:{secrets.token_hex(8)}:"
    try:
        yield RedisNamespace(client, prefix)
    finally:
        await client.aclose()
        await _delete_namespace(prefix)


@pytest.fixture
async def redis_ns() -> AsyncIterator[RedisNamespace]:
    """A reachable Redis client and a fresh key prefix, cleaned up after the test."""
    async with redis_namespace() as ns:
        yield ns


# -- the contract suite ---------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    limiter: RateLimiter
    #: Let ``seconds`` pass (the fake clock for memory, a real sleep for Redis's clock).
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance_clock(seconds: float) -> None:
            clock.now += seconds

        memory = MemoryRateLimiter(clock=clock)
        yield Backend("memory", memory, advance_clock)
        await memory.close()
        return

    async with redis_namespace() as ns:
        # Built the way a server would build it, with a pool of its own.
        limiter = RedisRateLimiter.from_url(REDIS_URL, prefix=ns.prefix + "rl:")
        try:
            yield Backend("redis", limiter, asyncio.sleep)
        finally:
            await limiter.close()


async def test_burst_then_refused(backend: Backend) -> None:
    bucket = Bucket(rate=TINY_RATE, burst=3, name="publish")
    decisions = [await backend.limiter.hit("app-1", bucket) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.limit == 3
    assert refused.retry_after == 10_000
    assert refused.reset == 30_000
    assert refused.policy == "publish"
    assert refused.window == 30_000
    assert decisions[0].retry_after == 0


async def test_refill(backend: Backend) -> None:
    bucket = Bucket(rate=10, burst=1)
    assert (await backend.limiter.hit("k", bucket)).allowed
    refused = await backend.limiter.hit("k", bucket)
    assert refused.allowed is False
    assert refused.retry_after == 1
    await backend.advance(0.15)
    assert (await backend.limiter.hit("k", bucket)).allowed


async def test_keys_and_policies_are_independent(backend: Backend) -> None:
    publish = Bucket(rate=TINY_RATE, burst=1, name="publish")
    stream = Bucket(rate=TINY_RATE, burst=1, name="stream")
    assert (await backend.limiter.hit("a", publish)).allowed
    assert (await backend.limiter.hit("b", publish)).allowed
    assert (await backend.limiter.hit("a", stream)).allowed
    assert (await backend.limiter.hit("a", publish)).allowed is False
    assert (await backend.limiter.hit("b", stream)).allowed


async def test_cost(backend: Backend) -> None:
    bucket = Bucket(rate=TINY_RATE, burst=5)
    never = await backend.limiter.hit("k", bucket, 6)
    assert never.allowed is False
    assert never.retry_after is None
    assert never.remaining == 5  # nothing spent
    assert (await backend.limiter.hit("k", bucket, 3)).remaining == 2
    short = await backend.limiter.hit("k", bucket, 3)
    assert short.allowed is False
    assert short.remaining == 2
    peek = await backend.limiter.hit("k", bucket, 0)
    assert peek.allowed
    assert peek.remaining == 2
    assert (await backend.limiter.hit("k", bucket, 2)).allowed


async def test_concurrent_hits_admit_exactly_burst(backend: Backend) -> None:
    bucket = Bucket(rate=TINY_RATE, burst=25)
    async with asyncio.timeout(20):
        decisions = await asyncio.gather(*(backend.limiter.hit("k", bucket) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 25


async def test_shared_is_declared(backend: Backend) -> None:
    assert backend.limiter.shared is (backend.name == "redis")


# -- Redis only -----------------------------------------------------------------------------


@pytest.mark.redis
async def test_two_nodes_share_one_bucket_atomically(redis_ns: RedisNamespace) -> None:
    """Two limiters with pools of their own (two server processes) racing on one key admit
    exactly ``burst`` between them."""
    prefix = redis_ns.prefix + "rl:"
    node_a = RedisRateLimiter.from_url(REDIS_URL, prefix=prefix)
    node_b = RedisRateLimiter.from_url(REDIS_URL, prefix=prefix)
    bucket = Bucket(rate=TINY_RATE, burst=40)
    try:
        async with asyncio.timeout(30):
            for round_ in range(3):
                key = f"app-{round_}"
                hits = [node.hit(key, bucket) for _ in range(150) for node in (node_a, node_b)]
                decisions = await asyncio.gather(*hits)
                assert sum(d.allowed for d in decisions) == 40
                # Both nodes saw refusals: neither had a private bucket.
                assert not any(d.allowed for d in decisions[-20:])
    finally:
        await node_a.close()
        await node_b.close()


@pytest.mark.redis
async def test_state_is_a_hash_that_expires_when_full(redis_ns: RedisNamespace) -> None:
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    bucket = Bucket(rate=20, burst=2)
    name = redis_ns.prefix + "rl:default:k:app-1"
    assert (await limiter.hit("app-1", bucket, 0)).allowed
    assert await redis_ns.client.exists(name) == 0  # a full bucket is no bucket
    assert (await limiter.hit("app-1", bucket, 2)).allowed
    assert await redis_ns.client.type(name) == b"hash"
    assert 0 < await redis_ns.client.pttl(name) <= 100  # 2 tokens at 20/s
    await asyncio.sleep(0.2)
    assert await redis_ns.client.exists(name) == 0
    assert (await limiter.hit("app-1", bucket, 2)).allowed


@pytest.mark.redis
async def test_stamp_comes_from_the_server_clock(redis_ns: RedisNamespace) -> None:
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    name = redis_ns.prefix + "rl:default:k:k"
    bucket = Bucket(rate=TINY_RATE, burst=1)
    await limiter.hit("k", bucket)
    seconds, micros = await redis_ns.client.time()
    stored = await redis_ns.client.hgetall(name)
    assert abs(int(stored[b"stamp"]) - (seconds * 1_000_000 + micros)) < 2_000_000
    # Refused hits and looks write nothing: a flood of them costs no writes.
    pttl = await redis_ns.client.pttl(name)
    await asyncio.sleep(0.01)
    assert (await limiter.hit("k", bucket)).allowed is False
    assert (await limiter.hit("k", bucket, 0)).allowed
    assert await redis_ns.client.hgetall(name) == stored
    assert await redis_ns.client.pttl(name) < pttl


@pytest.mark.redis
async def test_server_clock_stepping_back_never_refills(redis_ns: RedisNamespace) -> None:
    """A stored stamp ahead of the server's clock (a failover to a server whose clock is
    behind) is kept: no refill until the clock passes it, exactly as in the core."""
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    name = redis_ns.prefix + "rl:default:k:k"
    seconds, micros = await redis_ns.client.time()
    ahead = seconds * 1_000_000 + micros + 5_500_000  # 5.5 s in the future
    await redis_ns.client.hset(name, mapping={"tokens": "0.5", "stamp": str(ahead)})
    refused = await limiter.hit("k", Bucket(rate=TINY_RATE, burst=1))
    assert refused.allowed is False
    assert refused.retry_after == 5006  # 5.5 s, then 0.5 token at 1e-4/s
    assert refused.reset == 5006
    await redis_ns.client.hset(name, mapping={"tokens": "1.5", "stamp": str(ahead)})
    allowed = await limiter.hit("k", Bucket(rate=TINY_RATE, burst=2))
    assert allowed.allowed
    assert allowed.remaining == 0
    assert await redis_ns.client.hget(name, "stamp") == str(ahead).encode()
    assert await redis_ns.client.hget(name, "tokens") == b"0.5"
    assert 15_005_000 < await redis_ns.client.pttl(name) <= 15_005_500


@pytest.mark.redis
async def test_tokens_above_a_lowered_burst_are_clamped(redis_ns: RedisNamespace) -> None:
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    big = Bucket(rate=TINY_RATE, burst=100)
    assert (await limiter.hit("k", big)).remaining == 99
    small = Bucket(rate=TINY_RATE, burst=3)
    decisions = [await limiter.hit("k", small) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]


@pytest.mark.redis
async def test_client_chosen_keys_are_bounded(redis_ns: RedisNamespace) -> None:
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    bucket = Bucket(rate=TINY_RATE, burst=1)
    huge = "x" * 100_000 + "\n*"
    assert (await limiter.hit(huge, bucket)).allowed
    assert (await limiter.hit(huge, bucket)).allowed is False
    keys = [key async for key in redis_ns.client.scan_iter(match=redis_ns.prefix + "*")]
    assert keys == [(redis_ns.prefix + "rl:" + bucket_key("default", huge)).encode()]
    assert len(keys[0]) < 120


@pytest.mark.redis
async def test_noscript_falls_back_to_loading_the_script(redis_ns: RedisNamespace) -> None:
    """A server that lost its script cache (restart, failover) answers NOSCRIPT once."""
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    script = limiter._script._script  # the redis-py Script under the pipelining
    real_sha = script.sha
    script.sha = "0" * 40
    assert (await limiter.hit("k", Bucket(rate=TINY_RATE, burst=1))).allowed
    assert script.sha == real_sha


@pytest.mark.redis
async def test_concurrent_hits_share_a_pipeline_and_survive_a_flushed_script_cache(
    redis_ns: RedisNamespace,
) -> None:
    """Hits arriving together go out in one pipeline; each is still its own bucket update,
    and a pipeline re-loads a script the server forgot (SCRIPT FLUSH, restart)."""
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    bucket = Bucket(rate=TINY_RATE, burst=3)
    await limiter.hit("warm", bucket)
    await redis_ns.client.script_flush()
    keys = [f"k{n % 10}" for n in range(50)]
    decisions = await asyncio.gather(*(limiter.hit(k, bucket) for k in keys))
    for key in set(keys):
        admitted = [d.allowed for k, d in zip(keys, decisions, strict=True) if k == key]
        assert admitted.count(True) == 3  # the burst, per key, exactly
    assert limiter._script._runner.runs < len(keys)  # grouped: fewer round trips than hits


@pytest.mark.redis
@pytest.mark.parametrize(
    "corrupt",
    [
        lambda client, name: client.set(name, b"not a hash"),
        lambda client, name: client.hset(name, mapping={"tokens": "many", "stamp": "1"}),
        lambda client, name: client.hset(name, mapping={"tokens": "1"}),
    ],
    ids=["wrong-type", "garbage", "half-written"],
)
async def test_corrupt_state_fails_closed(
    redis_ns: RedisNamespace, corrupt: Callable[[redis.Redis, str], Awaitable[Any]]
) -> None:
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    await corrupt(redis_ns.client, redis_ns.prefix + "rl:default:k:k")
    with pytest.raises(ServiceUnavailable):
        await limiter.hit("k", Bucket(rate=1, burst=1))


@pytest.mark.redis
async def test_a_corrupt_key_in_a_shared_pipeline_fails_only_its_own_hit(
    redis_ns: RedisNamespace,
) -> None:
    limiter = RedisRateLimiter(redis_ns.client, prefix=redis_ns.prefix + "rl:")
    await redis_ns.client.set(redis_ns.prefix + "rl:default:k:bad", b"not a hash")
    bucket = Bucket(rate=TINY_RATE, burst=5)
    keys = ["good-1", "bad", "good-2"] * 5
    results = await asyncio.gather(*(limiter.hit(k, bucket) for k in keys), return_exceptions=True)
    for key, result in zip(keys, results, strict=True):
        if key == "bad":
            assert isinstance(result, ServiceUnavailable)
        else:
            assert not isinstance(result, BaseException)
            assert result.allowed


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_redis_unreachable_fails_closed() -> None:
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{_closed_port()}/0", prefix="herald-test:unreachable:"
    )
    try:
        async with asyncio.timeout(20):
            for _ in range(3):
                with pytest.raises(ServiceUnavailable) as caught:
                    await limiter.hit("k", Bucket(rate=1, burst=1))
                assert caught.value.status == 503
    finally:
        await limiter.close()


class OddReplies:
    """A client whose script answers ``reply``: the limiter must not trust its shape."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def register_script(self, _script: str) -> Callable[..., Awaitable[Any]]:
        async def run(keys: list[str], args: list[str]) -> Any:
            return self.reply

        return run


@pytest.mark.parametrize("reply", [None, [], [1], [1, b"x", b"1", b"1"], [b"?", b"1", b"1", b"1"]])
async def test_unexpected_replies_fail_closed(reply: Any) -> None:
    limiter = RedisRateLimiter(OddReplies(reply))
    with pytest.raises(ServiceUnavailable):
        await limiter.hit("k", Bucket(rate=1, burst=1))
