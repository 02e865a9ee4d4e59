"""The nonce-store contract (herald.state.nonces): one suite over every backend.

The Redis backend runs against the server at ``HERALD_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) in a namespace of its own (``herald-test:<random hex>:``), whose
keys are all deleted after each test. It skips when Redis is unreachable, and fails instead
when ``HERALD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NoReturn
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from herald.errors import RequestExpired, ServiceUnavailable
from herald.state.nonces import (
    EPOCH_KEY,
    MemoryNonceStore,
    NonceStore,
    RedisNonceStore,
    nonce_key,
)

REDIS_URL = os.environ.get("HERALD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TTL = 60.0
SHORT_TTL = 0.2
_ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _root_conftest(config: pytest.Config) -> ModuleType:
    # Every conftest.py outside a package is module "conftest", so `import conftest` would
    # get whichever was loaded last; ask pytest for the one it loaded from tests/.
    for plugin in config.pluginmanager.get_plugins():
        file = getattr(plugin, "__file__", None)
        if isinstance(plugin, ModuleType) and file and Path(file).resolve() == _ROOT_CONFTEST:
            return plugin
    raise LookupError(f"{_ROOT_CONFTEST} is not loaded")


def service_unavailable(config: pytest.Config, message: str) -> NoReturn:
    """Skip, or fail under HERALD_REQUIRE_SERVICES=1 (tests/conftest.py decides)."""
    _root_conftest(config).service_unavailable(message)
    raise AssertionError("unreachable")  # pragma: no cover


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


class FakeClock:
    """An injectable clock for the memory store."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class RedisNamespace:
    client: redis.Redis
    prefix: str


async def _delete_namespace(prefix: str) -> None:
    """SCAN MATCH prefix* + DEL, on a client of its own (the store may have closed its own)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
        assert [key async for key in client.scan_iter(match=prefix + "*")] == []
    finally:
        await client.aclose()


@asynccontextmanager
async def redis_namespace(config: pytest.Config) -> AsyncIterator[RedisNamespace]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        service_unavailable(
            config, f"Redis not reachable at {_redacted(REDIS_URL)}: {type(exc).__name__}"
        )
    prefix = f"herald-test:{secrets.token_hex(8)}:"
    try:
        yield RedisNamespace(client, prefix)
    finally:
        await client.aclose()
        await _delete_namespace(prefix)


@pytest.fixture
async def redis_ns(request: pytest.FixtureRequest) -> AsyncIterator[RedisNamespace]:
    """A reachable Redis client and a fresh key prefix, cleaned up after the test."""
    async with redis_namespace(request.config) as ns:
        yield ns


# -- the contract suite ---------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    store: NonceStore
    #: Let ``seconds`` pass for the store (fake clock for memory, a real sleep for Redis).
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance_clock(seconds: float) -> None:
            clock.now += seconds

        store = MemoryNonceStore(clock=clock)
        yield Backend("memory", store, advance_clock)
        await store.close()
        return

    async with redis_namespace(request.config) as ns:
        # Built the way the server builds it (service/runtime.py), with a client of its own.
        redis_store = RedisNonceStore.from_url(REDIS_URL, prefix=ns.prefix)
        try:
            yield Backend("redis", redis_store, asyncio.sleep)
        finally:
            await redis_store.close()


def new_key() -> str:
    return nonce_key("tenant-1", "hk_0123", secrets.token_urlsafe(24))


async def test_first_claim_wins(backend: Backend) -> None:
    key = new_key()
    assert await backend.store.claim(key, TTL) is True
    assert await backend.store.claim(key, TTL) is False
    assert await backend.store.claim(key, TTL) is False


async def test_keys_are_independent(backend: Backend) -> None:
    first, second = new_key(), new_key()
    assert await backend.store.claim(first, TTL) is True
    assert await backend.store.claim(second, TTL) is True
    assert await backend.store.claim(first, TTL) is False
    assert await backend.store.claim(second, TTL) is False
    # Same nonce under another key id or tenant is another key.
    assert nonce_key("t", "k1", "n") != nonce_key("t", "k2", "n") != nonce_key("u", "k1", "n")


async def test_claim_expires_after_ttl(backend: Backend) -> None:
    key = new_key()
    assert await backend.store.claim(key, SHORT_TTL) is True
    assert await backend.store.claim(key, SHORT_TTL) is False
    await backend.advance(SHORT_TTL + 0.1)
    assert await backend.store.claim(key, SHORT_TTL) is True
    assert await backend.store.claim(key, SHORT_TTL) is False


async def test_concurrent_claims_of_one_key_have_one_winner(backend: Backend) -> None:
    """A burst of 200 (more than redis-py's default pool of 100): one True, 199 False, no 503."""
    key = new_key()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(backend.store.claim(key, TTL) for _ in range(200)))
    assert results.count(True) == 1
    assert results.count(False) == 199


async def test_concurrent_claims_of_many_keys_all_win(backend: Backend) -> None:
    keys = [new_key() for _ in range(50)]
    async with asyncio.timeout(10):
        results = await asyncio.gather(*(backend.store.claim(key, TTL) for key in keys))
    assert results == [True] * 50


async def test_volatility_is_declared(backend: Backend) -> None:
    assert backend.store.volatile is (backend.name == "memory")


def test_nonce_key_layout() -> None:
    assert nonce_key("tenant", "hk_1", "abc") == "nonce:tenant:hk_1:abc"


# -- memory only ----------------------------------------------------------------------------


async def test_memory_expiry_boundary() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock=clock)
    assert await store.claim("k", 10) is True
    clock.now += 9.999
    assert await store.claim("k", 10) is False
    clock.now += 0.001  # exactly ttl later: the claim has lapsed
    assert await store.claim("k", 10) is True


async def test_memory_capacity_refuses_rather_than_forgets() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock=clock, capacity=3)
    for key in ("a", "b", "c"):
        assert await store.claim(key, TTL) is True
    with pytest.raises(ServiceUnavailable):
        await store.claim("d", TTL)
    # A replay of a live nonce is still recognised as a replay, not a 503.
    assert await store.claim("a", TTL) is False
    assert len(store) == 3
    # Once the live nonces expire, capacity frees and old entries are evicted.
    clock.now += TTL
    assert await store.claim("d", TTL) is True
    assert len(store) == 1
    assert await store.claim("a", TTL) is True
    assert await store.claim("d", TTL) is False


async def test_memory_capacity_frees_gradually() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock=clock, capacity=2)
    assert await store.claim("a", TTL) is True
    clock.now += 1
    assert await store.claim("b", TTL) is True
    with pytest.raises(ServiceUnavailable):
        await store.claim("c", TTL)
    clock.now += TTL - 1  # "a" has lapsed, "b" is still live
    assert await store.claim("c", TTL) is True
    assert await store.claim("b", TTL) is False
    with pytest.raises(ServiceUnavailable):
        await store.claim("e", TTL)


async def test_memory_close_forgets() -> None:
    store = MemoryNonceStore(clock=FakeClock())
    assert await store.claim("k", TTL) is True
    await store.close()
    assert len(store) == 0
    assert await store.claim("k", TTL) is True


# -- Redis only -----------------------------------------------------------------------------


async def test_redis_unreachable_fails_closed() -> None:
    store = RedisNonceStore.from_url("redis://127.0.0.1:1/0", prefix="herald-test:unreachable:")
    try:
        async with asyncio.timeout(20):
            for _ in range(3):
                with pytest.raises(ServiceUnavailable):
                    await store.claim(new_key(), TTL)
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_claim_is_set_nx_with_a_ttl(redis_ns: RedisNamespace) -> None:
    """The claim writes ``1`` with a PX TTL, only once (the script's SET NX PX)."""
    store = RedisNonceStore(redis_ns.client, prefix=redis_ns.prefix)
    key = new_key()
    assert await store.claim(key, SHORT_TTL) is True
    assert await redis_ns.client.get(redis_ns.prefix + key) == b"1"
    assert 0 < await redis_ns.client.pttl(redis_ns.prefix + key) <= 200
    assert await store.claim(key, SHORT_TTL) is False


# -- the epoch: a Redis reset must not reopen the replay window --------------------------------


async def redis_time(client: redis.Redis) -> int:
    seconds, _micros = await client.time()
    return int(seconds)


@pytest.mark.redis
async def test_redis_epoch_is_written_once_and_kept(redis_ns: RedisNamespace) -> None:
    store = RedisNonceStore(redis_ns.client, prefix=redis_ns.prefix)
    now = await redis_time(redis_ns.client)
    epoch = await store.epoch()
    assert epoch is not None
    assert now < epoch <= now + 2  # the next whole second: rounded up
    assert await redis_ns.client.get(redis_ns.prefix + EPOCH_KEY) == str(epoch).encode()
    assert await redis_ns.client.ttl(redis_ns.prefix + EPOCH_KEY) == -1  # never expires
    assert await store.epoch() == epoch
    # Signed at or after the epoch: claimed as usual.
    assert await store.claim(new_key(), TTL, created=epoch) is True


@pytest.mark.redis
async def test_redis_reset_refuses_what_was_signed_before_it(redis_ns: RedisNamespace) -> None:
    """Redis forgot every claim (restart without persistence, FLUSHALL, eviction): a request
    signed before that is refused, never claimed afresh, whichever node sees it first."""
    store = RedisNonceStore(redis_ns.client, prefix=redis_ns.prefix)
    now = await redis_time(redis_ns.client)
    # A store that has vouched for its claims since a minute ago; signed a second ago.
    await redis_ns.client.set(redis_ns.prefix + EPOCH_KEY, now - 60)
    signed = now - 1
    key = new_key()
    assert await store.claim(key, TTL, created=signed) is True
    # The reset: every key of the store gone, the epoch with them.
    await redis_ns.client.delete(redis_ns.prefix + key, redis_ns.prefix + EPOCH_KEY)
    for _ in range(2):  # the claim that rewrites the epoch, and any after it
        with pytest.raises(RequestExpired):
            await store.claim(key, TTL, created=signed)
    assert await redis_ns.client.exists(redis_ns.prefix + key) == 0  # nothing claimed
    epoch = await store.epoch()
    assert epoch is not None
    assert epoch > signed
    assert await store.claim(new_key(), TTL, created=epoch) is True


@pytest.mark.redis
async def test_redis_claim_without_created_skips_the_epoch(redis_ns: RedisNamespace) -> None:
    store = RedisNonceStore(redis_ns.client, prefix=redis_ns.prefix)
    assert await store.claim(new_key(), TTL) is True


async def test_redis_epoch_is_none_when_unreachable() -> None:
    store = RedisNonceStore.from_url("redis://127.0.0.1:1/0", prefix="herald-test:unreachable:")
    try:
        async with asyncio.timeout(20):
            assert await store.epoch() is None
    finally:
        await store.close()


@pytest.mark.redis
async def test_redis_claim_sets_a_ttl(redis_ns: RedisNamespace) -> None:
    store = RedisNonceStore(redis_ns.client, prefix=redis_ns.prefix)
    key = new_key()
    assert await store.claim(key, TTL) is True
    pttl = await redis_ns.client.pttl(redis_ns.prefix + key)
    assert 0 < pttl <= TTL * 1000


@pytest.mark.redis
async def test_redis_nodes_share_claims(redis_ns: RedisNamespace) -> None:
    """Two nodes (two clients) see each other's claims: that is what cluster mode is for."""
    other = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        node_a = RedisNonceStore(redis_ns.client, prefix=redis_ns.prefix)
        node_b = RedisNonceStore(other, prefix=redis_ns.prefix)
        key = new_key()
        assert await node_a.claim(key, TTL) is True
        assert await node_b.claim(key, TTL) is False
    finally:
        await other.aclose()
