"""The node's credential cache (herald.state.live.LiveCheck): pure logic over a stand-in."""

from __future__ import annotations

import asyncio

import pytest

from herald.errors import StorageError
from herald.state.live import CACHE_TTL, LiveCheck


class Store:
    """Answers ``is_revoked``/``get_app_key`` slowly, counting reads; can fail once."""

    def __init__(self) -> None:
        self.reads = 0
        self.fail_next = False
        self.revoked: set[str] = set()

    async def is_revoked(self, jti: str) -> bool:
        self.reads += 1
        await asyncio.sleep(0.01)  # a read takes a while: other requests miss meanwhile
        if self.fail_next:
            self.fail_next = False
            raise StorageError("the database is unavailable")
        return jti in self.revoked

    async def get_app_key(self, _keyid: str) -> None:
        self.reads += 1
        await asyncio.sleep(0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_misses_share_one_read_until_the_entry_expires() -> None:
    store, clock = Store(), Clock()
    live = LiveCheck(store, clock=clock)  # type: ignore[arg-type]
    assert await asyncio.gather(*(live.revoked("j1") for _ in range(50))) == [False] * 50
    assert store.reads == 1
    store.revoked.add("j1")
    assert await live.revoked("j1") is False  # cached for CACHE_TTL
    clock.now += CACHE_TTL
    assert await asyncio.gather(*(live.revoked("j1") for _ in range(20))) == [True] * 20
    assert store.reads == 2


async def test_forget_drops_the_entry_and_caches_are_separate() -> None:
    store, clock = Store(), Clock()
    live = LiveCheck(store, clock=clock)  # type: ignore[arg-type]
    await live.revoked("same")
    await live.app_key("same")  # another cache: its own read
    assert store.reads == 2
    store.revoked.add("same")
    live.forget(jti="same")
    assert await live.revoked("same") is True
    assert store.reads == 3


async def test_a_failed_read_fails_its_waiters_and_is_not_cached() -> None:
    store = Store()
    live = LiveCheck(store, clock=Clock())  # type: ignore[arg-type]
    store.fail_next = True
    results = await asyncio.gather(*(live.revoked("j") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, StorageError) for r in results)
    assert store.reads == 1
    assert await live.revoked("j") is False  # the next request reads again
    assert store.reads == 2


@pytest.mark.parametrize("cancelled", [0, 1])
async def test_a_cancelled_caller_does_not_cancel_the_shared_read(cancelled: int) -> None:
    store = Store()
    live = LiveCheck(store, clock=Clock())  # type: ignore[arg-type]
    callers = [asyncio.create_task(live.revoked("j")) for _ in range(2)]
    await asyncio.sleep(0)
    callers[cancelled].cancel()
    assert await callers[1 - cancelled] is False
    with pytest.raises(asyncio.CancelledError):
        await callers[cancelled]
    assert store.reads == 1
