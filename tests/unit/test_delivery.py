from __future__ import annotations

import itertools
import math

import pytest

from herald.core import delivery
from herald.core.delivery import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATES,
    DeliveryState,
    backoff_delay,
    is_terminal,
    transition,
)
from herald.errors import HeraldError, InvalidTransition

S = DeliveryState

# The design's table, written out independently of the module's.
ALLOWED = {
    (S.PENDING, S.SENDING),
    (S.PENDING, S.DELIVERED),
    (S.PENDING, S.EXPIRED),
    (S.SENDING, S.DELIVERED),
    (S.SENDING, S.FAILED),
    (S.SENDING, S.RETRYING),
    (S.SENDING, S.DEAD),
    (S.SENDING, S.EXPIRED),
    (S.DEAD, S.RETRYING),
    (S.RETRYING, S.SENDING),
    (S.RETRYING, S.DELIVERED),
    (S.RETRYING, S.EXPIRED),
    (S.RETRYING, S.DEAD),
    (S.FAILED, S.RETRYING),
    (S.FAILED, S.DEAD),
    (S.WAITING, S.PENDING),
    (S.WAITING, S.SKIPPED),
    (S.WAITING, S.EXPIRED),
}
ALL_PAIRS = list(itertools.product(DeliveryState, repeat=2))


def test_exports() -> None:
    assert set(delivery.__all__) == {
        "ALLOWED_TRANSITIONS",
        "TERMINAL_STATES",
        "DeliveryState",
        "backoff_delay",
        "is_terminal",
        "transition",
    }
    for name in delivery.__all__:
        assert hasattr(delivery, name)


def test_state_values() -> None:
    assert [s.value for s in DeliveryState] == [
        "pending",
        "sending",
        "delivered",
        "failed",
        "retrying",
        "dead",
        "expired",
        "waiting",
        "skipped",
        "suppressed",
    ]
    assert DeliveryState("pending") is S.PENDING
    assert f"{S.DEAD}" == "dead"


def test_table_has_every_state() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(DeliveryState)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        ALLOWED_TRANSITIONS[S.DEAD] = frozenset({S.PENDING})  # type: ignore[index]


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=str)
def test_every_pair(current: DeliveryState, target: DeliveryState) -> None:
    if (current, target) in ALLOWED:
        assert transition(current, target) is target
        assert target in ALLOWED_TRANSITIONS[current]
    else:
        with pytest.raises(InvalidTransition) as info:
            transition(current, target)
        assert isinstance(info.value, HeraldError)
        assert str(current) in str(info.value)
        assert str(target) in str(info.value)
        assert target not in ALLOWED_TRANSITIONS[current]


def test_pair_count() -> None:
    assert len(ALL_PAIRS) == 100
    assert sum(len(v) for v in ALLOWED_TRANSITIONS.values()) == len(ALLOWED)


@pytest.mark.parametrize("state", list(DeliveryState))
def test_terminal(state: DeliveryState) -> None:
    expected = state in {S.DELIVERED, S.EXPIRED, S.SKIPPED, S.SUPPRESSED}
    assert is_terminal(state) is expected
    assert (state in TERMINAL_STATES) is expected
    # Terminal states have no way out; the others always have one.
    assert (not ALLOWED_TRANSITIONS[state]) is expected


@pytest.mark.parametrize("state", list(DeliveryState))
def test_no_self_loops(state: DeliveryState) -> None:
    with pytest.raises(InvalidTransition):
        transition(state, state)


def test_every_state_reachable_and_every_path_can_end() -> None:
    # Deliveries are created pending, waiting (a later fallback step) or suppressed.
    seen = {S.PENDING, S.WAITING, S.SUPPRESSED}
    frontier = list(seen)
    while frontier:
        for nxt in ALLOWED_TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(DeliveryState)
    for state in DeliveryState:
        # From anywhere, some terminal state is reachable.
        reach = {state}
        stack = [state]
        while stack:
            for nxt in ALLOWED_TRANSITIONS[stack.pop()]:
                if nxt not in reach:
                    reach.add(nxt)
                    stack.append(nxt)
        assert reach & TERMINAL_STATES


def test_a_typical_life() -> None:
    state = S.PENDING
    for target in (S.SENDING, S.FAILED, S.RETRYING, S.SENDING, S.RETRYING, S.DEAD):
        state = transition(state, target)
    assert state == S.DEAD
    assert not is_terminal(state)  # an operator may still retry a dead letter
    for target in (S.RETRYING, S.SENDING, S.DELIVERED):
        state = transition(state, target)
    assert is_terminal(state)


# --- backoff_delay ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "rand", "expected"),
    [
        (0, 1.0, 60.0, 0.5, 0.5),
        (1, 1.0, 60.0, 0.5, 1.0),
        (2, 1.0, 60.0, 0.5, 2.0),
        (5, 1.0, 60.0, 0.5, 16.0),
        (6, 1.0, 60.0, 0.5, 30.0),  # 64 capped at 60
        (100, 1.0, 60.0, 0.5, 30.0),
        (3, 0.25, 60.0, 0.0, 0.0),
        (0, 2.0, 1.0, 0.5, 0.5),  # base above cap
        (10, 0.0, 60.0, 0.9, 0.0),
        (10, 1.0, 0.0, 0.9, 0.0),
    ],
)
def test_backoff_values(
    attempt: int, base: float, cap: float, rand: float, expected: float
) -> None:
    assert backoff_delay(attempt, base=base, cap=cap, rand=rand) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1023, 1024, 1025, 5000, 10**6, 10**30])
def test_backoff_huge_attempts_do_not_overflow(attempt: int) -> None:
    delay = backoff_delay(attempt, base=1.0, cap=300.0, rand=0.5)
    assert delay == 150.0
    big = backoff_delay(attempt, base=1e300, cap=1e308, rand=0.999)
    assert math.isfinite(big)
    assert big == pytest.approx(0.999e308)


def test_backoff_tiny_base_grows_to_cap() -> None:
    assert backoff_delay(2000, base=1e-320, cap=10.0, rand=0.5) == 5.0


def test_backoff_is_monotonic_in_attempt_and_bounded() -> None:
    previous = 0.0
    for attempt in range(200):
        delay = backoff_delay(attempt, base=0.5, cap=3600.0, rand=0.75)
        assert previous <= delay < 3600.0
        previous = delay


def test_backoff_rand_just_below_one() -> None:
    rand = math.nextafter(1.0, 0.0)
    assert backoff_delay(50, base=1.0, cap=10.0, rand=rand) < 10.0


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "rand", "message"),
    [
        (-1, 1.0, 10.0, 0.5, "attempt"),
        (0, -1.0, 10.0, 0.5, "base"),
        (0, math.inf, 10.0, 0.5, "base"),
        (0, math.nan, 10.0, 0.5, "base"),
        (0, 1.0, -1.0, 0.5, "cap"),
        (0, 1.0, math.inf, 0.5, "cap"),
        (0, 1.0, math.nan, 0.5, "cap"),
        (0, 1.0, 10.0, 1.0, "rand"),
        (0, 1.0, 10.0, -0.1, "rand"),
        (0, 1.0, 10.0, math.nan, "rand"),
    ],
)
def test_backoff_refuses_bad_arguments(
    attempt: int, base: float, cap: float, rand: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        backoff_delay(attempt, base=base, cap=cap, rand=rand)
