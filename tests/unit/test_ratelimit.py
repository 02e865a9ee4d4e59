"""The token-bucket core, the embedded limiter and the RateLimit headers (herald.state.ratelimit).

Properties (hypothesis) pin the guarantees: over any window of T seconds at most
``burst + rate·T`` tokens are admitted; a clock that steps back never admits more than the
same hits on a monotonic clock would; evicting buckets from the bounded table is invisible
(it never admits more than an unbounded table). The headers are parsed with ``http_sf``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import http_sf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.errors import ServiceUnavailable
from herald.state import ratelimit
from herald.state.ratelimit import (
    KEY_PLAIN_MAX,
    Bucket,
    BucketState,
    Decision,
    MemoryRateLimiter,
    Outcome,
    bucket_key,
    headers,
    take,
)

T = TypeVar("T")
#: Float slack for the window property: EPSILON per hit plus rounding in the test's sums.
TOLERANCE = 1e-6


def resolve(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without suspending (the memory limiter never awaits,
    which is what makes it atomic within the event loop)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run(bucket: Bucket, times: list[float], costs: list[int] | None = None) -> list[Outcome]:
    """Feed hits at ``times`` to one bucket through the pure core."""
    state: BucketState | None = None
    outcomes = []
    for index, now in enumerate(times):
        outcome = take(bucket, state, now, costs[index] if costs else 1)
        state = outcome.state
        outcomes.append(outcome)
    return outcomes


# -- the public surface -----------------------------------------------------------------------


def test_exports() -> None:
    assert set(ratelimit.__all__) == {
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
    }
    for name in ratelimit.__all__:
        assert getattr(ratelimit, name) is not None
    assert ratelimit.RATELIMIT_DRAFT == "draft-ietf-httpapi-ratelimit-headers-11"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rate": 0, "burst": 1}, ValueError),
        ({"rate": -1.0, "burst": 1}, ValueError),
        ({"rate": math.nan, "burst": 1}, ValueError),
        ({"rate": math.inf, "burst": 1}, ValueError),
        ({"rate": 2e6, "burst": 1}, ValueError),
        ({"rate": True, "burst": 1}, TypeError),
        ({"rate": "1", "burst": 1}, TypeError),
        ({"rate": 1.0, "burst": 0}, ValueError),
        ({"rate": 1.0, "burst": 10**9 + 1}, ValueError),
        ({"rate": 1.0, "burst": 1.5}, TypeError),
        ({"rate": 1.0, "burst": True}, TypeError),
        ({"rate": 1e-9, "burst": 1}, ValueError),  # refills over 31 years
        ({"rate": 1.0, "burst": 1, "name": ""}, ValueError),
        ({"rate": 1.0, "burst": 1, "name": "Publish"}, ValueError),
        ({"rate": 1.0, "burst": 1, "name": 'a"b'}, ValueError),
        ({"rate": 1.0, "burst": 1, "name": "a:b"}, ValueError),
        ({"rate": 1.0, "burst": 1, "name": "x" * 33}, ValueError),
    ],
)
def test_bucket_validation(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Bucket(**kwargs)


def test_bucket_window() -> None:
    assert Bucket(rate=10, burst=20).window == 2
    assert Bucket(rate=3, burst=10).window == 4  # 3.33 s, rounded up: never overstate
    assert Bucket(rate=100, burst=10).window == 1  # at least one second (draft §3.1.3)
    assert Bucket(rate=1 / 60, burst=5).window == 300


@pytest.mark.parametrize("cost", [-1, 10**9 + 1, 1.0, True, None])
def test_cost_validation(cost: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        take(Bucket(rate=1, burst=1), None, 0.0, cost)


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_now_must_be_finite(now: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        take(Bucket(rate=1, burst=1), None, now)


# -- the core ---------------------------------------------------------------------------------


def test_new_bucket_is_full_then_refuses() -> None:
    bucket = Bucket(rate=2, burst=3)
    outcomes = run(bucket, [0.0] * 4)
    assert [o.allowed for o in outcomes] == [True, True, True, False]
    assert [o.remaining for o in outcomes] == [2, 1, 0, 0]
    refused = outcomes[-1]
    assert refused.retry_after == pytest.approx(0.5)
    assert refused.reset == pytest.approx(1.5)
    assert refused.state == outcomes[-2].state  # a refused hit spends nothing


def test_refill_is_proportional_and_capped() -> None:
    bucket = Bucket(rate=2, burst=3)
    state = take(bucket, None, 0.0, 3).state
    assert state.tokens == 0
    assert take(bucket, state, 0.25, 1).allowed is False
    half = take(bucket, state, 0.5, 1)
    assert half.allowed
    assert half.state.tokens == 0
    much_later = take(bucket, state, 3600.0, 0)
    assert much_later.state.tokens == 3  # capped at burst
    assert much_later.reset == 0
    assert much_later.remaining == 3


def test_cost_above_burst_never_passes() -> None:
    bucket = Bucket(rate=1, burst=5)
    outcome = take(bucket, None, 0.0, 6)
    assert outcome.allowed is False
    assert outcome.retry_after == math.inf
    assert outcome.state.tokens == 5  # nothing spent
    decision = Decision.of(bucket, outcome)
    assert decision.retry_after is None
    assert decision.remaining == 5
    # Not even after a very long wait.
    assert take(bucket, outcome.state, 1e9, 6).allowed is False
    # A cost of exactly burst passes on a full bucket.
    assert take(bucket, None, 0.0, 5).allowed


def test_cost_zero_only_looks() -> None:
    bucket = Bucket(rate=1, burst=2)
    empty = take(bucket, None, 0.0, 2).state
    peek = take(bucket, empty, 0.0, 0)
    assert peek.allowed
    assert peek.remaining == 0
    assert peek.state == empty


def test_clock_stepping_back_never_refills() -> None:
    bucket = Bucket(rate=1, burst=2)
    state = take(bucket, None, 100.0, 2).state
    back = take(bucket, state, 50.0, 1)
    assert back.allowed is False
    assert back.state == BucketState(0.0, 100.0)  # the newest stamp is kept
    # The wait counts from the newest stamp: 50 s until the clock is back, then 1 s.
    assert back.retry_after == pytest.approx(51.0)
    assert back.reset == pytest.approx(52.0)
    # Coming back to 101 credits one second, not fifty-one.
    forward = take(bucket, back.state, 101.0, 1)
    assert forward.allowed
    assert forward.remaining == 0
    assert take(bucket, forward.state, 101.0, 1).allowed is False


def test_shrunk_policy_clamps_stored_tokens() -> None:
    big = take(Bucket(rate=1, burst=100), None, 0.0, 1).state  # 99 tokens stored
    small = Bucket(rate=1, burst=3)
    outcomes = [take(small, big, 0.0, 1)]
    outcomes.append(take(small, outcomes[-1].state, 0.0, 1))
    outcomes.append(take(small, outcomes[-1].state, 0.0, 1))
    outcomes.append(take(small, outcomes[-1].state, 0.0, 1))
    assert [o.allowed for o in outcomes] == [True, True, True, False]


def test_float_rounding_does_not_refuse_a_client_that_waited_as_told() -> None:
    # 0.1 tokens/s: ten seconds is one token, though 0.1 is not exact in binary.
    bucket = Bucket(rate=0.1, burst=1)
    state = take(bucket, None, 0.0).state
    now = 0.0
    for _ in range(50):
        refused = take(bucket, state, now)
        assert refused.allowed is False
        now += Decision.of(bucket, refused).retry_after or 0
        allowed = take(bucket, state, now)
        assert allowed.allowed, now
        state = allowed.state
    # Thirds: 3 tokens/s at steps of 1/3 s.
    bucket = Bucket(rate=3, burst=1)
    state = take(bucket, None, 0.0).state
    for step in range(1, 301):
        outcome = take(bucket, state, step / 3)
        assert outcome.allowed, step
        state = outcome.state


def test_refill_depends_only_on_the_difference_of_readings() -> None:
    # Subtracting two nearby readings is exact, so large clock values (a monotonic clock
    # after years of uptime, Unix time) lose nothing beyond the clock's own resolution.
    bucket = Bucket(rate=4, burst=1)
    for base in (0.0, 1e6, 1.8e9):
        state = take(bucket, None, base).state
        for step in range(1, 101):
            assert take(bucket, state, base + step / 4 - 1e-6).allowed is False
            outcome = take(bucket, state, base + step / 4)
            assert outcome.allowed, (base, step)
            state = outcome.state


def test_remaining_is_floored_and_retry_after_rounded_up() -> None:
    bucket = Bucket(rate=0.4, burst=3)
    outcome = take(bucket, None, 0.0, 3)
    outcome = take(bucket, outcome.state, 3.0, 0)  # 1.2 tokens
    assert outcome.remaining == 1
    refused = take(bucket, outcome.state, 3.0, 2)
    assert refused.retry_after == pytest.approx(2.0)  # 0.8 tokens at 0.4/s
    decision = Decision.of(bucket, refused)
    assert decision.retry_after == 2
    assert decision.reset == 5  # 1.8 tokens → 4.5 s, rounded up
    tiny = take(Bucket(rate=1000, burst=1), BucketState(0.0, 0.0), 0.0)
    assert Decision.of(Bucket(rate=1000, burst=1), tiny).retry_after == 1  # at least 1


def test_decision_fields() -> None:
    bucket = Bucket(rate=5, burst=10, name="publish")
    decision = Decision.of(bucket, take(bucket, None, 0.0, 4))
    assert decision == Decision(
        allowed=True, limit=10, remaining=6, retry_after=0, reset=1, policy="publish", window=2
    )


# -- properties -------------------------------------------------------------------------------

buckets = st.builds(
    Bucket,
    rate=st.floats(min_value=0.01, max_value=100, allow_nan=False, allow_infinity=False),
    burst=st.integers(min_value=1, max_value=20),
)
#: Gaps between hits: many zero gaps (bursts), and fractions of a token's refill time.
gaps = st.one_of(
    st.just(0.0), st.floats(min_value=0, max_value=5, allow_nan=False, allow_infinity=False)
)
hits = st.lists(st.tuples(gaps, st.integers(min_value=0, max_value=4)), max_size=80)


def admitted_within_bound(bucket: Bucket, admitted: list[tuple[float, int]]) -> None:
    """Every window [t_i, t_j] between two admitted hits holds ≤ burst + rate·(t_j − t_i)."""
    for i, (start, _) in enumerate(admitted):
        spent = 0
        for end, cost in admitted[i:]:
            spent += cost
            assert spent <= bucket.burst + bucket.rate * (end - start) + TOLERANCE, (
                start,
                end,
                spent,
            )


@given(bucket=buckets, sequence=hits, start=st.floats(min_value=0, max_value=1e9))
def test_window_never_admits_more_than_burst_plus_rate_times_length(
    bucket: Bucket, sequence: list[tuple[float, int]], start: float
) -> None:
    state: BucketState | None = None
    now = start
    admitted = []
    for gap, cost in sequence:
        now += gap
        outcome = take(bucket, state, now, cost)
        state = outcome.state
        if outcome.allowed:
            admitted.append((now, cost))
        assert 0 <= outcome.state.tokens <= bucket.burst
        assert 0 <= outcome.remaining <= bucket.burst
        assert outcome.reset >= 0
        assert (outcome.retry_after == 0) is outcome.allowed
    admitted_within_bound(bucket, admitted)


@given(
    bucket=buckets,
    times=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=60),
    costs=st.lists(st.integers(min_value=0, max_value=3), min_size=60, max_size=60),
)
def test_clock_stepping_back_never_admits_more(
    bucket: Bucket, times: list[float], costs: list[int]
) -> None:
    """Any clock readings give exactly the decisions of their running maximum, which is a
    monotonic clock (so the window property holds for it too)."""
    monotonic = list(itertools_accumulate_max(times))
    raw = run(bucket, times, costs[: len(times)])
    envelope = run(bucket, monotonic, costs[: len(times)])
    assert [o.allowed for o in raw] == [o.allowed for o in envelope]
    assert [o.state for o in raw] == [o.state for o in envelope]
    admitted_within_bound(
        bucket,
        [(now, cost) for now, cost, o in zip(monotonic, costs, raw, strict=False) if o.allowed],
    )


def itertools_accumulate_max(values: list[float]) -> list[float]:
    result: list[float] = []
    for value in values:
        result.append(max(value, result[-1]) if result else value)
    return result


# -- the embedded limiter ---------------------------------------------------------------------


def test_memory_hit_never_suspends_and_counts() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    bucket = Bucket(rate=1, burst=2)
    decisions = [resolve(limiter.hit("app-1", bucket)) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].retry_after == 1
    assert resolve(limiter.hit("app-2", bucket)).allowed  # keys are independent
    other_policy = Bucket(rate=1, burst=2, name="stream")
    assert resolve(limiter.hit("app-1", other_policy)).allowed  # so are policies
    clock.now += 1
    assert resolve(limiter.hit("app-1", bucket)).allowed
    assert limiter.shared is False


def test_memory_full_buckets_are_dropped() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    bucket = Bucket(rate=10, burst=5)
    assert resolve(limiter.hit("a", bucket, 0)).allowed  # a look at a new key stores nothing
    assert len(limiter) == 0
    resolve(limiter.hit("a", bucket, 2))
    resolve(limiter.hit("b", bucket, 5))
    assert len(limiter) == 2
    clock.now += 0.2  # "a" is full again, "b" is not
    resolve(limiter.hit("c", bucket, 0))
    assert len(limiter) == 1
    clock.now += 0.3
    resolve(limiter.hit("c", bucket, 0))
    assert len(limiter) == 0


def test_memory_table_full_of_refilling_buckets_refuses_new_keys() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, max_keys=2)
    bucket = Bucket(rate=1, burst=3)
    resolve(limiter.hit("a", bucket, 3))
    clock.now += 1
    resolve(limiter.hit("b", bucket, 3))
    with pytest.raises(ServiceUnavailable) as caught:
        resolve(limiter.hit("c", bucket))
    assert caught.value.headers == {"Retry-After": "2"}  # "a" is full in 2 s
    # Known keys are still served, and refused as before: nothing was forgotten.
    refused = resolve(limiter.hit("b", bucket))
    assert refused.allowed is False
    assert refused.retry_after == 1
    # A look at a new key needs no room.
    assert resolve(limiter.hit("c", bucket, 0)).remaining == 3
    clock.now += 2  # "a" is full again: only its slot is free
    assert resolve(limiter.hit("c", bucket)).allowed
    assert len(limiter) == 2
    with pytest.raises(ServiceUnavailable):
        resolve(limiter.hit("a", bucket))
    clock.now += 1  # "b" is full
    assert resolve(limiter.hit("a", bucket)).allowed


def test_memory_clock_is_made_monotonic() -> None:
    clock = FakeClock(100.0)
    limiter = MemoryRateLimiter(clock=clock, max_keys=1)
    bucket = Bucket(rate=1, burst=1)
    resolve(limiter.hit("a", bucket))
    clock.now = 102.0
    resolve(limiter.hit("b", bucket, 0))  # drops "a" (full since 101)
    resolve(limiter.hit("b", bucket))
    clock.now = 50.0  # the clock steps back: "b" must not be treated as refilled or dropped
    assert resolve(limiter.hit("b", bucket)).allowed is False
    with pytest.raises(ServiceUnavailable):
        resolve(limiter.hit("a", bucket))
    clock.now = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        resolve(limiter.hit("a", bucket))


def test_memory_default_clock_and_close() -> None:
    limiter = MemoryRateLimiter()
    assert limiter._clock is time.monotonic
    bucket = Bucket(rate=1, burst=1)
    assert resolve(limiter.hit("a", bucket)).allowed
    assert resolve(limiter.hit("a", bucket)).allowed is False
    resolve(limiter.close())
    assert len(limiter) == 0
    assert resolve(limiter.hit("a", bucket)).allowed
    with pytest.raises(ValueError, match="max_keys"):
        MemoryRateLimiter(max_keys=0)


def test_memory_heap_stays_bounded_under_one_hot_key() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    bucket = Bucket(rate=1e6, burst=10**9)
    for _ in range(10_000):
        resolve(limiter.hit("hot", bucket))
    assert len(limiter) == 1
    assert len(limiter._heap) <= 2 * len(limiter) + 65


async def test_memory_concurrent_hits_admit_exactly_burst() -> None:
    import asyncio

    limiter = MemoryRateLimiter(clock=FakeClock())
    bucket = Bucket(rate=0.001, burst=25)
    decisions = await asyncio.gather(*(limiter.hit("k", bucket) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 25


@settings(max_examples=200)
@given(
    max_keys=st.integers(min_value=1, max_value=3),
    bucket=buckets,
    sequence=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.one_of(st.just(0.0), st.floats(min_value=0, max_value=3)),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=60,
    ),
)
def test_memory_eviction_is_invisible(
    max_keys: int, bucket: Bucket, sequence: list[tuple[str, float, int]]
) -> None:
    """A bounded table answers every hit it serves exactly as an unbounded one would (given
    the same served hits); it can only refuse service (503), never admit more."""
    clock = FakeClock()
    bounded = MemoryRateLimiter(clock=clock, max_keys=max_keys)
    reference = MemoryRateLimiter(clock=clock, max_keys=10**6)
    admitted: dict[str, list[tuple[float, int]]] = {}
    for key, gap, cost in sequence:
        clock.now += gap
        try:
            decision = resolve(bounded.hit(key, bucket, cost))
        except ServiceUnavailable:
            continue
        assert decision == resolve(reference.hit(key, bucket, cost))
        assert len(bounded) <= max_keys
        if decision.allowed:
            admitted.setdefault(key, []).append((clock.now, cost))
    for per_key in admitted.values():
        admitted_within_bound(bucket, per_key)


# -- keys -------------------------------------------------------------------------------------


def test_bucket_key_plain_and_hashed() -> None:
    assert bucket_key("publish", "app_123") == "publish:k:app_123"
    assert bucket_key("publish", "tenant-1:sub@example.org") == "publish:k:tenant-1:sub@example.org"
    long_key = "x" * (KEY_PLAIN_MAX + 1)
    hashed = bucket_key("publish", long_key)
    assert hashed.startswith("publish:h:")
    assert len(hashed) == len("publish:h:") + 64
    assert bucket_key("publish", "x" * KEY_PLAIN_MAX) == "publish:k:" + "x" * KEY_PLAIN_MAX
    for odd in ("", "a b", "ä", "a\nb", "\ud800", "*", "a\x00"):
        assert bucket_key("p", odd).startswith("p:h:")
    # A plain key that looks like a hashed one stays distinct from it.
    assert bucket_key("p", "h:" + hashed[-64:]) != hashed
    assert bucket_key("p", "k") != bucket_key("q", "k")


def test_memory_client_chosen_keys_are_bounded() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock())
    bucket = Bucket(rate=1, burst=1)
    resolve(limiter.hit("y" * 1_000_000, bucket))
    assert all(len(name) < 100 for name in limiter._entries)


# -- headers ----------------------------------------------------------------------------------


def parse_list(value: str) -> Any:
    return http_sf.parse(value.encode(), tltype="list")


def test_headers_when_allowed() -> None:
    bucket = Bucket(rate=10, burst=20, name="publish")
    decision = Decision.of(bucket, take(bucket, None, 0.0, 5))
    fields = headers(decision)
    assert fields == {
        "RateLimit-Policy": '"publish";q=20;w=2',
        "RateLimit": '"publish";r=15;t=1',
    }
    assert parse_list(fields["RateLimit-Policy"]) == [("publish", {"q": 20, "w": 2})]
    assert parse_list(fields["RateLimit"]) == [("publish", {"r": 15, "t": 1})]


def test_headers_when_refused() -> None:
    bucket = Bucket(rate=0.5, burst=2)
    state = take(bucket, None, 0.0, 2).state
    decision = Decision.of(bucket, take(bucket, state, 0.5, 1))
    fields = headers(decision)
    assert fields["Retry-After"] == "2"  # 0.75 tokens short at 0.5/s = 1.5 s
    # §6: Retry-After must not end before the effective window.
    assert parse_list(fields["RateLimit"]) == [("default", {"r": 0, "t": 2})]
    assert parse_list(fields["RateLimit-Policy"]) == [("default", {"q": 2, "w": 4})]


def test_headers_when_never_passable() -> None:
    bucket = Bucket(rate=1, burst=5)
    decision = Decision.of(bucket, take(bucket, None, 0.0, 6))
    fields = headers(decision)
    assert "Retry-After" not in fields
    assert parse_list(fields["RateLimit"]) == [("default", {"r": 5, "t": 0})]


def test_headers_for_several_policies() -> None:
    app = Bucket(rate=10, burst=100, name="app")
    subscriber = Bucket(rate=1, burst=5, name="subscriber")
    first = Decision.of(app, take(app, None, 0.0, 1))
    state = take(subscriber, None, 0.0, 5).state
    second = Decision.of(subscriber, take(subscriber, state, 0.0, 3))
    third = Decision.of(subscriber, take(subscriber, state, 0.0, 1))
    fields = headers(first, second, third)
    assert parse_list(fields["RateLimit-Policy"]) == [
        ("app", {"q": 100, "w": 10}),
        ("subscriber", {"q": 5, "w": 5}),
        ("subscriber", {"q": 5, "w": 5}),
    ]
    assert parse_list(fields["RateLimit"]) == [
        ("app", {"r": 99, "t": 1}),
        ("subscriber", {"r": 0, "t": 3}),
        ("subscriber", {"r": 0, "t": 1}),
    ]
    assert fields["Retry-After"] == "3"
    with pytest.raises(ValueError, match="at least one"):
        headers()


@given(bucket=buckets, sequence=hits)
def test_headers_always_parse(bucket: Bucket, sequence: list[tuple[float, int]]) -> None:
    state: BucketState | None = None
    now = 0.0
    for gap, cost in sequence:
        now += gap
        outcome = take(bucket, state, now, cost)
        state = outcome.state
        decision = Decision.of(bucket, outcome)
        fields = headers(decision)
        [(name, policy)] = parse_list(fields["RateLimit-Policy"])
        [(_, limit)] = parse_list(fields["RateLimit"])
        assert name == bucket.name
        assert policy == {"q": bucket.burst, "w": bucket.window}
        assert limit["r"] == decision.remaining
        if "Retry-After" in fields:
            assert int(fields["Retry-After"]) >= max(1, limit["t"])
