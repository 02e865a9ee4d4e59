"""The delivery state machine, and the retry backoff schedule.

One delivery is one message on its way to one recipient through one channel. The main
path is ``pending → sending → delivered | failed → retrying → … → dead | expired``; the
full table (:data:`ALLOWED_TRANSITIONS`) is::

    waiting   → pending (its fallback step starts) | skipped | expired
    pending   → sending | delivered (in-app ack) | expired
    sending   → delivered | failed | retrying | dead | expired
    failed    → retrying | dead
    retrying  → sending | delivered (in-app ack) | expired | dead
    dead      → retrying (an operator retries a dead letter)
    delivered, expired, skipped, suppressed: terminal

The dispatcher goes ``sending → dead`` directly for a permanent failure or an exhausted
attempt/age budget and ``sending → expired`` past the TTL (the instantaneous ``failed``
step between them is not stored).

``waiting`` is a later step of a fallback plan: it starts (``pending``) when the steps
before it failed or its wait ran out, and is ``skipped`` once something else was
delivered. ``suppressed`` is a delivery that noise control (content de-duplication, a
frequency cap) decided not to make; it is recorded with the reason and never attempted.

``delivered`` on the in-app channel means *acknowledged* by the recipient, which may
happen straight from ``pending`` or ``retrying`` (the client acknowledged a message it
fetched from history). ``delivered`` and ``expired`` are terminal; ``dead`` is final
unless an operator retries it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from herald.errors import InvalidTransition

__all__ = [
    "ALLOWED_TRANSITIONS",
    "TERMINAL_STATES",
    "DeliveryState",
    "backoff_delay",
    "is_terminal",
    "transition",
]


class DeliveryState(StrEnum):
    """Where one delivery stands. The values are stored and shown in the API."""

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    RETRYING = "retrying"
    DEAD = "dead"
    EXPIRED = "expired"
    WAITING = "waiting"
    SKIPPED = "skipped"
    SUPPRESSED = "suppressed"


_S = DeliveryState

#: For each state, the states it may move to. Terminal states map to the empty set.
ALLOWED_TRANSITIONS: Mapping[DeliveryState, frozenset[DeliveryState]] = MappingProxyType(
    {
        _S.WAITING: frozenset({_S.PENDING, _S.SKIPPED, _S.EXPIRED}),
        _S.PENDING: frozenset({_S.SENDING, _S.DELIVERED, _S.EXPIRED}),
        _S.SENDING: frozenset({_S.DELIVERED, _S.FAILED, _S.RETRYING, _S.DEAD, _S.EXPIRED}),
        _S.RETRYING: frozenset({_S.SENDING, _S.DELIVERED, _S.EXPIRED, _S.DEAD}),
        _S.FAILED: frozenset({_S.RETRYING, _S.DEAD}),
        _S.DELIVERED: frozenset(),
        _S.DEAD: frozenset({_S.RETRYING}),
        _S.EXPIRED: frozenset(),
        _S.SKIPPED: frozenset(),
        _S.SUPPRESSED: frozenset(),
    }
)

#: States a delivery never leaves.
TERMINAL_STATES: frozenset[DeliveryState] = frozenset(
    state for state, targets in ALLOWED_TRANSITIONS.items() if not targets
)


def transition(current: DeliveryState, target: DeliveryState) -> DeliveryState:
    """Check a state change against the state machine.

    Args:
        current: The state the delivery is in.
        target: The state it should move to.

    Returns:
        ``target``.

    Raises:
        InvalidTransition: If the machine does not allow ``current`` → ``target``
            (including staying in the same state, and leaving a terminal state).
    """
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(f"delivery cannot go from {current} to {target}")
    return target


def is_terminal(state: DeliveryState) -> bool:
    """Tell whether ``state`` is final: delivered, expired, skipped or suppressed."""
    return state in TERMINAL_STATES


def backoff_delay(attempt: int, *, base: float, cap: float, rand: float) -> float:
    """Return the delay before a retry: exponential backoff with full jitter.

    The delay is ``rand * min(cap, base * 2**attempt)``: a uniform draw between zero and
    an exponentially growing ceiling, which spreads retries of many failing deliveries
    instead of having them hit the channel in waves.

    Args:
        attempt: How many attempts failed before this one (0 for the first retry).
        base: The ceiling for ``attempt == 0``, in seconds.
        cap: The largest ceiling, in seconds.
        rand: A uniform random number in ``[0, 1)``, injected by the caller.

    Returns:
        The delay in seconds, in ``[0, cap)``.

    Raises:
        ValueError: If ``attempt`` is negative, ``base`` or ``cap`` is negative or not
            finite, or ``rand`` is outside ``[0, 1)``.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    if not (math.isfinite(base) and base >= 0):
        raise ValueError(f"base must be a finite number >= 0, not {base}")
    if not (math.isfinite(cap) and cap >= 0):
        raise ValueError(f"cap must be a finite number >= 0, not {cap}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), not {rand}")
    try:
        # ldexp(base, n) is base * 2**n without building a huge integer first.
        ceiling = min(cap, math.ldexp(base, attempt))
    except OverflowError:
        # Past float range the exponential has long passed the cap.
        ceiling = cap
    return rand * ceiling
