"""Lockout with exponential back-off (herald.state.lockout): the rule and the memory store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.state.lockout import LockoutPolicy, MemoryLockout, locked_for

POLICY = LockoutPolicy(threshold=3, base=2.0, cap=8.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="threshold"):
        LockoutPolicy(threshold=0)
    with pytest.raises(ValueError, match="base"):
        LockoutPolicy(base=10, cap=5)


@pytest.mark.parametrize(
    ("failures", "expected"), [(0, 0), (2, 0), (3, 2), (4, 4), (5, 8), (6, 8), (60, 8)]
)
def test_lock_doubles_up_to_the_cap(failures: int, expected: float) -> None:
    assert locked_for(POLICY, failures, last=100.0, now=100.0) == expected


def test_the_lock_runs_out() -> None:
    assert locked_for(POLICY, 4, last=100.0, now=103.0) == 1.0
    assert locked_for(POLICY, 4, last=100.0, now=104.0) == 0.0


@given(st.integers(0, 10_000), st.floats(0, 1e6))
def test_lock_is_never_negative_nor_past_the_cap(failures: int, elapsed: float) -> None:
    wait = locked_for(POLICY, failures, last=0.0, now=elapsed)
    assert 0.0 <= wait <= POLICY.cap


async def test_memory_lockout_locks_doubles_and_clears() -> None:
    clock = Clock()
    store = MemoryLockout(POLICY, clock=clock)
    assert await store.failed("client:a") == 0
    assert await store.failed("client:a") == 0
    assert await store.failed("client:a") == 2  # the third failure locks
    assert await store.check("client:a") == 2
    assert await store.check("client:b") == 0  # keys are independent
    clock.now += 2
    assert await store.check("client:a") == 0
    assert await store.failed("client:a") == 4  # one more failure: twice as long
    await store.succeeded("client:a")
    assert await store.check("client:a") == 0
    assert await store.failed("client:a") == 0  # counting starts again


async def test_counts_are_forgotten_long_after_the_last_failure() -> None:
    clock = Clock()
    store = MemoryLockout(POLICY, clock=clock)
    for _ in range(3):
        await store.failed("k")
    clock.now += POLICY.forget_after + 1
    assert await store.failed("k") == 0


async def test_the_table_is_bounded() -> None:
    store = MemoryLockout(POLICY, clock=Clock(), max_keys=10)
    for n in range(50):
        await store.failed(f"k{n}")
    assert len(store._counts) == 10
    await store.close()
